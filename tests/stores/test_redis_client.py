"""`RedisStore.client()` and `RedisStore.database`: what other parts of the library use beyond the Store methods."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio

from pyai_caching.stores import RedisStore


@pytest.mark.parametrize(
    ("url", "database"),
    [
        ("redis://localhost", 0),
        ("redis://localhost:6380/7", 7),
        ("redis://localhost?db=3", 3),
        ("unix:///run/redis.sock?db=5", 5),
        ("redis+sentinel://h1:26379,h2/mymaster/2", 2),
        ("redis+sentinel://h1/mymaster", 0),
        ("redis+cluster://n1:7000,n2:7001", 0),
    ],
)
def test_database_is_the_one_the_url_selects(url: str, database: int) -> None:
    assert RedisStore(url).database == database


def test_the_client_is_the_stores_own_one_per_event_loop(redis_url: str) -> None:
    store = RedisStore(redis_url, socket_timeout=5.0, connect_timeout=5.0)

    async def use() -> redis.asyncio.Redis:
        client = await store.client()
        assert await store.client() is client  # one client per loop, not one per call
        await store.set("pyai-client-test", b"v", ttl=60)
        assert await client.get("pyai-client-test") == b"v"  # the store's own database and connections
        assert await client.delete("pyai-client-test") == 1
        assert isinstance(client, redis.asyncio.Redis)
        return client

    first = asyncio.run(use())
    second = asyncio.run(use())
    assert first is not second  # a new event loop gets a new client
