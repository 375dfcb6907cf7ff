"""Secrets never leave: a Redis password and API keys in model settings are not logged, raised, stored or hashed
into keys in readable form."""

from __future__ import annotations

import asyncio
import logging
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from _redis_servers import RedisServer
from _security_kit import Echo, answer_to

from pyai_caching import (
    CacheError,
    CacheMissError,
    ConfigurationError,
    LocalStore,
    RedisStore,
    cached_agent_run,
    clear_cache_async,
)

PASSWORD = "pw-Sup3rS3cretRedisPassw0rd"
API_KEY = "sk-test-Header0123456789abcdef"
SETTING_KEY = "sk-test-Setting0123456789abcdef"
SECRETS = (PASSWORD, API_KEY, SETTING_KEY)

SETTINGS = {
    "temperature": 0.0,
    "extra_headers": {"Authorization": f"Bearer {API_KEY}", "X-Api-Key": API_KEY},
    "openai_api_key": SETTING_KEY,
}


def text_of(error: BaseException) -> str:
    """Everything a log line or a traceback of `error` could show."""
    return "".join(traceback.format_exception(error)) + repr(error)


def assert_no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret[:8]}... found in {where}"


async def test_secrets_stay_out_of_logs_errors_entries_and_keys(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = redis_server_factory(password=PASSWORD)
    url = server.url()
    assert PASSWORD in url
    echo = Echo()
    agent = echo.agent()
    options = {"redis_url": url, "model_settings": SETTINGS}

    for _ in range(3):  # a miss, a request-level hit, a run-level hit
        assert await cached_agent_run(agent, "q", "t", **options) == answer_to("q")
    assert echo.calls == 1
    assert API_KEY in repr(echo.settings_seen[0])  # the settings did reach the model
    with pytest.raises(CacheMissError) as missed:
        await cached_agent_run(agent, "not recorded", "t", cache_mode="read_only", **options)
    errors: list[BaseException] = [missed.value]

    with server.client() as client:
        keys = list(client.scan_iter(match="*"))
        assert keys
        for key in keys:
            assert_no_secret(key.decode(), "a key")
            if client.type(key) == b"string":
                assert_no_secret((client.get(key) or b"").decode(errors="replace"), f"the value of {key!r}")

    # Failures: an outage with on_cache_error="raise", the same outage failing open, a malformed URL.
    await asyncio.to_thread(server.stop)
    with pytest.raises(CacheError) as failed:
        await cached_agent_run(agent, "q2", "t", on_cache_error="raise", **options)
    errors.append(failed.value)
    assert await cached_agent_run(agent, "q3", "t", **options) == answer_to("q3")
    with pytest.raises(ConfigurationError) as bad_url:
        await cached_agent_run(agent, "q", "t", redis_url=f"redis://:{PASSWORD}@127.0.0.1:port/0")
    errors.append(bad_url.value)
    with pytest.raises(ConfigurationError) as bad_scheme:
        RedisStore(f"http://user:{PASSWORD}@127.0.0.1/0")
    errors.append(bad_scheme.value)
    with pytest.raises(Exception) as clearing:  # whatever the store raises must not show it
        await clear_cache_async(url)
    errors.append(clearing.value)

    for error in errors:
        assert_no_secret(text_of(error), f"{type(error).__name__}")
    assert any("failed on" in r.getMessage() for r in caplog.records)  # the outage was logged...
    assert_no_secret(caplog.text, "the logs")  # ...without the password
    for record in caplog.records:
        assert_no_secret(record.getMessage(), "a log record")


async def test_api_keys_stay_out_of_the_embedded_store(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    store = LocalStore(tmp_path)
    agent = Echo().agent()
    for _ in range(2):
        assert await cached_agent_run(agent, "q", "t", store=store, model_settings=SETTINGS) == answer_to("q")
    await store.close()
    files = await asyncio.to_thread(lambda: {f.name: f.read_bytes() for f in tmp_path.iterdir()})
    assert files  # the database and its WAL
    for name, content in files.items():
        assert_no_secret(content.decode(errors="replace"), name)
    assert_no_secret(caplog.text, "the logs")
