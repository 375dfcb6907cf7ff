"""Secrets nested in model settings and deps: one definition of a secret-looking name, applied at any depth. A
secret shapes the key (as a digest, so two credentials never share an entry) but never reaches stored bytes (Redis,
SQLite, a cassette), a log or an error."""

from __future__ import annotations

import asyncio
import json
import logging
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from _redis_servers import RedisServer
from _security_kit import Echo, answer_to

from pyai_caching import CacheMissError, LocalStore, RedisStore, Store, cached_agent_run
from pyai_caching._util.redact import (
    SECRET_PLACEHOLDER_RE,
    is_secret_name,
    redact,
    redact_url,
    redact_url_in_text,
    secret_digest,
)
from pyai_caching.testing.cassette import CassetteStore

SECRETS = {
    "api_key": "AK-nested-0123456789-api",
    "access_token": "AT-nested-0123456789-access",
    "auth_token": "AU-nested-0123456789-auth",
    "refresh_token": "RT-nested-0123456789-refresh",
    "password": "PW-nested-0123456789-password",
    "client_secret": "CS-nested-0123456789-client",
    "cookie": "CK-nested-0123456789-cookie",
    "authorization": "AZ-nested-0123456789-authz",
    "session": "SE-nested-0123456789-session",
    "header": "HD-nested-0123456789-header",
    "deps": "DP-nested-0123456789-deps",
}


def settings(tenant_token: str = SECRETS["access_token"]) -> dict[str, Any]:
    """Secrets at every depth: in `extra_body` dicts and lists, under headers, and as a top-level setting."""
    return {
        "temperature": 0.0,
        "api_key": SECRETS["api_key"],
        "extra_body": {
            "user_tier": "gold",
            "auth": {"access_token": tenant_token, "kind": "oauth"},
            "accounts": [
                {"name": "a", "auth_token": SECRETS["auth_token"]},
                {"refresh_token": SECRETS["refresh_token"]},
            ],
            "db": {"Password": SECRETS["password"], "host": "db.internal"},
            "oauth": {"clientSecret": SECRETS["client_secret"]},
            "headers": {"Cookie": SECRETS["cookie"], "Authorization": SECRETS["authorization"], "X-Trace": "t1"},
            "session": {"id": SECRETS["session"]},
        },
        "extra_headers": {"X-Api-Key": SECRETS["header"]},
    }


DEPS = {"tenant": "acme", "credentials": {"api_key": SECRETS["deps"]}}


def assert_no_secret(raw: bytes | str, where: str) -> None:
    text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
    for name, value in SECRETS.items():
        assert value not in text, f"the {name} secret was found in {where}"


def request_settings(entry: bytes) -> dict[str, Any]:
    document = json.loads(entry)
    found: dict[str, Any] = document["request"]["header"]["settings"]
    return found


async def run_twice_then_other_credential(store: Store) -> Echo:
    """A miss, a hit, and a miss for another access token (and a hit on deps-keyed whole runs)."""
    echo = Echo()
    agent = echo.agent()
    for _ in range(2):
        assert await cached_agent_run(agent, "q", "t", store=store, model_settings=settings()) == answer_to("q")
    assert echo.calls == 1, "the same credential is the same entry"
    other = settings(tenant_token="AT-another-tenant-0123456789")
    assert await cached_agent_run(agent, "q", "t", store=store, model_settings=other) == answer_to("q")
    assert echo.calls == 2, "another credential is another entry"
    for _ in range(2):
        whole = await cached_agent_run(agent, "w", "t", store=store, deps=DEPS, cache_whole_run=True)
        assert whole == answer_to("w")
    assert echo.calls == 3
    with pytest.raises(CacheMissError) as missed:
        await cached_agent_run(agent, "nope", "t", store=store, model_settings=settings(), cache_mode="read_only")
    assert_no_secret("".join(traceback.format_exception(missed.value)) + repr(missed.value), "a miss error")
    return echo


