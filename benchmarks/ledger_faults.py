"""The spend ledger under Redis faults: `python benchmarks/ledger_faults.py` (about a minute; `--quick`: 20 s).

Every scenario starts its own throwaway `redis-server` (a free loopback port, a temporary folder; never the system
Redis), lets 50 concurrent writers record expenses into one `RedisSpendLedger` (each one every 10 ms at most, up to
5,000 a second in all), injects one fault while they
write, lets them write on, flushes what the ledger buffered, and counts what the ledger holds against what was
recorded. Prints one Markdown table:

* **recorded**: `ledger.record(...)` calls made (one expense each, $0.000001, so cost and count agree);
* **expected**: what the ledger must hold: everything recorded, except (without persistence) the expenses the old
  server had acknowledged when it was killed: they died with its memory, which no client can prevent;
* **in ledger**: `calls` in the all-time totals after the run; **lost** and **double** compare it with expected;
* **dropped**: expenses the ledger dropped, counted and logged because its buffer (`max_pending`) was full;
* **warnings**: warning lines the `pyai_caching` logger wrote; **tracebacks**: log records with one.

Run it on an older version of the package (`PYTHONPATH=/path/to/old/checkout`) to compare: a ledger without
`status()` and `flush()` counts the writes that raised as not acknowledged.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_ROOT / "tests"))  # the tests' throwaway-server helper (kill -9, SIGSTOP, restart)
try:
    import pyai_caching  # noqa: F401  (an installed or PYTHONPATH version wins)
except ImportError:  # a fresh clone: the package in the source tree
    sys.path.insert(1, str(_ROOT))

from _redis_servers import RedisServer  # noqa: E402
from pydantic_ai.usage import RunUsage  # noqa: E402

from pyai_caching import Expense, RedisSpendLedger  # noqa: E402

UNIT = Decimal("0.000001")
WRITERS = 50
PACE = 0.01
"""Seconds each writer waits between two expenses (a call to a model takes far longer): at most 5,000 a second."""


@dataclass
class Row:
    scenario: str
    recorded: int
    expected: int
    in_ledger: int
    dropped: int
    warnings: int
    tracebacks: int
    seconds: float


class Counting(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.warnings = 0
        self.tracebacks = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.warnings += record.levelno >= logging.WARNING
        self.tracebacks += record.exc_info is not None


def expense() -> Expense:
    return Expense(
        task_name="bench",
        model="openai:gpt-4o",
        models=("openai:gpt-4o",),
        namespace="default",
        cost=UNIT,
        cost_saved=Decimal(0),
        usage=RunUsage(),
        saved_usage=RunUsage(),
        requests=1,
        hits=0,
        misses=1,
        started_at=datetime.now(UTC),
    )


class Writers:
    """`WRITERS` tasks recording expenses until stopped; counts the calls and the acknowledged ones (old API)."""

    def __init__(self, ledger: RedisSpendLedger) -> None:
        self.ledger = ledger
        self.recorded = 0
        self.returned = 0
        self._stop = asyncio.Event()
        self._reached = asyncio.Event()
        self._target = 0
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._stop.clear()
        self._tasks = [asyncio.create_task(self._write()) for _ in range(WRITERS)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def until(self, count: int) -> None:
        self._target, self._reached = count, asyncio.Event()
        if self.recorded >= count:
            return
        await self._reached.wait()

    async def _write(self) -> None:
        while not self._stop.is_set():
            self.recorded += 1
            if self.recorded >= self._target:
                self._reached.set()
            try:
                await self.ledger.record(expense())
            except Exception:  # an older ledger raises: the engine logs it (with its traceback) and moves on
                logging.getLogger("pyai_caching").warning("expense hook failed", exc_info=True)
                continue
            self.returned += 1
            await asyncio.sleep(PACE)


def acknowledged(ledger: Any, writers: Writers) -> int:
    status = getattr(ledger, "status", None)
    if status is None:
        return writers.returned
    now = status()
    return int(now.written + now.duplicates)


async def run(name: str, persistence: bool, fault: str, batch: int, max_pending: int | None) -> Row:
    args = ("--appendonly", "yes", "--appendfsync", "always") if persistence else ()
    server = RedisServer(*args)
    server.start()
    counting = Counting()
    logging.getLogger("pyai_caching").addHandler(counting)
    started = time.monotonic()
    try:
        ledger = RedisSpendLedger(server.url(), **({"max_pending": max_pending} if max_pending else {}))
        writers = Writers(ledger)
        writers.start()
        await writers.until(batch)
        lost_with_server = 0
        if fault == "kill":
            await asyncio.to_thread(server.kill)
            if not persistence:  # what the old server acknowledged died with it: count it, then go on
                await writers.stop()
                lost_with_server = acknowledged(ledger, writers)
                writers.start()
            await asyncio.to_thread(server.start)
        elif fault == "pause":
            await asyncio.to_thread(server.pause)
            await asyncio.sleep(10)
            await asyncio.to_thread(server.resume)
        elif fault == "down":
            await asyncio.to_thread(server.kill)
            await asyncio.sleep(10)
            await asyncio.to_thread(server.start)
        await writers.until(writers.recorded + batch)
        await writers.stop()
        flush = getattr(ledger, "flush", None)
        if flush is not None:
            await flush(max_wait=60)
        with server.client() as client:
            raw = client.hget("pyai_caching_ledger:{v1}:total", "default|bench|openai:gpt-4o|calls")
        return Row(
            name,
            writers.recorded,
            writers.recorded - lost_with_server,
            int(raw or 0),
            ledger.status().dropped if hasattr(ledger, "status") else 0,
            counting.warnings,
            counting.tracebacks,
            time.monotonic() - started,
        )
    finally:
        logging.getLogger("pyai_caching").removeHandler(counting)
        server.close()


SCENARIOS = (
    ("kill -9, restart at once, appendfsync always", True, "kill", None),
    ("kill -9, restart at once, no persistence", False, "kill", None),
    ("paused (SIGSTOP) 10 s", False, "pause", None),
    ("killed, down 10 s, restarted (appendfsync always)", True, "down", None),
    ("killed, down 10 s, restarted, max_pending=5,000", True, "down", 5000),
)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="only the two kill -9 scenarios")
    parser.add_argument("--batch", type=int, default=3000, help="expenses recorded before and after the fault")
    options = parser.parse_args()
    logging.getLogger("pyai_caching").setLevel(logging.DEBUG)
    logging.getLogger("pyai_caching").propagate = False
    rows = []
    for name, persistence, fault, max_pending in SCENARIOS[:2] if options.quick else SCENARIOS:
        if max_pending and not hasattr(RedisSpendLedger, "status"):
            continue  # an older ledger has no buffer
        print(f"running: {name}", file=sys.stderr)
        rows.append(await run(name, persistence, fault, options.batch, max_pending))
    print("| scenario | recorded | expected | in ledger | lost | of which dropped (counted) | double | warnings "
          "| tracebacks | time |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        lost, double = max(r.expected - r.in_ledger, 0), max(r.in_ledger - r.expected, 0)
        print(
            f"| {r.scenario} | {r.recorded:,} | {r.expected:,} | {r.in_ledger:,} | {lost:,} | {r.dropped:,} "
            f"| {double:,} | {r.warnings} | {r.tracebacks} | {r.seconds:.1f} s |"
        )


if __name__ == "__main__":
    asyncio.run(main())
