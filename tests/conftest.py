"""Session set-up and Redis fixtures: every test session (every xdist worker) gets its own throwaway `redis-server`.

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
from _redis_servers import RedisServer, redis_server_executable

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


def _require_redis_server() -> None:
    if redis_server_executable() is None:
        pytest.fail(
            "redis-server is not on PATH: install Redis (apt-get install redis-server, brew install redis) "
            "or set REDIS_SERVER to the executable; the Redis tests start their own throwaway servers",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One throwaway `redis-server` for the session (per xdist worker). Do not reconfigure it; use the factory."""
    _require_redis_server()
    with RedisServer() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """The URL of an empty database of the session server: databases 0 to 15 in turn, flushed before the test."""
    redis_server.ensure_running()
    db = next(_DATABASES)
    with redis_server.client(db=db) as client:
        client.flushdb()
    return redis_server.url(db=db)


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    """A synchronous redis-py client on the database of `redis_url`, for assertions on the raw data."""
    with redis.Redis.from_url(redis_url, socket_timeout=5.0) as client:
        yield client


@pytest.fixture
def redis_server_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start more servers in a test: `redis_server_factory("--maxmemory", "1mb", password="pw")`.

    Takes the arguments of `RedisServer`; every server started is stopped (and its folder deleted) after the test.
    """
    _require_redis_server()
    servers: list[RedisServer] = []

    def start(*args: str, **kwargs: Any) -> RedisServer:
        server = RedisServer(*args, **kwargs)
        servers.append(server)
        server.start()
        return server

    yield start
    for server in servers:
        server.close()
