"""Redis fixtures: every test session (every xdist worker) gets its own throwaway `redis-server`.

The system Redis (port 6379) is never touched: servers bind a free loopback port and keep their data in memory.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from _redis_servers import RedisServer, redis_server_executable

pytest_plugins = ["pytester"]  # tests/plugin drive inner pytest sessions (it must be set in this top-level conftest)

_DATABASES = itertools.cycle(range(16))


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
