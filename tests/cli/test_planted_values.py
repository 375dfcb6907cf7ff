"""One planted value under `pyai_caching:` never breaks an operator's tool: every command that reads entries counts
and shows it, and exits 0, on a real Redis and on the embedded store."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from _cli_support import Cli, fill, run
from _planted import HOSTILE, RAW_CONTROLS, SQLITE_ONLY, Planted, plant_local, plant_redis
from typer.testing import Result

from pyai_caching import LocalStore, RedisStore
from pyai_caching.cli import ExitCode


def key_of(name: str) -> str:
    return f"pyai_caching:default:r:{{{hashlib.sha256(name.encode()).hexdigest()}}}"


@dataclass
class Target:
    """A store with two real entries (one prompt, task `real`), and a way to plant raw values into it."""

    where: list[str]
    plant: Callable[[str, bytes | str | int | float], None]
    is_redis: bool


@pytest.fixture(params=["local", "redis"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        client: redis.Redis = request.getfixturevalue("redis_client")
        run(fill(RedisStore(url), tasks={"real": 1}))
        return Target(["--redis-url", url], lambda k, v: plant_redis(client, k, v), True)
    run(fill(LocalStore(tmp_path), tasks={"real": 1}))
    return Target(["--dir", str(tmp_path)], lambda k, v: plant_local(tmp_path, k, v), False)


def ok(result: Result) -> str:
    """The output of a command that must have succeeded, checked for raw control characters."""
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    leaked = sorted({c for c in result.output if c in RAW_CONTROLS})
    assert not leaked, f"raw control characters {leaked!r} in the output"
    return result.stdout


def every_command(cli: Cli, target: Target, key: str, readable: bool) -> None:
    where = target.where
    stats = json.loads(ok(cli("stats", *where, "--json")))
    assert (stats["entries"], stats["unreadable"]) == ((3, 0) if readable else (2, 1))
    table = ok(cli("stats", *where))
    assert ("Unreadable" in table) is not readable

    listing = json.loads(ok(cli("inspect", "--last", "50", *where, "--json")))
    assert {e["key"]: e["error"] is None for e in listing}[key] is readable
    ok(cli("inspect", "--last", "50", *where))
    ok(cli("inspect", "--last", "50", "--full", *where))
    shown = json.loads(ok(cli("inspect", key, *where, "--json")))
    assert [e["key"] for e in shown] == [key]
    assert (shown[0]["error"] is None) is readable
    ok(cli("inspect", key, *where))
    ok(cli("inspect", key.split("{")[1][:16], *where))
    ok(cli("inspect", "--task", "real", *where, "--json"))

    old = json.loads(ok(cli("clear", "--older-than", "1d", "--yes", *where, "--json")))
    assert old["deleted"] == 0  # no real entry is old, and a planted one has no trustworthy age
    by_task = json.loads(ok(cli("clear", "--task", "nothing-has-this-task", "--yes", *where, "--json")))
    assert by_task["deleted"] == 0
    if target.is_redis:
        ok(cli("spend", *where))
        ok(cli("spend", *where, "--json"))

    everything = json.loads(ok(cli("clear", "--yes", *where, "--json")))
    assert everything["deleted"] == 3  # the planted value too
    assert json.loads(ok(cli("stats", *where, "--json")))["entries"] == 0


@pytest.mark.parametrize("planted", HOSTILE, ids=[p.name for p in HOSTILE])
def test_every_command_survives_a_planted_value(cli: Cli, target: Target, planted: Planted) -> None:
    key = key_of(planted.name)
    target.plant(key, planted.value)
    every_command(cli, target, key, planted.readable)


@pytest.mark.parametrize("planted", SQLITE_ONLY, ids=[p.name for p in SQLITE_ONLY])
def test_values_of_other_sqlite_types(cli: Cli, tmp_path: Path, planted: Planted) -> None:
    run(fill(LocalStore(tmp_path), tasks={"real": 1}))
    target = Target(["--dir", str(tmp_path)], lambda k, v: plant_local(tmp_path, k, v), False)
    key = key_of(planted.name)
    target.plant(key, planted.value)
    every_command(cli, target, key, planted.readable)


@pytest.mark.parametrize("kind", ["hash", "list", "set", "zset"])
def test_keys_of_other_redis_types(cli: Cli, redis_url: str, redis_client: redis.Redis, kind: str) -> None:
    run(fill(RedisStore(redis_url), tasks={"real": 1}))
    key = key_of(kind)
    {
        "hash": lambda: redis_client.hset(key, "field", "value"),
        "list": lambda: redis_client.rpush(key, "a", "b"),
        "set": lambda: redis_client.sadd(key, "a"),
        "zset": lambda: redis_client.zadd(key, {"a": 1.0}),
    }[kind]()
    every_command(cli, Target(["--redis-url", redis_url], lambda k, v: None, True), key, readable=False)


def test_all_planted_values_at_once_are_counted(cli: Cli, target: Target) -> None:
    for planted in HOSTILE:
        target.plant(key_of(planted.name), planted.value)
    unreadable = sum(not p.readable for p in HOSTILE)
    assert len(HOSTILE) >= 30

    stats = json.loads(ok(cli("stats", *target.where, "--json")))

    assert stats["unreadable"] == unreadable
    assert stats["entries"] == 2 + len(HOSTILE) - unreadable
    assert f"Unreadable     {unreadable}" in ok(cli("stats", *target.where))
    listing = json.loads(ok(cli("inspect", "--last", "100", *target.where, "--json")))
    assert len(listing) == 2 + len(HOSTILE)
    assert sum(e["error"] is not None for e in listing) == unreadable
    ok(cli("inspect", "--last", "100", *target.where))
    assert json.loads(ok(cli("clear", "--older-than", "1d", "--yes", *target.where, "--json")))["deleted"] == 0
    assert json.loads(ok(cli("clear", "--yes", *target.where, "--json")))["deleted"] == 2 + len(HOSTILE)


def test_a_missing_entry_is_still_an_error(cli: Cli, tmp_path: Path) -> None:
    # Surviving planted data must not turn real errors into successes.
    run(fill(LocalStore(tmp_path)))
    result = cli("inspect", key_of("absent"), "--dir", str(tmp_path))
    assert result.exit_code == ExitCode.ERROR
