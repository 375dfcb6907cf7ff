"""`max_entry_bytes`: every store refuses to write a bigger value and never hands one back (Redis and SQLite check
the size on their side, before the value is transferred)."""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from pyai_caching.exceptions import ConfigurationError
from pyai_caching.stores import LocalStore, MemoryStore, RedisStore, Store
from pyai_caching.stores.base import DEFAULT_MAX_ENTRY_BYTES, EntryTooLargeError

LIMIT = 10_000
KEY = "pyai_caching:test:r:{abc}"


@dataclass
class Limited:
    store: Store
    plant: Callable[[str, bytes], Awaitable[None]]
    """Write a value behind the store's back, whatever its size (another process, another application)."""


@pytest.fixture(params=["memory", "local", "redis"])
async def limited(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Limited]:
    if request.param == "memory":
        memory = MemoryStore(max_entry_bytes=LIMIT)

        async def plant_memory(key: str, value: bytes) -> None:
            memory.max_entry_bytes = None
            await memory.set(key, value, ttl=None)
            memory.max_entry_bytes = LIMIT

        found = Limited(memory, plant_memory)
    elif request.param == "local":
        unlimited = LocalStore(tmp_path, max_entry_bytes=None)

        async def plant_local(key: str, value: bytes) -> None:
            await unlimited.set(key, value, ttl=None)

        found = Limited(LocalStore(tmp_path, max_entry_bytes=LIMIT), plant_local)
    else:
        url: str = request.getfixturevalue("redis_url")
        raw: redis.Redis = request.getfixturevalue("redis_client")

        async def plant_redis(key: str, value: bytes) -> None:
            raw.set(key, value)

        found = Limited(RedisStore(url, max_entry_bytes=LIMIT, socket_timeout=5.0), plant_redis)
    yield found
    await found.store.close()


async def test_a_value_up_to_the_limit_round_trips(limited: Limited) -> None:
    value = b"v" * LIMIT
    await limited.store.set(KEY, value, ttl=None)
    assert await limited.store.get(KEY) == value


async def test_a_bigger_value_is_not_written(limited: Limited) -> None:
    await limited.store.set(KEY, b"old", ttl=None)
    with pytest.raises(EntryTooLargeError) as raised:
        await limited.store.set(KEY, b"v" * (LIMIT + 1), ttl=None)
    assert (raised.value.size, raised.value.limit, raised.value.key) == (LIMIT + 1, LIMIT, KEY)
    assert await limited.store.get(KEY) == b"old"  # untouched


@pytest.mark.parametrize("size", [LIMIT + 1, 3 * 1024 * 1024])
async def test_a_bigger_stored_value_is_never_returned(limited: Limited, size: int) -> None:
    await limited.plant(KEY, b"v" * size)
    with pytest.raises(EntryTooLargeError) as raised:
        await limited.store.get(KEY)
    assert raised.value.size == size
    assert await limited.store.get("pyai_caching:test:missing") is None


async def test_redis_checks_the_size_before_sending_the_value(redis_url: str, redis_client: redis.Redis) -> None:
    redis_client.set(KEY, b"v" * 5_000_000)
    store = RedisStore(redis_url, max_entry_bytes=LIMIT, socket_timeout=5.0)
    sent_before = redis_client.info("stats")["total_net_output_bytes"]
    for _ in range(3):
        with pytest.raises(EntryTooLargeError):
            await store.get(KEY)
    sent = redis_client.info("stats")["total_net_output_bytes"] - sent_before
    assert sent < 20_000  # three small replies (and the INFO replies), not 15 MB
    await store.close()


async def test_redis_reads_a_value_over_one_mebibyte_in_two_round_trips(
    redis_url: str, redis_client: redis.Redis
) -> None:
    value = bytes(range(256)) * 8192  # 2 MiB
    redis_client.set(KEY, value)
    store = RedisStore(redis_url, socket_timeout=5.0)
    assert store.max_entry_bytes == DEFAULT_MAX_ENTRY_BYTES
    assert await store.get(KEY) == value
    await store.close()


async def test_local_store_does_not_load_a_bigger_row(tmp_path: Path) -> None:
    """A row bigger than the limit is a refusal, not a value (benchmarks/entry_size.py measures the memory)."""
    store = LocalStore(tmp_path, max_entry_bytes=LIMIT)
    await store.set("pyai_caching:small", b"s", ttl=None)
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        db.execute(
            "INSERT INTO entries (key, value, created_at) VALUES (?, zeroblob(50000000), 0)", ("pyai_caching:huge",)
        )
        db.commit()
    with pytest.raises(EntryTooLargeError) as raised:
        await store.get("pyai_caching:huge")
    assert raised.value.size == 50_000_000
    await store.close()


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "8MB"])
@pytest.mark.parametrize(
    "make",
    [
        lambda path, bad: MemoryStore(max_entry_bytes=bad),
        lambda path, bad: LocalStore(path, max_entry_bytes=bad),
        lambda path, bad: RedisStore("redis://127.0.0.1:1/0", max_entry_bytes=bad),
    ],
    ids=["memory", "local", "redis"],
)
def test_a_bad_limit_is_a_configuration_error(make: Any, bad: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="max_entry_bytes must be a positive number of bytes or None"):
        make(tmp_path, bad)


async def test_cached_agent_run_takes_a_limit_of_its_own(caplog: pytest.LogCaptureFixture) -> None:
    """`max_entry_bytes=` on the call: the answer is returned as usual but not stored, so the next call misses."""
    from _agents import Counter, make_agent

    from pyai_caching import cached_agent_run
    from pyai_caching.stores import MemoryStore

    counter = Counter(payload="x" * 5000)
    agent, store = make_agent(counter), MemoryStore()
    for _ in range(2):
        assert await cached_agent_run(agent, "q", "t", store=store, max_entry_bytes=1000) == "x" * 5000
    assert counter.calls == 2
    assert "max_entry_bytes" in caplog.text or "larger than" in caplog.text
    assert await cached_agent_run(agent, "q", "t", store=store) == "x" * 5000
    assert await cached_agent_run(agent, "q", "t", store=store) == "x" * 5000
    assert counter.calls == 3  # with the store's own limit (8 MiB) it is stored and served
