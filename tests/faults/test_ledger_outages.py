"""The spend ledger across real Redis faults: `kill -9` and restart (with and without persistence), a 10 s outage
(paused or down), a reply lost to a timeout, a full buffer, a budget during an outage, and a process that exits
with expenses buffered. Every test counts exactly: nothing lost, nothing counted twice."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from _agents import Counter, make_agent
from _redis_servers import RedisServer
from pydantic_ai.usage import RunUsage

from pyai_caching import (
    BudgetExceededError,
    Expense,
    MemoryStore,
    ModelCosts,
    RedisSpendLedger,
    RedisStore,
    TaskBudget,
    cached_agent_run,
)

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
UNIT = Decimal("0.000001")
AOF_ALWAYS = ("--appendonly", "yes", "--appendfsync", "always")


def expense(task: str = "t", cost: Decimal = UNIT) -> Expense:
    return Expense(
        task_name=task,
        model="openai:gpt-4o",
        models=("openai:gpt-4o",),
        namespace="default",
        cost=cost,
        cost_saved=Decimal(0),
        usage=RunUsage(),
        saved_usage=RunUsage(),
        requests=1,
        hits=0,
        misses=1,
        started_at=datetime.now(UTC),
    )


class Writers:
    """Concurrent tasks that record one expense each every `pace` seconds until stopped, and count them."""

    def __init__(self, ledger: RedisSpendLedger, *, tasks: int = 20, pace: float = 0.002) -> None:
        self.ledger, self.tasks, self.pace = ledger, tasks, pace
        self.recorded = 0
        self._stop = asyncio.Event()
        self._reached = asyncio.Event()
        self._target = 0
        self._running: list[asyncio.Task[None]] = []

    def start(self) -> None:
        self._stop.clear()
        self._running = [asyncio.create_task(self._write()) for _ in range(self.tasks)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._running)

    async def until(self, count: int) -> None:
        """Return once `count` expenses have been recorded in all."""
        self._target, self._reached = count, asyncio.Event()
        if self.recorded < count:
            await asyncio.wait_for(self._reached.wait(), 60)

    async def _write(self) -> None:
        while not self._stop.is_set():
            self.recorded += 1
            if self.recorded >= self._target:
                self._reached.set()
            await self.ledger.record(expense())  # never raises on a Redis failure
            await asyncio.sleep(self.pace)


async def calls_in_ledger(ledger: RedisSpendLedger) -> int:
    return sum(row.calls for row in await ledger.read(total=True))


async def cost_in_ledger(ledger: RedisSpendLedger) -> Decimal:
    return sum((row.cost for row in await ledger.read(total=True)), Decimal(0))


def ledger_lines(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and text in r.getMessage()]


def assert_no_traceback(caplog: pytest.LogCaptureFixture) -> None:
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


async def test_kill_9_and_restart_with_appendfsync_always_loses_and_doubles_nothing(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pyai_caching")
    server = redis_server_factory(*AOF_ALWAYS)
    ledger = RedisSpendLedger(server.url())
    writers = Writers(ledger)
    writers.start()
    await writers.until(400)
    await asyncio.to_thread(server.kill)  # while 20 writers write: some writes were sent and never answered
    await asyncio.to_thread(server.start)  # back within a second, with what its AOF holds
    await writers.until(writers.recorded + 400)
    await writers.stop()

    assert await ledger.flush() == 0
    assert await calls_in_ledger(ledger) == writers.recorded
    assert await cost_in_ledger(ledger) == writers.recorded * UNIT
    status = ledger.status()
    assert status.written + status.duplicates == writers.recorded
    assert status.buffered > 0, "the fault was felt"
    assert len(ledger_lines(caplog, "cannot be written")) == 1, "one warning per outage"
    assert len(ledger_lines(caplog, "is back:")) == 1
    assert_no_traceback(caplog)


async def test_kill_9_without_persistence_keeps_everything_the_dead_server_had_not_acknowledged(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    """A Redis without persistence forgets what it acknowledged when it dies: no client can keep that. Everything
    else (never sent, sent and unanswered, recorded while it was down) is written once it is back."""
    server = redis_server_factory()
    ledger = RedisSpendLedger(server.url())
    writers = Writers(ledger)
    writers.start()
    await writers.until(400)
    await asyncio.to_thread(server.kill)
    await writers.until(writers.recorded + 200)  # recorded while it is down: buffered
    await writers.stop()
    status = ledger.status()
    died_with_the_server = status.written + status.duplicates  # every call has returned: all acknowledged by it
    assert 0 < died_with_the_server < writers.recorded

    await asyncio.to_thread(server.start)  # empty
    writers.start()
    await writers.until(writers.recorded + 400)
    await writers.stop()
    assert await ledger.flush() == 0
    assert await calls_in_ledger(ledger) == writers.recorded - died_with_the_server


@pytest.mark.slow
@pytest.mark.parametrize("outage", ["paused", "down"])
async def test_a_10_s_outage_loses_and_doubles_nothing(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture, outage: str
) -> None:
    """Paused (SIGSTOP): writes in flight are applied when it resumes, after their sender timed out and buffered
    them, so their retries must be recognized. Down: killed, and restarted 10 s later from its AOF."""
    caplog.set_level(logging.DEBUG, logger="pyai_caching")
    server = redis_server_factory(*AOF_ALWAYS)
    ledger = RedisSpendLedger(server.url())
    writers = Writers(ledger, pace=0.01)
    writers.start()
    await writers.until(300)
    await asyncio.to_thread(server.pause if outage == "paused" else server.kill)
    await asyncio.sleep(10)  # the outage itself, while the writers go on
    await asyncio.to_thread(server.resume if outage == "paused" else server.start)
    await writers.until(writers.recorded + 300)
    await writers.stop()

    assert await ledger.flush(max_wait=60) == 0
    assert await calls_in_ledger(ledger) == writers.recorded
    assert ledger.status().buffered > 1_000
    assert len(ledger_lines(caplog, "cannot be written")) == 1
    assert len(ledger_lines(caplog, "is back:")) == 1
    assert_no_traceback(caplog)


async def test_a_write_whose_reply_was_lost_is_not_counted_twice(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    ledger = RedisSpendLedger(store=RedisStore(server.url(), socket_timeout=0.3))
    await ledger.record(expense())  # connected, script loaded
    await asyncio.to_thread(server.pause)
    await ledger.record(expense())  # sent; the server will run it when it resumes, but the reply never comes
    assert ledger.status().pending == 1
    await asyncio.to_thread(server.resume)
    assert await ledger.flush() == 0
    assert await calls_in_ledger(ledger) == 2
    assert ledger.status().duplicates == 1, "the retry found its marker: the server had applied the first send"


async def test_a_full_buffer_drops_counts_and_warns_once(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pyai_caching")
    server = redis_server_factory(*AOF_ALWAYS)
    ledger = RedisSpendLedger(server.url(), max_pending=10)
    await ledger.record(expense())
    await asyncio.to_thread(server.kill)
    for _ in range(25):
        await ledger.record(expense(cost=Decimal("0.5")))
    status = ledger.status()
    assert (status.pending, status.dropped, status.dropped_cost) == (10, 15, Decimal("7.5"))
    assert len(ledger_lines(caplog, "buffer is full")) == 1
    await asyncio.to_thread(server.start)
    assert await ledger.flush() == 0
    assert await calls_in_ledger(ledger) == 11
    [back] = ledger_lines(caplog, "is back:")
    assert "10 buffered expense(s) written" in back
    assert "15 expense(s) ($7.500000) were dropped" in back


async def test_a_budget_counts_what_an_outage_buffered(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """$0.001 per miss, a $0.010 budget: 6 calls, a kill -9, 3 calls while Redis is down (allowed, buffered), a
    restart: exactly one more call is allowed (0.009 < 0.010), then the budget is reached."""
    caplog.set_level(logging.DEBUG, logger="pyai_caching")
    server = redis_server_factory(*AOF_ALWAYS)
    budget = TaskBudget("0.010", RedisSpendLedger(server.url()))
    counter = Counter()
    agent = make_agent(counter)
    options = {"store": MemoryStore(), "budget": budget, "custom_costs": {"test-model": ModelCosts(8, 10)}}
    # 100 input tokens at $8/M + 20 output tokens at $10/M = $0.001 per miss

    async def call(n: int) -> None:
        await cached_agent_run(agent, f"prompt {n}", "triage", **options)

    for n in range(6):
        await call(n)
    await asyncio.to_thread(server.kill)
    for n in range(6, 9):
        await call(n)  # the budget cannot be read: allowed (on_ledger_error="allow"), one warning for all three
    assert len(ledger_lines(caplog, "could not be read")) == 1
    await asyncio.to_thread(server.start)
    assert await budget.ledger.spent("triage") == Decimal("0.009")  # the buffered three included, flushed or not
    await call(9)
    with pytest.raises(BudgetExceededError):
        await call(10)
    assert counter.calls == 10
    assert await budget.ledger.flush() == 0
    assert await cost_in_ledger(budget.ledger) == Decimal("0.010")


EXITING_WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from decimal import Decimal
    from pydantic_ai.usage import RunUsage
    from pyai_caching import Expense, RedisSpendLedger

    ledger = RedisSpendLedger(sys.argv[1])
    expense = Expense(
        task_name="exit", model="m", models=("m",), namespace="default", cost=Decimal("0.25"),
        cost_saved=Decimal(0), usage=RunUsage(), saved_usage=RunUsage(), requests=1, hits=0, misses=1,
        started_at=datetime.now(UTC),
    )

    async def main() -> None:
        for _ in range(3):
            await ledger.record(expense)

    asyncio.run(main())
    print(ledger.status().pending, flush=True)
    sys.stdin.readline()  # the test restarts Redis (or not) before this process exits
    """
)


@pytest.mark.parametrize("back_before_exit", [True, False])
def test_expenses_buffered_at_exit_are_written_or_reported(
    redis_server_factory: Callable[..., RedisServer], back_before_exit: bool
) -> None:
    server = redis_server_factory(*AOF_ALWAYS)
    server.kill()
    child = subprocess.Popen(
        [sys.executable, "-c", EXITING_WRITER, server.url()],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == b"3\n"
        if back_before_exit:
            server.start()
        _, err = child.communicate(b"exit\n", timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err.decode()
    if not back_before_exit:
        assert b"3 expense(s) ($0.750000) could not be written to the spend ledger" in err
        return
    assert b"could not be written to the spend ledger" not in err
    with server.client() as client:
        calls = client.hget("pyai_caching_ledger:{v1}:total", "default|exit|m|calls")
    assert calls == b"3"
