"""Everything the library does with Redis, in one short scenario, for checking what a Redis user is allowed to do."""

from __future__ import annotations

import uuid

from _agents import Counter, make_agent

from pyai_caching import RedisStore, SemanticCache, cached_agent_run, clear_cache_async
from pyai_caching.spend.recorders import RedisSpendLedger


async def embed(texts: list[str]) -> list[list[float]]:
    """Two directions: prompts about passwords, and everything else."""
    return [[1.0, 0.0] if "password" in text.lower() else [0.0, 1.0] for text in texts]


async def exercise_everything(url: str) -> None:
    """Run every Redis operation of the library through `url`, raising on the first one that fails.

    A miss (entry read, fill lock, entry write, semantic index write, ledger transaction with an expiry), an exact
    hit, a semantic hit (index read), a ledger read, the lock primitives on a held lock, and clearing a namespace.
    Cache errors raise (`on_cache_error="raise"`); a ledger write that fails is only logged by the engine, so the
    ledger is read back.
    """
    namespace = f"deploy-{uuid.uuid4().hex[:12]}"
    counter = Counter(payload="Use the reset link we e-mailed you.")
    agent = make_agent(counter)
    ledger = RedisSpendLedger(url, retention_days=30)
    semantic = SemanticCache(embedder=embed, threshold=0.9)
    options = {"redis_url": url, "namespace": namespace, "on_cache_error": "raise", "expense_hook": ledger}

    answers = [
        await cached_agent_run(agent, "How do I reset my password?", "acl", semantic=semantic, **options),
        await cached_agent_run(agent, "How do I reset my password?", "acl", semantic=semantic, **options),
        await cached_agent_run(agent, "password forgotten, what now", "acl", semantic=semantic, **options),
    ]
    assert answers == ["Use the reset link we e-mailed you."] * 3
    assert counter.calls == 1, "the exact hit and the semantic hit must not call the model"

    rows = await ledger.read(namespace=namespace)
    assert sum(row.calls for row in rows) == 3, f"the spend ledger was not written: {rows}"

    store = RedisStore(url)
    try:
        lock = f"pyai_caching:{namespace}:r:{{{uuid.uuid4().hex}}}:lock"
        assert await store.acquire_lock(lock, "holder", ttl=5.0)
        assert not await store.acquire_lock(lock, "other", ttl=5.0)
        assert await store.renew_lock(lock, "holder", ttl=5.0)
        assert await store.release_lock(lock, "holder")

        prefix = f"pyai_caching:{namespace}:"
        before = [key async for key in store.scan(prefix)]
        assert len(before) >= 2, before  # the entries and the semantic index
        assert await clear_cache_async(url, namespace=namespace) == len(before)
        assert [key async for key in store.scan(prefix)] == []
    finally:
        await store.close()
