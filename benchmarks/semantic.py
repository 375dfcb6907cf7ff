"""Benchmark of the semantic cache's lookup: `python benchmarks/semantic.py` (or `--quick`).

Measures, for 1,000 and 10,000 recorded prompts in one context key and for 384- and 1536-dimensional vectors
(all-MiniLM-L6-v2 and text-embedding-3-small), the time of one semantic lookup *without* the embedding call
(which is the embedder's own latency, typically 10-300 ms for a hosted model):

* `redis warm`: the Redis index of a process that already holds the context's vectors: one `MULTI XRANGE XLEN
  EXEC` round trip to a throwaway `redis-server` on a free loopback port (never the system Redis) plus the exact
  cosine search in numpy;
* `redis cold`: the first lookup of a process: every vector of the context is read from the stream;
* `search only`: the in-memory exact cosine search alone (numpy matrix-vector product and top-k);
* `document warm`: the same through the generic `Store` layout (`MemoryStore`: one version-key read, then the
  search);
* `document add`: recording one prompt through that layout (it rewrites the context's whole document);
* `redis search`: with `PYAI_CACHING_SEARCH_REDIS_SERVER` (a `redis-server` >= 7.2) and, unless search is built
  in, `PYAI_CACHING_SEARCH_MODULE` (RediSearch's `.so`) set, a second throwaway server with vector search answers
  the same lookup with its HNSW index (`FT.SEARCH ... KNN`, filtered by the context key).

Vectors are random unit vectors (the search does the same work whatever they hold). Prints one Markdown table
of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from importlib.metadata import version
from pathlib import Path
from statistics import median
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # a fresh clone: import the package from the source tree
    sys.path.insert(1, str(_HERE.parent))

import numpy as np  # noqa: E402
import redis  # noqa: E402
from _server import RedisServer, _free_port  # noqa: E402

from pyai_caching import MemoryStore, RedisStore, SemanticCache  # noqa: E402
from pyai_caching.engine.access import StoreAccess  # noqa: E402
from pyai_caching.semantic.backends import DocumentBackend, SearchBackend, StreamBackend  # noqa: E402
from pyai_caching.semantic.backends.base import encode_fields, search_hash_prefix, search_index_name  # noqa: E402
from pyai_caching.semantic.index import Item, StoreState, state_of  # noqa: E402

CONTEXT = "0" * 64
NAMESPACE = "bench"


async def _embed(texts: list[str]) -> list[list[float]]:  # never called: lookups here start after embedding
    raise NotImplementedError


def _vectors(n: int, dim: int, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    matrix = rng.standard_normal((n, dim)).astype(np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


async def _timed(fn: Callable[[], Awaitable[Any]], rounds: int) -> float:
    """Median microseconds of `fn` over `rounds` calls (after one warm-up call)."""
    await fn()
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        await fn()
        samples.append((time.perf_counter_ns() - started) / 1000)
    return median(samples)


def _fill_stream(url: str, n: int, vectors: Any) -> None:
    key = f"pyai_caching:{NAMESPACE}:sem:{{{CONTEXT}}}"
    with redis.Redis.from_url(url) as client:
        client.delete(key)
        pipe = client.pipeline(transaction=False)
        for i in range(n):
            item = Item(f"pyai_caching:{NAMESPACE}:r:{{{i:064x}}}", f"recorded prompt number {i}", "")
            pipe.xadd(key, encode_fields(item, vectors[i]))
            if i % 1000 == 999:
                pipe.execute()
        pipe.execute()


async def _row(url: str, n: int, dim: int, rounds: int) -> dict[str, float]:
    config = SemanticCache(embedder=_embed, threshold=0.99, max_candidates=3, max_entries=n)
    vectors = _vectors(n + 1, dim)
    query = vectors[n]
    _fill_stream(url, n, vectors)

    store = RedisStore(url, socket_timeout=10.0)
    backend = StreamBackend(store, NAMESPACE, state_of(store))

    async def cold() -> None:
        fresh = StreamBackend(store, NAMESPACE, StoreState())
        await fresh.candidates(CONTEXT, query, config)

    result = {"redis cold": await _timed(cold, max(3, rounds // 40))}
    result["redis warm"] = await _timed(lambda: backend.candidates(CONTEXT, query, config), rounds)
    index = await backend.refresh(CONTEXT, dim)
    assert len(index) == n, (len(index), n)

    async def search_only() -> None:
        index.search(query, config.threshold, config.max_candidates)

    result["search only"] = await _timed(search_only, rounds)
    await store.close()

    memory = MemoryStore(max_entry_bytes=None)  # a 10,000-prompt document is bigger than the 8 MiB default
    access = StoreAccess(store=memory, ttl=None, max_entry_bytes=None)
    document = DocumentBackend(access, NAMESPACE, state_of(memory), None)
    await document.add(CONTEXT, Item("k0", "p0", ""), vectors[0], config, None)
    # fill the document in one go (adding 10,000 prompts one by one would rewrite it 10,000 times)
    await document.add(CONTEXT, Item("k1", "p1", ""), vectors[1], config, None)
    raw = await memory.get(f"pyai_caching:{NAMESPACE}:sem:{{{CONTEXT}}}")
    assert raw is not None
    doc = json.loads(raw)
    doc["items"] = [
        {"k": f"k{i}", "p": f"p{i}", "s": "", "v": base64.b64encode(vectors[i].astype("<f4").tobytes()).decode()}
        for i in range(n)
    ]
    await memory.set(f"pyai_caching:{NAMESPACE}:sem:{{{CONTEXT}}}", json.dumps(doc).encode(), ttl=None)
    await memory.set(f"pyai_caching:{NAMESPACE}:semv:{{{CONTEXT}}}", b"filled", ttl=None)
    result["document warm"] = await _timed(lambda: document.candidates(CONTEXT, query, config), rounds)
    counter = iter(range(10**9))

    async def add() -> None:
        i = next(counter)
        await document.add(CONTEXT, Item(f"new{i}", f"new prompt {i}", ""), query, config, None)

    result["document add"] = await _timed(add, max(3, rounds // 40))
    return result


@contextlib.contextmanager
def _search_server() -> Iterator[str | None]:
    """A throwaway redis-server with vector search on a free loopback port, if one is configured, else `None`."""
    executable = os.environ.get("PYAI_CACHING_SEARCH_REDIS_SERVER")
    module = os.environ.get("PYAI_CACHING_SEARCH_MODULE")
    if not executable and not module:
        yield None
        return
    directory = tempfile.mkdtemp(prefix="pyai_caching-bench-search-")
    port = _free_port()
    args = [executable or shutil.which("redis-server") or "redis-server", "--port", str(port), "--bind", "127.0.0.1"]
    args += ["--save", "", "--appendonly", "no", "--dir", directory, "--loglevel", "warning"]
    if module:
        args += ["--loadmodule", module]
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with redis.Redis(port=port, socket_timeout=1) as client:
                    client.execute_command("FT._LIST")
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("the vector-search redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)
        shutil.rmtree(directory, ignore_errors=True)


async def _search_row(url: str, n: int, dim: int, rounds: int) -> float:
    config = SemanticCache(embedder=_embed, threshold=0.99, max_candidates=3, max_entries=n)
    vectors = _vectors(n + 1, dim)
    store = RedisStore(url, socket_timeout=30.0)
    backend = SearchBackend(store, NAMESPACE, state_of(store))
    client: Any = await store.client()
    await backend.ensure_index(client, dim)
    prefix = search_hash_prefix(NAMESPACE, dim)
    async with client.pipeline(transaction=False) as pipe:
        for i in range(n):
            item = Item(f"pyai_caching:{NAMESPACE}:r:{{{i:064x}}}", f"recorded prompt number {i}", "")
            pipe.hset(f"{prefix}{{{CONTEXT}}}:{i}", mapping={"c": CONTEXT, **encode_fields(item, vectors[i])})
            if i % 1000 == 999:
                await pipe.execute()
        await pipe.execute()
    us = await _timed(lambda: backend.search(CONTEXT, vectors[n], config), rounds)
    await client.execute_command("FT.DROPINDEX", search_index_name(NAMESPACE, dim), "DD")
    await store.close()
    return us


def _fmt(us: float) -> str:
    return f"{us / 1000:,.2f} ms" if us >= 1000 else f"{us:,.0f} us"


async def main(quick: bool) -> None:
    rounds = 40 if quick else 200
    sizes = (1_000, 10_000)
    dims = (384, 1536)
    with RedisServer() as server:
        rows = [(n, dim, await _row(server.url, n, dim, rounds)) for dim in dims for n in sizes]
    columns = ["search only", "redis warm", "redis cold", "document warm", "document add"]
    with _search_server() as search_url:
        if search_url is not None:
            columns.append("redis search")
            for n, dim, result in rows:
                result["redis search"] = await _search_row(search_url, n, dim, rounds)
    print(
        f"Semantic lookup, median of {rounds} (cold/add: {max(3, rounds // 40)}) runs; "
        f"Python {platform.python_version()}, numpy {version('numpy')}, redis-py {version('redis')}, "
        f"redis-server {server_version()} on loopback; embedding time excluded.\n"
    )
    print("| entries per context | dimensions | " + " | ".join(columns) + " |")
    print("|---:|---:|" + "---:|" * len(columns))
    for n, dim, result in rows:
        print(f"| {n:,} | {dim} | " + " | ".join(_fmt(result[c]) for c in columns) + " |")


def server_version() -> str:
    import shutil
    import subprocess

    executable = shutil.which("redis-server") or "redis-server"
    out = subprocess.run([executable, "--version"], capture_output=True, text=True).stdout
    return next((p.split("=")[1] for p in out.split() if p.startswith("v=")), "?")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    asyncio.run(main(parser.parse_args().quick))
