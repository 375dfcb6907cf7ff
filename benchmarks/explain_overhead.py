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
machine single figures move a lot. A second table measures the miss log's own CPU inside real misses
(`note_miss`; every step the event loop runs of the writer task: fingerprints, encoding, the store client's
work; and the worker-thread CPU of `LocalStore`'s operations on miss-log keys), which is precise where the
difference of two noisy figures is not.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from statistics import median
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # a fresh clone: import the package from the source tree
    sys.path.insert(1, str(_HERE.parent))

from _scenarios import PROMPT, history, make_agents, reference_loop_ms  # noqa: E402
from _server import RedisServer  # noqa: E402

from pyai_caching import (  # noqa: E402
    LocalStore,
    RedisStore,
    cached_agent_run,
    capability,
)
from pyai_caching.explain import flush_misses  # noqa: E402
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


Accounts = dict[tuple[str, str], tuple[float, float, float]]


async def _bench(url: str, local_dir: str, rounds: int, n: int) -> tuple[Results, Accounts]:
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
    breakdown = await _account(stores, 4 * n)
    for store in stores.values():
        await store.close()
    return results, breakdown


class _Accounting:
    """CPU time spent by the miss log inside real misses: in `note_miss` (on the miss path) and in every step the
    event loop runs of the writer task (fingerprints, encoding, the store's client), in thread CPU time.

    Timing every step of the loop slows the run a little, so this runs in batches of its own, after the A/B.
    """

    def __init__(self) -> None:
        self.queue = 0.0
        self.writer = 0.0
        self.threads = 0.0
        """`LocalStore` runs SQLite in worker threads: the thread CPU of its operations on miss-log keys."""
        self._lock = threading.Lock()

    @contextmanager
    def active(self) -> Iterator[None]:
        run_step = asyncio.Handle._run
        note = capability.note_miss  # type: ignore[attr-defined]

        def timed_step(handle: asyncio.Handle) -> None:
            start = time.thread_time()
            try:
                run_step(handle)
            finally:
                owner = getattr(getattr(handle, "_callback", None), "__self__", None)
                if isinstance(owner, asyncio.Task) and owner.get_name() == "pyai_caching-miss-log":
                    self.writer += time.thread_time() - start

        def timed_note(*args: Any) -> None:
            start = time.thread_time()
            try:
                note(*args)
            finally:
                self.queue += time.thread_time() - start

        locked = LocalStore._locked

        def timed_locked(store: LocalStore, operation: Any, *args: Any) -> Any:
            start = time.thread_time()
            try:
                return locked(store, operation, *args)
            finally:
                if args and isinstance(args[0], str) and ":miss:" in args[0]:
                    with self._lock:
                        self.threads += time.thread_time() - start

        asyncio.Handle._run = timed_step  # type: ignore[method-assign,assignment]
        setattr(capability, "note_miss", timed_note)  # noqa: B010
        setattr(LocalStore, "_locked", timed_locked)  # noqa: B010
        try:
            yield
        finally:
            asyncio.Handle._run = run_step  # type: ignore[method-assign]
            setattr(capability, "note_miss", note)  # noqa: B010
            setattr(LocalStore, "_locked", locked)  # noqa: B010


async def _account(stores: dict[str, Store], n: int) -> dict[tuple[str, str], tuple[float, float, float]]:
    """Per store and agent: (queueing, writer, store threads) CPU per miss in microseconds, over `n` misses."""
    out: dict[tuple[str, str], tuple[float, float, float]] = {}
    for store_name, store in stores.items():
        for agent_name, messages in SCENARIOS.items():
            call = _calls(store, messages)["on"]
            await _batch(call, 20, flush=True)
            accounting = _Accounting()
            with accounting.active():
                await _batch(call, n, flush=True)
            per_miss = (accounting.queue / n * 1e6, accounting.writer / n * 1e6, accounting.threads / n * 1e6)
            out[(store_name, agent_name)] = per_miss
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


def _parts_table(results: Results, accounts: Accounts) -> str:
    """The miss log's own CPU per miss, measured inside real misses, against the miss's own overhead (CPU)."""
    header = (
        "store",
        "agent",
        "queueing (on the miss path)",
        "writer task (background)",
        "store threads (background)",
        "total per miss",
        "miss overhead (CPU, A/B)",
        "share",
    )
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for (store_name, agent_name), (queue, writer, threads) in accounts.items():
        direct_rounds, off_rounds = (results[(store_name, agent_name, v)] for v in VARIANTS[:2])
        overhead = median(o[1] - d[1] for d, o in zip(direct_rounds, off_rounds, strict=True))
        total = queue + writer + threads
        share = f"{total / overhead:.1%}" if overhead > 0 else "n/a"
        lines.append(
            f"| {store_name} | {agent_name} | {queue:.1f} us | {writer:.0f} us | {threads:.0f} us | {total:.0f} us | "
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
        results, accounts = asyncio.run(_bench(server.url, local_dir, args.rounds, args.calls))
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
    print("The miss log's own CPU, measured inside the misses (note_miss, its writer task, LocalStore's threads)")
    print()
    print(_parts_table(results, accounts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
