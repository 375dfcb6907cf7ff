"""What recording misses for `pyai-caching explain` costs a miss: `python benchmarks/explain_overhead.py`.

A miss's own overhead is what a cached miss costs beyond a direct `agent.run` (lookups, the fill lock, encoding
and writing the entries). Recording the miss adds: queueing it on the miss path (`note_miss`), then, in the
background, its fingerprint and a share of one page write. The target: under 5% of the miss's own overhead.

Each round runs, in turn (the order rotating from round to round): direct `agent.run`s, cached misses with
`explain_misses=False`, and cached misses with `explain_misses=True`, every call with a new prompt (so every cached
call misses), through a `FunctionModel` that answers at once, on Redis (a throwaway `redis-server` on a free
loopback port) and on `LocalStore` (a temporary folder). Two agents: the benchmark's tool-less profile agent
(structured output, one request), and the same agent continuing a 20-message conversation (a bigger fingerprint).

Two measures per variant:

* **wall**: the median time of one call (what the caller waits for: the critical path);
* **CPU**: the process's CPU time (every thread: SQLite runs in worker threads) for the whole batch, divided by
  the number of calls; for `explain_misses=True` the batch ends with `await flush_misses()`, so the fingerprints
  and page writes done in the background are counted too.

The table shows medians over the rounds; the overhead and the cost are medians of the differences within each
round (the variants of a round run back to back, so a burst of load on the machine hits them alike). On a shared
machine single figures move a lot. A second table measures each piece of the work alone (queueing, fingerprint,
page write), which is precise where the difference of two noisy figures is not.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from statistics import median
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # a fresh clone: import the package from the source tree
    sys.path.insert(1, str(_HERE.parent))

from _scenarios import PROMPT, history, make_agents, reference_loop_ms  # noqa: E402
from _server import RedisServer  # noqa: E402

from pyai_caching import LocalStore, MemoryStore, RedisStore, ResponseCache, cached_agent_run  # noqa: E402
from pyai_caching.engine import ports  # noqa: E402
from pyai_caching.engine.canonical import CanonicalRequest  # noqa: E402
from pyai_caching.explain import flush_misses, note_miss  # noqa: E402
from pyai_caching.explain.fingerprint import fingerprint  # noqa: E402
from pyai_caching.explain.log import PER_PAGE, miss_key  # noqa: E402
from pyai_caching.stores import Store  # noqa: E402

VARIANTS = ("direct", "off", "on")
SCENARIOS: dict[str, list[Any]] = {"profile agent": [], "20-message conversation": history(20)}
_serial = itertools.count()


def _prompt() -> str:
    return f"{PROMPT} (request {next(_serial)})"


async def _batch(call: Callable[[], Awaitable[Any]], n: int, *, flush: bool) -> tuple[float, float]:
    """Run `call` `n` times: (median wall time of one call, process CPU time per call), in microseconds."""
    times: list[float] = []
    cpu_start = time.process_time()
    for _ in range(n):
        start = time.perf_counter()
        await call()
        times.append(time.perf_counter() - start)
    if flush:
        await flush_misses()
    cpu = (time.process_time() - cpu_start) / n
    return median(times) * 1e6, cpu * 1e6


def _calls(store: Store, messages: list[Any]) -> dict[str, Callable[[], Awaitable[Any]]]:
    agent = make_agents().profile
    extra: dict[str, Any] = {"message_history": messages} if messages else {}

    async def direct() -> Any:
        return (await agent.run(_prompt(), **extra)).output

    async def off() -> Any:
        return await cached_agent_run(agent, _prompt(), "bench", store=store, explain_misses=False, **extra)

    async def on() -> Any:
        return await cached_agent_run(agent, _prompt(), "bench", store=store, explain_misses=True, **extra)

    return {"direct": direct, "off": off, "on": on}


Results = dict[tuple[str, str, str], list[tuple[float, float]]]


async def _bench(url: str, local_dir: str, rounds: int, n: int) -> tuple[Results, dict[str, float]]:
    stores: dict[str, Store] = {"Redis": RedisStore(url), "LocalStore": LocalStore(local_dir)}
    results: Results = {}
    plans = {(s, a): _calls(store, messages) for s, store in stores.items() for a, messages in SCENARIOS.items()}
    for calls in plans.values():  # warm up: first calls build schemas and connections
        for variant in VARIANTS:
            await _batch(calls[variant], 20, flush=variant == "on")
    for r in range(rounds):
        print(f"round {r + 1}/{rounds}", file=sys.stderr)
        order = VARIANTS[r % 3 :] + VARIANTS[: r % 3]
        for (store_name, agent_name), calls in plans.items():
            for variant in order:
                figure = await _batch(calls[variant], n, flush=variant == "on")
                results.setdefault((store_name, agent_name, variant), []).append(figure)
    breakdown = await _parts(stores)
    for store in stores.values():
        await store.close()
    return results, breakdown


async def _capture(store: Store) -> dict[str, CanonicalRequest]:
    """The canonical request of one miss of each agent (what the miss log fingerprints)."""
    captured: list[CanonicalRequest] = []

    def capture(cache: Any, key: str, canonical: CanonicalRequest, model: str) -> None:
        captured.append(canonical)

    ports.miss_listeners.append(capture)
    try:
        for messages in SCENARIOS.values():
            await _calls(store, messages)["off"]()
    finally:
        ports.miss_listeners.remove(capture)
    return dict(zip(SCENARIOS, captured, strict=True))


async def _parts(stores: dict[str, Store], n: int = 2000) -> dict[str, float]:
    """CPU time (us) of each piece of the work, measured alone (thread CPU; process CPU for store writes, which
    `LocalStore` does in a worker thread)."""
    canonicals = await _capture(stores["LocalStore"])
    out: dict[str, float] = {}
    cache = ResponseCache(store=MemoryStore(), task_name="bench")
    canonical = canonicals["profile agent"]
    start = time.thread_time()
    for i in range(n):  # queueing only: the writer does not run until this loop yields
        note_miss(cache, f"key {i}", canonical, "function:profile-model")
    out["queue"] = (time.thread_time() - start) / n * 1e6
    await flush_misses()
    for name, canonical in canonicals.items():
        start = time.thread_time()
        for _ in range(n):
            fingerprint(canonical.to_json_obj())
        out[f"fingerprint {name}"] = (time.thread_time() - start) / n * 1e6
    for name, canonical in canonicals.items():
        item = {"at": time.time(), "key": "k" * 90, "task": "bench", "model": "function:profile-model",
                "version": None, "fp": fingerprint(canonical.to_json_obj())}  # fmt: skip
        page = json.dumps({"kind": "misses", "version": 1, "misses": [item] * PER_PAGE}).encode()
        out[f"page bytes {name}"] = len(page)
        for store_name, store in stores.items():
            start = time.process_time()
            for i in range(n // 4):
                await store.set(miss_key("bench-pages", i % 32), page, ttl=60)
            out[f"page write {store_name} {name}"] = (time.process_time() - start) / (n // 4) * 1e6
    return out


def _table(results: Results) -> str:
    header = (
        "store",
        "agent",
        "measure",
        "direct run",
        "miss, explain off",
        "miss, explain on",
        "miss overhead (off - direct)",
        "cost of explain (on - off)",
        "share of the overhead",
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    keys = sorted({(s, a) for s, a, _ in results}, key=lambda k: (k[0] != "Redis", k[1]))
    for store_name, agent_name in keys:
        for index, measure in ((0, "wall, median call"), (1, "CPU per call, incl. background")):
            rounds = [results[(store_name, agent_name, v)] for v in VARIANTS]
            direct, off, on = (median(f[index] for f in figures) for figures in rounds)
            # Differences within each round (the variants of one round ran back to back), then their medians.
            overhead = median(o[index] - d[index] for d, o in zip(rounds[0], rounds[1], strict=True))
            cost = median(n[index] - o[index] for o, n in zip(rounds[1], rounds[2], strict=True))
            share = f"{cost / overhead:+.1%}" if overhead > 0 else "n/a"
            lines.append(
                f"| {store_name} | {agent_name} | {measure} | {direct:,.0f} us | {off:,.0f} us | {on:,.0f} us | "
                f"{overhead:,.0f} us | {cost:+,.0f} us | {share} |"
            )
    return "\n".join(lines)


def _parts_table(results: Results, parts: dict[str, float]) -> str:
    """Each piece of the work, per miss, against the miss's own overhead (CPU, from the first table)."""
    header = (
        "store",
        "agent",
        "queueing (miss path)",
        "fingerprint (background)",
        f"page write / {PER_PAGE} (background)",
        "total per miss",
        "miss overhead (CPU)",
        "share",
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for store_name in ("Redis", "LocalStore"):
        for agent_name in SCENARIOS:
            direct_rounds, off_rounds = (results[(store_name, agent_name, v)] for v in VARIANTS[:2])
            overhead = median(o[1] - d[1] for d, o in zip(direct_rounds, off_rounds, strict=True))
            queue, fp = parts["queue"], parts[f"fingerprint {agent_name}"]
            write = parts[f"page write {store_name} {agent_name}"] / PER_PAGE
            total = queue + fp + write
            share = f"{total / overhead:.1%}" if overhead > 0 else "n/a"
            lines.append(
                f"| {store_name} | {agent_name} | {queue:.1f} us | {fp:.0f} us | {write:.0f} us | {total:.0f} us | "
                f"{overhead:,.0f} us | {share} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=15, help="rounds (default 15)")
    parser.add_argument("--calls", type=int, default=100, help="calls per variant and round (default 100)")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be at least 1")
    for name in ("LLM_CACHE_REDIS_URL", "LLM_CACHE_SECRET", "LLM_CACHE_DIR"):
        os.environ.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="pyai_caching-bench-explain-") as local_dir, RedisServer() as server:
        print(f"explain overhead: {args.rounds} rounds of {args.calls} calls per variant", file=sys.stderr)
        cpu_before = reference_loop_ms()
        results, parts = asyncio.run(_bench(server.url, local_dir, args.rounds, args.calls))
        cpu_after = reference_loop_ms()
    print()
    print(
        f"Medians of {args.rounds} interleaved rounds of {args.calls} calls per variant. CPU speed: a 1,000,000-"
        f"iteration Python loop took {cpu_before:.0f} ms before and {cpu_after:.0f} ms after the run."
    )
    print()
    print("A/B: the same misses with explain_misses off and on")
    print()
    print(_table(results))
    print()
    print("The pieces, each measured alone (CPU per miss)")
    print()
    print(_parts_table(results, parts))
    print()
    sizes = ", ".join(f"{parts[f'page bytes {name}'] / 1024:.1f} KiB ({name})" for name in SCENARIOS)
    print(f"A full page of {PER_PAGE} misses: {sizes}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
