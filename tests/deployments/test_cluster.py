"""Redis Cluster: entries spread over every node, namespaces cleared across all of them, the fill lock next to
its entry, and the spend ledger in one slot."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest
import redis
import redis.cluster
from _agents import Counter, make_agent
from _redis_topologies import ClusterNodes
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import RedisStore, cached_agent_run, clear_cache_async
from pyai_caching.spend.recorders import RedisSpendLedger

pytestmark = pytest.mark.deployments

PROMPTS = [f"question number {i}" for i in range(60)]
"""Enough keys that every one of the three nodes holds some (each misses a node with probability (2/3)**60)."""


def namespace() -> str:
    return f"cluster-{uuid.uuid4().hex[:12]}"


async def test_hits_and_misses_spread_over_every_node(cluster: ClusterNodes) -> None:
    counter = Counter(payload="from the cluster")
    agent = make_agent(counter)
    ns = namespace()
    options: dict[str, Any] = {"redis_url": cluster.url(), "namespace": ns, "on_cache_error": "raise"}
    for prompt in PROMPTS:
        assert await cached_agent_run(agent, prompt, "cluster", **options) == "from the cluster"
    assert counter.calls == len(PROMPTS)
    for prompt in PROMPTS:
        assert await cached_agent_run(agent, prompt, "cluster", **options) == "from the cluster"
    assert counter.calls == len(PROMPTS)  # all hits
    held = cluster.node_keys(f"pyai_caching:{ns}:*")
    assert all(held.values()), f"some node holds no entry: { {port: len(keys) for port, keys in held.items()} }"


async def test_clearing_a_namespace_deletes_its_keys_on_every_node_and_nothing_else(cluster: ClusterNodes) -> None:
    counter = Counter(payload="to be cleared")
    agent = make_agent(counter)
    doomed, kept = namespace(), namespace()
    for prompt in PROMPTS:
        await cached_agent_run(agent, prompt, "cluster", redis_url=cluster.url(), namespace=doomed)
    for prompt in PROMPTS[:5]:
        await cached_agent_run(agent, prompt, "cluster", redis_url=cluster.url(), namespace=kept)
    foreign = [f"other-app:{i}" for i in range(30)]  # another application's keys, in slots all over the cluster
    startup = [redis.cluster.ClusterNode("127.0.0.1", node.port) for node in cluster.nodes]
    with redis.cluster.RedisCluster(startup_nodes=startup, socket_timeout=5.0) as admin:
        for key in foreign:
            admin.set(key, b"keep me")

        doomed_keys = cluster.keys(f"pyai_caching:{doomed}:*")
        kept_before = cluster.node_keys(f"pyai_caching:{kept}:*")
        assert len({admin.keyslot(key) for key in doomed_keys}) > len(doomed_keys) // 2  # slots all over
        assert all(cluster.node_keys(f"pyai_caching:{doomed}:*").values())  # and every node holds some

        assert await clear_cache_async(cluster.url(), namespace=doomed) == len(doomed_keys)

        assert cluster.node_keys(f"pyai_caching:{doomed}:*") == {node.port: [] for node in cluster.nodes}
        assert cluster.node_keys(f"pyai_caching:{kept}:*") == kept_before
        assert all(admin.get(key) == b"keep me" for key in foreign)
        admin.delete(*foreign)  # redis-py splits a multi-key DEL by slot on a cluster
    calls = counter.calls
    await cached_agent_run(agent, PROMPTS[0], "cluster", redis_url=cluster.url(), namespace=kept)
    assert counter.calls == calls  # the other namespace still hits


class SlowModel:
    """A model that takes a while and notes which node holds the fill lock while it runs."""

    def __init__(self, cluster: ClusterNodes, namespace: str) -> None:
        self.cluster = cluster
        self.namespace = namespace
        self.calls = 0
        self.lock_holders: dict[int, list[str]] = {}

    async def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        lock_pattern = f"pyai_caching:{self.namespace}:*:lock"
        self.lock_holders = await asyncio.to_thread(self.cluster.node_keys, lock_pattern)
        await asyncio.sleep(0.3)
        return ModelResponse(parts=[TextPart("filled once")])


async def test_concurrent_identical_misses_through_two_stores_call_the_model_once(cluster: ClusterNodes) -> None:
    # Two stores stand for two processes: they share no in-process state, only the lock in the cluster.
    ns = namespace()
    model = SlowModel(cluster, ns)
    agent = Agent(FunctionModel(model, model_name="slow"), output_type=str)
    stores = [RedisStore(cluster.url()), RedisStore(cluster.url())]
    started = time.monotonic()
    answers = await asyncio.gather(
        *(cached_agent_run(agent, "the same question", "cluster", store=stores[i % 2], namespace=ns) for i in range(8))
    )
    assert answers == ["filled once"] * 8
    assert model.calls == 1
    assert time.monotonic() - started < 5.0  # the waiters were not stuck behind a lock's whole lifetime
    # The lock lived on the node of its entry (same {digest} hash tag): no cross-slot lock.
    entries = cluster.node_keys(f"pyai_caching:{ns}:*")
    locks = {port: keys for port, keys in model.lock_holders.items() if keys}
    assert len(locks) == 1, model.lock_holders
    (port, (lock,)), *_ = locks.items()
    assert lock.removesuffix(":lock") in entries[port]
    assert cluster.node_keys(f"pyai_caching:{ns}:*:lock") == {node.port: [] for node in cluster.nodes}  # released
    for store in stores:
        await store.close()


async def test_the_spend_ledger_writes_one_transaction_per_call(cluster: ClusterNodes) -> None:
    ns = namespace()
    ledger = RedisSpendLedger(cluster.url())
    counter = Counter(payload="ledgered")
    agent = make_agent(counter)
    for _ in range(3):
        await cached_agent_run(agent, "spend", "cluster", redis_url=cluster.url(), namespace=ns, expense_hook=ledger)
    rows = await ledger.read(namespace=ns)
    assert [(row.task, row.calls, row.hits, row.misses) for row in rows] == [("cluster", 3, 2, 1)]


async def test_calls_beyond_max_connections_queue_instead_of_failing(cluster: ClusterNodes) -> None:
    # redis-py's cluster client raises MaxConnectionsError when a node's connections are all busy; the store
    # queues instead, like its pool does on a single server.
    store = RedisStore(cluster.url(), max_connections=2)
    prefix = f"pyai_caching:{namespace()}:"
    keys = [f"{prefix}r:{{{i}}}" for i in range(200)]
    await asyncio.gather(*(store.set(key, b"v", ttl=60) for key in keys))
    assert await asyncio.gather(*(store.get(key) for key in keys)) == [b"v"] * len(keys)
    assert await store.clear(prefix) == len(keys)
    await store.close()


def test_a_cluster_url_against_a_single_server_is_a_clear_error(flavored_server: Any) -> None:
    store = RedisStore(f"redis+cluster://127.0.0.1:{flavored_server.port}")

    async def get() -> None:
        await store.get("pyai_caching:x")

    with pytest.raises(redis.exceptions.ConnectionError, match="Cluster mode is not enabled"):
        asyncio.run(get())
