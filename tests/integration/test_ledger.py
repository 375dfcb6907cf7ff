"""`RedisSpendLedger` against throwaway redis-servers: schema, reads, and concurrent writers in several processes."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic_ai.usage import RunUsage

from pyai_caching import (
    ConfigurationError,
    Expense,
    MemoryStore,
    ModelCosts,
    RedisSpendLedger,
    cached_agent_run,
    clear_cache_async,
    read_ledger,
    read_ledger_async,
)
from pyai_caching.spend.recorders import LEDGER_KEY_PREFIX, LedgerStatus

ROOT = Path(__file__).resolve().parents[2]
DAY = date(2025, 3, 14)
"""The (UTC) day the expenses of these tests are dated: fixed, so no test depends on when it runs. Reads name their
days (`since`, `until`, `today=`); the tests of the default window read the clock once, before they write."""


def expense(
    *,
    task: str = "triage",
    model: str = "openai:gpt-4o",
    namespace: str = "default",
    cost: Decimal | None = Decimal("0.001"),
    saved: Decimal | None = Decimal(0),
    hits: int = 0,
    misses: int = 1,
    day: date = DAY,
    error: str | None = None,
    unpriced_requests: int = 0,
) -> Expense:
    return Expense(
        task_name=task,
        model=model,
        models=(model,),
        namespace=namespace,
        cost=cost,
        cost_saved=saved,
        usage=RunUsage(),
        saved_usage=RunUsage(),
        requests=hits + misses,
        hits=hits,
        misses=misses,
        unpriced_requests=unpriced_requests,
        started_at=datetime(day.year, day.month, day.day, 12, tzinfo=UTC),
        error=error,
    )


async def test_one_expense_is_one_set_of_documented_fields(redis_url: str, redis_client: redis.Redis) -> None:
    ledger = RedisSpendLedger(redis_url)
    await ledger.record(expense(cost=Decimal("0.0123456789"), saved=Decimal("0.5"), hits=2, misses=1))
    day_key = f"{LEDGER_KEY_PREFIX}day:{DAY.isoformat()}"
    stored = {k.decode(): int(v) for k, v in redis_client.hgetall(day_key).items()}
    prefix = "default|triage|openai:gpt-4o|"
    assert stored == {
        prefix + "cost_nusd": 12_345_679,  # nano-USD, rounded half-even
        prefix + "saved_nusd": 500_000_000,
        prefix + "calls": 1,
        prefix + "requests": 3,
        prefix + "hits": 2,
        prefix + "misses": 1,
    }
    assert {k.decode(): int(v) for k, v in redis_client.hgetall(f"{LEDGER_KEY_PREFIX}total").items()} == stored
    assert redis_client.ttl(day_key) == -1  # kept unless retention_days is set


async def test_ledger_keys_survive_clearing_the_cache(redis_url: str, redis_client: redis.Redis) -> None:
    await RedisSpendLedger(redis_url).record(expense())
    await clear_cache_async(redis_url)
    assert redis_client.exists(f"{LEDGER_KEY_PREFIX}total") == 1


async def test_rows_sum_per_day_namespace_task_and_model(redis_url: str) -> None:
    ledger = RedisSpendLedger(redis_url)
    yesterday = DAY - timedelta(days=1)
    for item in [
        expense(cost=Decimal("0.001")),
        expense(cost=Decimal("0.002"), error="RateLimitError"),
        expense(cost=Decimal(0), saved=Decimal("0.003"), hits=1, misses=0),
        expense(model="anthropic:claude-sonnet-4-5", cost=Decimal("0.01")),
        expense(task="summarize", cost=Decimal("0.02")),
        expense(namespace="tenant-b", cost=Decimal("0.04")),
        expense(day=yesterday, cost=Decimal("0.08")),
        expense(model="acme:llm", cost=None, unpriced_requests=1),
    ]:
        await ledger.record(item)

    rows = await ledger.read(since=yesterday, until=DAY)
    table = {(r.day, r.namespace, r.task, r.model): r for r in rows}
    assert len(rows) == 6
    triage = table[(DAY, "default", "triage", "openai:gpt-4o")]
    assert (triage.cost, triage.saved) == (Decimal("0.003"), Decimal("0.003"))
    assert (triage.calls, triage.requests, triage.hits, triage.misses, triage.errors) == (3, 3, 1, 2, 1)
    assert table[(DAY, "default", "triage", "anthropic:claude-sonnet-4-5")].cost == Decimal("0.01")
    assert table[(DAY, "default", "summarize", "openai:gpt-4o")].cost == Decimal("0.02")
    assert table[(DAY, "tenant-b", "triage", "openai:gpt-4o")].cost == Decimal("0.04")
    assert table[(yesterday, "default", "triage", "openai:gpt-4o")].cost == Decimal("0.08")
    unpriced = table[(DAY, "default", "triage", "acme:llm")]
    assert (unpriced.cost, unpriced.unpriced_requests, unpriced.calls) == (Decimal(0), 1, 1)
    assert rows == sorted(rows, key=lambda r: (r.day, r.namespace, r.task, r.model))

    assert [r.day for r in await ledger.read(until=DAY)] == [yesterday] + [DAY] * 5  # default: 30 days to `until`
    assert len(await ledger.read(since=DAY, until=DAY)) == 5
    assert {r.task for r in await ledger.read(since=yesterday, until=DAY, task="summarize")} == {"summarize"}
    assert {r.namespace for r in await ledger.read(yesterday, DAY, namespace="tenant-b")} == {"tenant-b"}

    totals = await ledger.read(total=True)
    assert all(r.day is None for r in totals)
    assert {(r.task, r.model): r.cost for r in totals if r.namespace == "default"}[("triage", "openai:gpt-4o")] == (
        Decimal("0.083")
    )
    assert await ledger.spent("triage", today=DAY) == Decimal("0.013")
    assert await ledger.spent("triage", period="month", today=DAY) == Decimal("0.093")
    assert await ledger.spent("triage", period="month", today=DAY.replace(month=4, day=1)) == 0
    assert await ledger.spent("triage", period="total") == Decimal("0.093")
    assert await ledger.spent("triage", namespace="tenant-b", today=DAY) == Decimal("0.04")


async def test_reads_default_to_the_30_days_that_end_today(redis_url: str) -> None:
    ledger = RedisSpendLedger(redis_url)
    today = datetime.now(UTC).date()  # read once: the run may cross midnight, so each check allows for one more day
    for age in (0, 28, 40):
        await ledger.record(expense(day=today - timedelta(days=age), cost=Decimal(age + 1) / 1000))
    assert [r.day for r in await ledger.read()] == [today - timedelta(days=28), today]
    before = datetime.now(UTC).date()
    spent_today = await ledger.spent("triage")  # today in UTC, whatever the local time zone says
    if before == datetime.now(UTC).date():  # else midnight passed during the call: either answer is right
        assert spent_today == (Decimal("0.001") if before == today else 0)
    assert await ledger.spent("triage", period="total") == Decimal("0.071")


async def test_names_with_separators_round_trip(redis_url: str) -> None:
    ledger = RedisSpendLedger(redis_url)
    await ledger.record(expense(task="a|b%7C|c", model="custom:model|v2"))
    [row] = await ledger.read(since=DAY, until=DAY)
    assert (row.task, row.model) == ("a|b%7C|c", "custom:model|v2")


async def test_retention_days_expire_day_hashes(redis_url: str, redis_client: redis.Redis) -> None:
    await RedisSpendLedger(redis_url, retention_days=3).record(expense())
    assert 3 * 86400 - 5 <= redis_client.ttl(f"{LEDGER_KEY_PREFIX}day:{DAY.isoformat()}") <= 3 * 86400
    assert redis_client.ttl(f"{LEDGER_KEY_PREFIX}total") == -1


async def test_read_ledger_functions(redis_url: str) -> None:
    await RedisSpendLedger(redis_url).record(expense(cost=Decimal("0.25")))
    [row] = await read_ledger_async(redis_url, since=DAY, until=DAY)
    assert row.cost == Decimal("0.25")


def test_read_ledger_is_usable_from_sync_code(redis_url: str) -> None:
    redis.Redis.from_url(redis_url).hincrby(f"{LEDGER_KEY_PREFIX}day:{DAY}", "default|t|m|cost_nusd", 7)
    [row] = read_ledger(redis_url, since=DAY, until=DAY)
    assert (row.task, row.model, row.cost) == ("t", "m", Decimal("7E-9"))


async def test_foreign_fields_are_ignored(redis_url: str, redis_client: redis.Redis) -> None:
    key = f"{LEDGER_KEY_PREFIX}day:{DAY}"
    redis_client.hset(key, mapping={"not ours": 1, "a|b|c|future_metric": 5, "a|b|c|calls": "x"})
    assert await RedisSpendLedger(redis_url).read(since=DAY, until=DAY) == []


async def test_markers_of_confirmed_writes_do_not_pile_up(redis_url: str, redis_client: redis.Redis) -> None:
    """Each expense leaves an `applied:<id>` marker (what makes a retry harmless); the next writes delete the markers
    of the writes already confirmed, so the ledger does not keep one key per call."""
    ledger = RedisSpendLedger(redis_url)
    for _ in range(50):
        await ledger.record(expense())
    await asyncio.gather(*(ledger.record(expense()) for _ in range(100)))
    for _ in range(5):
        await ledger.record(expense())
    markers = list(redis_client.scan_iter(match=f"{LEDGER_KEY_PREFIX}applied:*"))
    assert len(markers) == 1  # the last write's, until the next one
    assert 7 * 86400 - 5 <= redis_client.ttl(markers[0]) <= 7 * 86400
    [row] = await ledger.read(total=True)
    assert row.calls == 155
    assert ledger.status() == LedgerStatus(
        pending=0, written=155, buffered=0, duplicates=0, dropped=0, dropped_cost=Decimal(0), down_since=None
    )


async def test_an_expense_is_all_in_or_not_at_all(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """A planted value where the day's hash belongs: the expense is kept (not half-written into the totals) and
    written, once, when the key is a hash again."""
    day_key = f"{LEDGER_KEY_PREFIX}day:{DAY.isoformat()}"
    redis_client.set(day_key, "planted")
    ledger = RedisSpendLedger(redis_url)
    await ledger.record(expense(cost=Decimal("0.5")))
    await ledger.record(expense(cost=Decimal("0.25")))
    assert ledger.status().pending == 2
    assert redis_client.exists(f"{LEDGER_KEY_PREFIX}total") == 0
    [warning] = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert "WRONGTYPE" in warning
    assert "not a ledger hash" in warning
    assert await ledger.spent("triage", today=DAY) == Decimal("0.75")  # a budget still sees it
    redis_client.delete(day_key)
    assert await ledger.flush() == 0
    [row] = await ledger.read(since=DAY, until=DAY)
    [total] = await ledger.read(total=True)
    assert (row.calls, row.cost) == (total.calls, total.cost) == (2, Decimal("0.75"))


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"retention_days": 0}, "retention_days"),
        ({"retention_days": 1.5}, "retention_days"),
        ({"max_pending": 0}, "max_pending"),
        ({"max_pending": True}, "max_pending"),
    ],
)
def test_bad_ledger_options(redis_url: str, kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        RedisSpendLedger(redis_url, **kwargs)


def test_ledger_needs_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_CACHE_REDIS_URL", raising=False)
    with pytest.raises(ConfigurationError, match="needs Redis"):
        RedisSpendLedger()
    with pytest.raises(ConfigurationError, match="RedisStore"):
        RedisSpendLedger(store=MemoryStore())  # type: ignore[arg-type]


def test_ledger_url_errors_hide_the_password() -> None:
    with pytest.raises(ConfigurationError) as caught:
        RedisSpendLedger("redis://user:hunter2@localhost:notaport/0")
    assert "hunter2" not in str(caught.value)


async def test_since_after_until_is_an_error(redis_url: str) -> None:
    with pytest.raises(ConfigurationError, match="since"):
        await RedisSpendLedger(redis_url).read(since=DAY, until=DAY - timedelta(days=1))


async def test_calls_record_into_the_ledger(redis_url: str) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, TextPart
    from pydantic_ai.models.function import FunctionModel
    from pydantic_ai.usage import RequestUsage

    def answer(messages: Any, info: Any) -> ModelResponse:
        return ModelResponse(parts=[TextPart("ok")], usage=RequestUsage(input_tokens=1_000, output_tokens=100))

    agent = Agent(FunctionModel(answer, model_name="priced"))
    ledger = RedisSpendLedger(redis_url)
    store = MemoryStore()
    for _ in range(3):
        await cached_agent_run(
            agent, "q", "triage", store=store, custom_costs={"priced": ModelCosts(2, 10)}, expense_hook=ledger
        )
    [row] = await ledger.read(total=True)  # the calls are dated now: all-time totals do not depend on the day
    assert (row.task, row.model, row.calls, row.hits, row.misses) == ("triage", "function:priced", 3, 2, 1)
    assert (row.cost, row.saved) == (Decimal("0.003"), Decimal("0.006"))


WRITER = textwrap.dedent(
    """
    import asyncio, sys
    from datetime import UTC, datetime
    from decimal import Decimal
    from pydantic_ai.usage import RunUsage
    from pyai_caching import Expense, RedisSpendLedger

    url, worker, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

    async def write(ledger: RedisSpendLedger, i: int) -> None:
            model = "openai:gpt-4o" if i % 2 else "anthropic:claude-sonnet-4-5"
            await ledger.record(
                Expense(
                    task_name="concurrent",
                    model=model,
                    models=(model,),
                    namespace="default",
                    cost=Decimal("0.000123456"),
                    cost_saved=Decimal("0.1"),
                    usage=RunUsage(),
                    saved_usage=RunUsage(),
                    requests=3,
                    hits=2,
                    misses=1,
                    started_at=datetime.now(UTC),
                )
            )

    async def main() -> None:
        ledger = RedisSpendLedger(url)
        print("ready", flush=True)
        sys.stdin.readline()  # every writer starts at once, after its imports
        # Half the records one after the other, half at once: increments interleave within and across processes.
        for i in range(count // 2):
            await write(ledger, i)
        await asyncio.gather(*(write(ledger, i) for i in range(count // 2, count)))

    asyncio.run(main())
    """
)


@pytest.mark.slow
def test_concurrent_writers_in_several_processes_lose_no_increment(redis_url: str) -> None:
    processes, per_process = 4, 50
    first_day = datetime.now(UTC).date()  # the writers date their records now: on this day or a later one
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, redis_url, str(n), str(per_process)],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for n in range(processes)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline() == b"ready\n", worker.communicate(timeout=60)[1].decode()
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(b"go\n")
            worker.stdin.flush()
        for worker in workers:
            _, err = worker.communicate(timeout=120)
            assert worker.returncode == 0, err.decode()
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    total = processes * per_process
    rows = read_ledger(redis_url, since=first_day, task="concurrent")
    assert sum(r.calls for r in rows) == total
    assert sum(r.hits for r in rows) == 2 * total
    assert sum(r.misses for r in rows) == total
    assert sum(r.requests for r in rows) == 3 * total
    assert sum((r.cost for r in rows), Decimal(0)) == total * Decimal("0.000123456") == Decimal("0.0246912")
    assert sum((r.saved for r in rows), Decimal(0)) == total * Decimal("0.1")
    by_model = {r.model: r.calls for r in rows}
    assert by_model == {"openai:gpt-4o": total // 2, "anthropic:claude-sonnet-4-5": total // 2}
    [all_time] = [r for r in read_ledger(redis_url, total=True) if r.model == "openai:gpt-4o"]
    assert all_time.calls == total // 2
