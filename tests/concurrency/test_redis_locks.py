"""`RedisStore`'s fill locks (`LockingStore`): a random token, `SET NX PX`, compare-and-extend, compare-and-delete."""

from __future__ import annotations

import asyncio

import redis

from pyai_caching.stores import LocalStore, LockingStore, MemoryStore, RedisStore

KEY = "pyai_caching:test:r:{abc}:lock"


async def test_only_one_holder_at_a_time_and_only_the_holder_renews_or_releases(
    redis_url: str, redis_client: redis.Redis
) -> None:
    store = RedisStore(redis_url)
    assert isinstance(store, LockingStore)
    assert await store.acquire_lock(KEY, "token-a", ttl=5)
    assert not await store.acquire_lock(KEY, "token-b", ttl=5)
    assert 0 < redis_client.pttl(KEY) <= 5000

    assert not await store.renew_lock(KEY, "token-b", ttl=60)
    assert redis_client.pttl(KEY) <= 5000
    assert await store.renew_lock(KEY, "token-a", ttl=60)
    assert redis_client.pttl(KEY) > 5000

    assert not await store.release_lock(KEY, "token-b")
    assert redis_client.get(KEY) == b"token-a"
    assert await store.release_lock(KEY, "token-a")
    assert redis_client.exists(KEY) == 0
    assert not await store.release_lock(KEY, "token-a")
    assert await store.acquire_lock(KEY, "token-b", ttl=5)
    await store.close()


async def test_a_lock_expires_by_itself(redis_url: str) -> None:
    store = RedisStore(redis_url)
    assert await store.acquire_lock(KEY, "token-a", ttl=0.05)
    await asyncio.sleep(0.1)
    assert await store.acquire_lock(KEY, "token-b", ttl=5)
    assert not await store.renew_lock(KEY, "token-a", ttl=5)  # the old holder cannot extend someone else's lock
    await store.close()


async def test_acquiring_again_with_the_same_token_succeeds(redis_url: str) -> None:
    """An acquire retried after its reply was lost (a broken connection) must not lock its caller out."""
    store = RedisStore(redis_url)
    assert await store.acquire_lock(KEY, "token-a", ttl=5)
    assert await store.acquire_lock(KEY, "token-a", ttl=5)
    await store.close()


async def test_a_stray_key_without_expiry_is_replaced(redis_url: str, redis_client: redis.Redis) -> None:
    store = RedisStore(redis_url)
    redis_client.set(KEY, b"not a lock of ours")
    assert await store.acquire_lock(KEY, "token-a", ttl=5)
    assert redis_client.get(KEY) == b"token-a"
    redis_client.delete(KEY)
    redis_client.hset(KEY, mapping={"a": "b"})
    assert await store.acquire_lock(KEY, "token-a", ttl=5)
    assert redis_client.type(KEY) == b"string"
    redis_client.delete(KEY)
    redis_client.hset(KEY, mapping={"a": "b"})
    redis_client.pexpire(KEY, 5000)  # something else that expires: waited for, like a lock
    assert not await store.acquire_lock(KEY, "token-a", ttl=5)
    await store.close()


def test_the_embedded_stores_have_no_locks() -> None:
    assert not isinstance(MemoryStore(), LockingStore)
    assert not isinstance(LocalStore("/nonexistent"), LockingStore)