async def test_redis_holds_digests_only(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = redis_server_factory()
    echo = await run_twice_then_other_credential(RedisStore(server.url()))
    assert SECRETS["api_key"] in repr(echo.settings_seen[0]), "the model still receives the secret"
    with server.client() as client:
        keys = list(client.scan_iter(match="*"))
        entries = [client.get(k) for k in keys if client.type(k) == b"string"]
    assert len([e for e in entries if e and e.startswith(b"{")]) >= 3
    for key in keys:
        assert_no_secret(key, f"the key {key!r}")
    for entry in entries:
        assert entry is not None
        assert_no_secret(entry, "a Redis value")
    stored = [request_settings(e) for e in entries if e and b'"request"' in e and b"extra_body" in e]
    assert stored, "the request record keeps the settings"
    first = stored[0]
    assert first["extra_body"]["user_tier"] == "gold"  # ordinary values stay readable
    assert first["extra_body"]["headers"]["X-Trace"] == "t1"
    assert first["extra_body"]["db"]["host"] == "db.internal"
    assert SECRET_PLACEHOLDER_RE.fullmatch(first["api_key"])
    assert SECRET_PLACEHOLDER_RE.fullmatch(first["extra_body"]["auth"])  # `auth` itself is a secret-looking name
    assert SECRET_PLACEHOLDER_RE.fullmatch(first["extra_body"]["accounts"][0]["auth_token"])
    assert "extra_headers" not in first  # transport settings never reach the key or the entry
    assert_no_secret(caplog.text, "the logs")


async def test_sqlite_holds_digests_only(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = LocalStore(tmp_path)
    await run_twice_then_other_credential(store)
    await store.close()
    files = await asyncio.to_thread(lambda: {f.name: f.read_bytes() for f in tmp_path.rglob("*") if f.is_file()})
    assert any(b"user_tier" in content for content in files.values()), "the entries were written"
    for name, content in files.items():
        assert_no_secret(content, name)
    assert_no_secret(caplog.text, "the logs")


async def test_a_cassette_holds_no_secret(tmp_path: Path) -> None:
    path = tmp_path / "cassette.json"
    await run_twice_then_other_credential(CassetteStore(path))
    text = path.read_text(encoding="utf-8")
    assert "user_tier" in text
    assert_no_secret(text, "the cassette")


def test_two_credentials_never_share_a_digest_and_one_credential_always_does() -> None:
    assert secret_digest("a") != secret_digest("b")
    assert secret_digest({"k": [1, 2]}) == secret_digest({"k": [1, 2]})
    assert secret_digest(secret_digest("a")) == secret_digest("a"), "redacting twice changes nothing"
    assert SECRET_PLACEHOLDER_RE.fullmatch(secret_digest(None))
    nested = {"a": [{"token": "t1"}, ("x", {"Set-Cookie": "c"})], "n": 1}
    assert redact(nested) == {"a": [{"token": secret_digest("t1")}, ["x", {"Set-Cookie": secret_digest("c")}]], "n": 1}


@pytest.mark.parametrize(
    "name",
    [
        "api_key",
        "apikey",
        "API_KEY",
        "X-Api-Key",
        "openai_api_key",
        "x-goog-api-key",
        "Ocp-Apim-Subscription-Key",
        "secret",
        "client_secret",
        "clientSecret",
        "aws_secret_access_key",
        "aws_access_key_id",
        "password",
        "Password",
        "passwd",
        "db_pwd",
        "passphrase",
        "token",
        "access_token",
        "accessToken",
        "auth_token",
        "refresh_token",
        "id_token",
        "session_token",
        "x-auth-token",
        "authorization",
        "Proxy-Authorization",
        "auth",
        "cookie",
        "Set-Cookie",
        "credential",
        "credentials",
        "private_key",
        "privateKey",
        "signing_key",
        "session",
        "session_id",
        "sessionId",
        "bearer",
        "jwt",
    ],
)
def test_secret_looking_names(name: str) -> None:
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name",
    [
        "max_tokens",
        "input_tokens",
        "thinking_budget_tokens",
        "prompt_cache_key",
        "openai_prompt_cache_key",
        "key",
        "author",
        "authored",
        "user",
        "openai_user",
        "temperature",
        "extra_body",
        "headers",
        "stop_sequences",
        "xai_include_encrypted_content",
    ],
)
def test_ordinary_names(name: str) -> None:
    assert not is_secret_name(name)


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:pw-Secret1@host:6379/0", "redis://user:***@host:6379/0"),
        ("redis://:pw-Secret1@host/0", "redis://:***@host/0"),
        ("redis://user:pw@Secret1@host/0", "redis://user:***@host/0"),
        ("redis+sentinel://:pw-Secret1@h1:26379,h2:26379/main", "redis+sentinel://:***@h1:26379,h2:26379/main"),
        ("redis://host/0?password=pw-Secret1&db=1", "redis://host/0?password=***&db=1"),
        ("redis://user@host/0", "redis://user@host/0"),
        ("not a url", "not a url"),
    ],
)
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert "Secret1" not in redact_url_in_text(f"connecting to {url} failed")
