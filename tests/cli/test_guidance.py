"""What a new user stumbles on: errors say what is wrong and what to do, and help says what the command does."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from _agents import Counter, make_agent
from _cli_support import Cli, fill, run
from _redis_servers import RedisServer

from pyai_caching import ConfigurationError, RedisStore, cached_agent_run
from pyai_caching._util.urls import MAX_MESSAGE
from pyai_caching.cli import ExitCode
from pyai_caching.spend.recorders import RedisSpendLedger

# --- demo --------------------------------------------------------------------------------------------------------


def test_demo_help_says_the_store_is_temporary_and_the_environment_is_not_read(cli: Cli) -> None:
    text = " ".join(cli("demo", "--help", env={"COLUMNS": "200"}).stdout.split())
    assert "Default: a temporary embedded store ($LLM_CACHE_REDIS_URL is not read)" in text
    assert "Default: a temporary folder, deleted at the end ($LLM_CACHE_DIR is not read)" in text
    assert "Default: $LLM_CACHE" not in text


def test_demo_ignores_the_cache_folder_of_the_environment(cli: Cli, tmp_path: Path) -> None:
    configured = tmp_path / "configured"
    report = json.loads(cli("demo", "--latency", "0", "--json", env={"LLM_CACHE_DIR": str(configured)}).stdout)
    assert report["temporary"] is True
    assert str(configured) not in report["store"]
    assert not configured.exists()


# --- Redis URLs and databases ------------------------------------------------------------------------------------


def test_a_database_the_server_does_not_have_is_named_as_such(
    cli: Cli, redis_server_factory: Callable[..., RedisServer]
) -> None:
    server = redis_server_factory()  # the default 16 databases: 0 to 15
    url = server.url(db=99)
    for command in (["stats"], ["inspect", "--last", "1"], ["clear", "--yes"], ["spend"]):
        result = cli(*command, "--redis-url", url)
        assert result.exit_code == ExitCode.USAGE, result.output
        assert "the database in redis://127.0.0.1:" in result.stderr
        assert "/99 does not exist on that server" in result.stderr
        assert "start the server" not in result.stderr
        as_json = json.loads(cli(*command, "--redis-url", url, "--json").stderr)
        assert as_json["exit_code"] == ExitCode.USAGE
    assert cli("stats", "--redis-url", server.url(db=15), "--json").exit_code == 0


@pytest.mark.parametrize(
    ("url", "problem", "suggestion"),
    [
        ("redsi://localhost:6379", "unsupported scheme 'redsi'", "did you mean 'redis://localhost:6379'?"),
        ("localhost:6379", "no scheme", "did you mean 'redis://localhost:6379'?"),
        ("10.0.0.5:6380/2", "no scheme", "did you mean 'redis://10.0.0.5:6380/2'?"),
        ("reddis://app:s3cret-pw@cache:6379/0", "unsupported scheme 'reddis'", "did you mean 'redis://***@cache:6379/0'?"),
        ("rediss+clustr://a:6379,b:6379", "unsupported scheme 'rediss+clustr'", "'rediss+cluster://a:6379,b:6379'"),
        ("/run/redis/redis.sock", "no scheme", "did you mean 'unix:///run/redis/redis.sock'?"),
        ("http://example.com", "unsupported scheme 'http'", "forms: redis://host:6379/0, rediss://, unix://"),
    ],
)  # fmt: skip
def test_a_bad_url_is_one_short_line_with_the_nearest_valid_url(
    cli: Cli, url: str, problem: str, suggestion: str
) -> None:
    result = cli("stats", "--redis-url", url)
    assert result.exit_code == ExitCode.USAGE
    message = result.stderr.removeprefix("pyai-caching: error: ").strip()
    assert message.startswith("invalid Redis URL ")
    assert problem in message
    assert suggestion in message
    assert len(message) <= MAX_MESSAGE
    assert "s3cret-pw" not in result.output

    with pytest.raises(ConfigurationError) as raised:  # the library says the same
        run(cached_agent_run(make_agent(Counter()), "q", "t", redis_url=url))
    assert str(raised.value).endswith(message)
    assert len(str(raised.value)) <= MAX_MESSAGE + len("redis_url: ")


# PENDING: needs the one-line change in pyai_caching/stores/redis.py `_parse_url` (raise
# `ConfigurationError(invalid_url_message(url, problem))` from `pyai_caching._urls`); fails until it is applied.
@pytest.mark.parametrize("url", ["redis://cache:99999/0", "redis://cache:6379/zero", "redis+sentinel://h:26379"])
def test_every_bad_url_message_is_short(cli: Cli, url: str) -> None:
    result = cli("stats", "--redis-url", url)
    assert result.exit_code == ExitCode.USAGE
    message = result.stderr.removeprefix("pyai-caching: error: ").strip()
    assert message.startswith("invalid Redis URL ")
    assert len(message) <= MAX_MESSAGE
    with pytest.raises(ConfigurationError) as raised:
        RedisStore(url)
    assert len(str(raised.value)) <= MAX_MESSAGE


# --- spend filters -----------------------------------------------------------------------------------------------


def test_spend_of_an_unknown_namespace_names_those_with_spend(cli: Cli, redis_url: str) -> None:
    store = RedisStore(redis_url)
    for namespace in ("tenant-a", "tenant-b"):
        run(fill(store, namespace=namespace, tasks={"extract": 1}, expense_hook=RedisSpendLedger(store=store)))

    unknown = cli("spend", "--redis-url", redis_url, "-n", "tenant-c")
    assert unknown.exit_code == 0
    text = " ".join(unknown.stdout.split())
    assert "No spend recorded in" in text
    assert "for namespace 'tenant-c'" in text
    assert "Namespaces with spend in that period: tenant-a, tenant-b." in text
    as_json = json.loads(cli("spend", "--redis-url", redis_url, "-n", "tenant-c", "--json").stdout)
    assert as_json["note"] == "Namespaces with spend in that period: tenant-a, tenant-b."
    assert as_json["rows"] == []

    task = " ".join(cli("spend", "--redis-url", redis_url, "-n", "tenant-a", "-t", "summarize").stdout.split())
    assert "for namespace 'tenant-a' and task 'summarize'" in task
    assert "Tasks of namespace 'tenant-a' with spend in that period: extract." in task

    found = json.loads(cli("spend", "--redis-url", redis_url, "-n", "tenant-a", "--json").stdout)
    assert found["note"] is None
    assert found["total"]["calls"] == 1


def test_spend_of_an_empty_ledger_says_how_to_record(cli: Cli, redis_url: str) -> None:
    text = " ".join(cli("spend", "--redis-url", redis_url, "-n", "tenant-a").stdout.split())
    assert "Nothing at all is recorded for that period." in text


# --- namespaces --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["stats"], ["inspect", "--last", "1"], ["clear", "--yes"], ["spend"]])
def test_a_namespace_that_cannot_exist_is_a_usage_error_even_on_an_empty_store(
    cli: Cli, tmp_path: Path, redis_url: str, command: list[str]
) -> None:
    where = ["--redis-url", redis_url] if command == ["spend"] else ["--dir", str(tmp_path / "empty")]
    result = cli(*command, *where, "--namespace", "tenant a/b")
    assert result.exit_code == ExitCode.USAGE
    assert "namespace 'tenant a/b' is not allowed" in result.stderr
    assert not (tmp_path / "empty").exists()
