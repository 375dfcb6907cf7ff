"""`Budget`: limits per UTC day or month and per tenant, in USD or tokens, through real agents and real Redis.

Every request here costs $0.003 (1,000 input tokens at $2/M plus 100 output tokens at $10/M) and 1,100 tokens.
Periods are driven by the budget's public `clock=` parameter, never by the time of day or the local time zone.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from _redis_servers import RedisServer
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from pyai_caching import (
    Budget,
    BudgetExceededError,
    ConfigurationError,
    LocalStore,
    MemoryStore,
    ModelCosts,
    RedisSpendLedger,
    ResponseCache,
    TaskBudget,
    cached_agent_run,
    read_budget_usage,
    read_budget_usage_async,
)

PRICES = {"priced": ModelCosts(2, 10)}
COST = Decimal("0.003")
TOKENS = 1_100
WORKER = Path(__file__).with_name("budget_worker.py")


class Model:
    """A priced model function that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        return ModelResponse(parts=[TextPart("answer")], usage=RequestUsage(input_tokens=1_000, output_tokens=100))

    def agent(self) -> Agent[Any, str]:
        return Agent(FunctionModel(self, model_name="priced"), deps_type=dict)


class Clock:
    """A clock a test moves by hand (the budget's `clock=`)."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def run(model: Model, prompt: str, budget: Any, *, store: Any = None, **kwargs: Any) -> Any:
    return cached_agent_run(
        model.agent(), prompt, "triage", store=store or MemoryStore(), custom_costs=PRICES, budget=budget, **kwargs
    )


# --- the race for the last dollar -------------------------------------------------------------------------------


@pytest.mark.slow
def test_processes_racing_for_the_last_dollar_only_one_proceeds(redis_url: str, redis_client: redis.Redis) -> None:
    """$0.009 of $0.010 spent; 4 processes each send a request at once. The first one admitted holds $0.003 (the
    largest request seen) while its model runs, so the 3 others are refused: exactly one request proceeds."""
    name = "race"
    budget = Budget(name, usd="0.010", period="day", redis_url=redis_url)
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), redis_url, name, str(n)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(4)
    ]
    try:
        for worker in workers:
            assert worker.stdout is not None
            assert worker.stdout.readline() == "ready\n", worker.communicate(timeout=60)[1]
        model = Model()
        store = MemoryStore()
        for prompt in ("a", "b", "c"):
            run_sync(run(model, prompt, budget, store=store))
        assert [u.spent for u in read_budget_usage(redis_url)] == [Decimal("0.009")]
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        # Wait until every worker was either refused (it exits) or is inside its model, holding its reservation.
        deadline = time.monotonic() + 60
        while sum(w.poll() is not None for w in workers) + int(redis_client.get(f"{name}:in_model") or 0) < 4:
            assert time.monotonic() < deadline, "the workers were not all checked"
            time.sleep(0.01)
        assert int(redis_client.get(f"{name}:in_model") or 0) == 1
        redis_client.set(f"{name}:release", 1)
        outcomes = []
        for worker in workers:
            out, err = worker.communicate(timeout=60)
            assert worker.returncode == 0, err
            outcomes.append(out.split()[0])
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
    assert sorted(outcomes) == ["admitted", "denied", "denied", "denied"]
    [usage] = read_budget_usage(redis_url)
    assert (usage.spent, usage.reserved, usage.in_flight) == (Decimal("0.012"), 0, 0)
    assert (usage.admitted, usage.denied) == (4, 3)


def run_sync(coroutine: Any) -> Any:
    from pyai_caching.engine.sync import run_sync as library_run_sync

    return library_run_sync(coroutine)


async def test_concurrent_requests_in_one_process_share_the_last_dollar(redis_url: str) -> None:
    """The same rule between two event loops' worth of concurrency: 10 requests at once on $0.010 with $0.003
    reserved each: 4 are admitted (0, 0.003, 0.006, 0.009 held before each), 6 refused, none while reading."""
    import asyncio

    release, all_checked = asyncio.Event(), asyncio.Event()
    checked = 0

    def one_checked() -> None:
        nonlocal checked
        checked += 1
        if checked == 10:
            all_checked.set()

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        one_checked()
        await release.wait()
        return ModelResponse(parts=[TextPart("answer")], usage=RequestUsage(input_tokens=1_000, output_tokens=100))

    agent = Agent(FunctionModel(model, model_name="priced"))
    budget = Budget("burst", usd="0.010", reserve="0.003", redis_url=redis_url)

    async def call(n: int) -> str:
        try:
            await cached_agent_run(agent, f"q{n}", "t", store=MemoryStore(), custom_costs=PRICES, budget=budget)
        except BudgetExceededError:
            one_checked()
            return "denied"
        return "admitted"

    tasks = [asyncio.create_task(call(n)) for n in range(10)]
    await asyncio.wait_for(all_checked.wait(), 60)  # every request was refused or is in the model, holding $0.003
    release.set()
    outcomes = await asyncio.gather(*tasks)
    assert outcomes.count("admitted") == 4
    [usage] = await read_budget_usage_async(redis_url)
    assert usage.spent == 4 * COST
    assert usage.reserved == 0


# --- periods --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("period", "last_moment", "next_period"),
    [
        ("day", datetime(2030, 1, 31, 23, 59, 59, tzinfo=UTC), datetime(2030, 2, 1, tzinfo=UTC)),
        ("month", datetime(2030, 2, 28, 23, 59, 59, tzinfo=UTC), datetime(2030, 3, 1, tzinfo=UTC)),
    ],
)
async def test_a_period_resets_on_the_utc_calendar_boundary(
    redis_url: str, period: Any, last_moment: datetime, next_period: datetime
) -> None:
    clock = Clock(last_moment - timedelta(hours=5))
    model = Model()
    budget = Budget("periodic", usd="0.005", period=period, redis_url=redis_url, clock=clock)
    await run(model, "a", budget)
    await run(model, "b", budget)  # 0.003 < 0.005: allowed, now 0.006
    clock.now = last_moment
    with pytest.raises(BudgetExceededError) as caught:
        await run(model, "c", budget)
    assert caught.value.resets_at == next_period
    assert caught.value.period == period
    clock.now = next_period
    assert await run(model, "c", budget) == "answer"
    assert model.calls == 3
    [usage] = await read_budget_usage_async(redis_url, at=next_period)
    assert usage.spent == COST
    assert usage.period_start == next_period.date()
    [earlier] = await read_budget_usage_async(redis_url, at=last_moment)
    assert (earlier.spent, earlier.denied) == (2 * COST, 1)


async def test_periods_follow_utc_whatever_the_clocks_zone(redis_url: str) -> None:
    """10:00 on 1 March at UTC+14 is 20:00 on 28 February UTC: still February's budget, resetting at 1 March UTC."""
    kiritimati = timezone(timedelta(hours=14))
    clock = Clock(datetime(2030, 3, 1, 10, 0, tzinfo=kiritimati))
    model = Model()
    budget = Budget("zoned", usd="0.001", period="month", redis_url=redis_url, clock=clock)
    await run(model, "a", budget)
    with pytest.raises(BudgetExceededError) as caught:
        await run(model, "b", budget)
    assert caught.value.resets_at == datetime(2030, 3, 1, tzinfo=UTC)
    [usage] = await read_budget_usage_async(redis_url, at=datetime(2030, 2, 28, 20, tzinfo=UTC))
    assert usage.period_start == datetime(2030, 2, 1).date()


# --- tenants, tokens, hits --------------------------------------------------------------------------------------


async def test_tenants_are_isolated(redis_url: str) -> None:
    model = Model()
    budget = Budget("per-customer", usd="0.003", tenant=lambda deps: deps["customer"], redis_url=redis_url)
    await run(model, "a", budget, deps={"customer": "acme"})
    with pytest.raises(BudgetExceededError) as caught:
        await run(model, "b", budget, deps={"customer": "acme"})
    assert caught.value.tenant == "acme"
    assert await run(model, "b", budget, deps={"customer": "globex"}) == "answer"  # another tenant, its own limit
    rows = await read_budget_usage_async(redis_url)
    assert [(r.tenant, r.spent, r.denied) for r in rows] == [("acme", COST, 1), ("globex", COST, 0)]


async def test_tenant_per_namespace(redis_url: str) -> None:
    model = Model()
    budget = Budget("per-namespace", usd="0.003", tenant="namespace", redis_url=redis_url)
    await run(model, "a", budget, namespace="acme")
    with pytest.raises(BudgetExceededError, match="'acme'"):
        await run(model, "b", budget, namespace="acme")
    assert await run(model, "b", budget, namespace="globex") == "answer"


async def test_a_tokens_budget_counts_tokens(redis_url: str) -> None:
    model = Model()
    budget = Budget("tokens", tokens=2 * TOKENS, redis_url=redis_url)
    await run(model, "a", budget)
    await run(model, "b", budget)
    with pytest.raises(BudgetExceededError) as caught:
        await run(model, "c", budget)
    error = caught.value
    assert (error.unit, error.spent, error.limit, error.reserved) == ("tokens", 2 * TOKENS, 2 * TOKENS, 0)
    assert "2,200 tokens" in str(error)
    assert model.calls == 2


async def test_an_unpriced_model_counts_for_tokens_not_usd(redis_url: str) -> None:
    model = Model()
    usd = Budget("usd", usd="0.001", redis_url=redis_url)
    tokens = Budget("tok", tokens=TOKENS, redis_url=redis_url)
    agent = Agent(FunctionModel(model, model_name="unpriced"))
    for prompt in ("a", "b"):
        await cached_agent_run(agent, prompt, "t", store=MemoryStore(), budget=usd)
    await cached_agent_run(agent, "c", "t", store=MemoryStore(), budget=[usd, tokens])
    with pytest.raises(BudgetExceededError, match="'tok'"):
        await cached_agent_run(agent, "d", "t", store=MemoryStore(), budget=[usd, tokens])


async def test_hits_are_free(redis_url: str) -> None:
    model, store = Model(), MemoryStore()
    budget = Budget("hits", usd="0.003", redis_url=redis_url)
    await run(model, "a", budget, store=store)
    with pytest.raises(BudgetExceededError):
        await run(model, "b", budget, store=store)
    for _ in range(3):
        assert await run(model, "a", budget, store=store) == "answer"  # a hit: neither checked nor charged
    [usage] = await read_budget_usage_async(redis_url)
    assert (usage.spent, usage.admitted, usage.denied) == (COST, 1, 1)
    assert model.calls == 1


async def test_a_refused_call_gives_back_what_other_budgets_reserved(redis_url: str) -> None:
    """Two budgets of one call on one Redis, the second spent: one script refuses, the first holds nothing."""
    model = Model()
    roomy = Budget("roomy", usd=1, reserve="0.5", redis_url=redis_url)
    spent = Budget("spent", usd=0, redis_url=redis_url)
    with pytest.raises(BudgetExceededError, match="'spent'"):
        await run(model, "a", [roomy, spent])
    rows = {r.budget: r for r in await read_budget_usage_async(redis_url)}
    assert set(rows) == {"spent"}  # one script refused the call before roomy held anything
    assert rows["spent"].denied == 1
    await run(model, "a", roomy)
    rows = {r.budget: r for r in await read_budget_usage_async(redis_url)}
    assert (rows["roomy"].spent, rows["roomy"].reserved) == (COST, 0)


# --- errors -----------------------------------------------------------------------------------------------------


async def test_the_error_says_which_limit_what_was_spent_and_when_it_resets(redis_url: str) -> None:
    clock = Clock(datetime(2031, 5, 17, 9, 30, tzinfo=UTC))
    model = Model()
    budget = Budget("support-daily", usd="0.005", tenant="namespace", redis_url=redis_url, clock=clock)
    await run(model, "a", budget, namespace="acme")
    await run(model, "b", budget, namespace="acme")
    with pytest.raises(BudgetExceededError) as caught:
        await run(model, "c", budget, namespace="acme")
    error = caught.value
    assert error.budget == "support-daily"
    assert error.tenant == "acme"
    assert (error.unit, error.period) == ("usd", "day")
    assert error.spent == pytest.approx(0.006)
    assert error.limit == pytest.approx(0.005)
    assert error.reserved == 0
    assert error.resets_at == datetime(2031, 5, 18, tzinfo=UTC)
    assert error.task_name == "triage"
    text = str(error)
    for fragment in ("'support-daily'", "'acme'", "$0.006", "$0.005", "2031-05-18 00:00 UTC", "usd="):
        assert fragment in text
    assert model.calls == 2


async def test_task_budget_errors_say_when_they_reset(redis_url: str) -> None:
    model = Model()
    with pytest.raises(BudgetExceededError) as caught:
        await run(model, "a", TaskBudget(0, RedisSpendLedger(redis_url), period="month"))
    error = caught.value
    assert (error.budget, error.period, error.tenant) == ("TaskBudget", "month", "triage")
    assert error.resets_at is not None
    assert (error.resets_at.day, error.resets_at.hour, error.resets_at.tzinfo) == (1, 0, UTC)


async def test_a_tenant_function_that_fails_stops_the_call(redis_url: str) -> None:
    """A bug in the caller's tenant function never lets a request through unchecked."""
    model = Model()
    budget = Budget("buggy", usd=1, tenant=lambda deps: deps["missing"], redis_url=redis_url)
    with pytest.raises(KeyError):
        await run(model, "a", budget, deps={})
    bad = Budget("empty", usd=1, tenant=lambda deps: "", redis_url=redis_url)
    with pytest.raises(ConfigurationError, match="non-empty string"):
        await run(model, "a", bad, deps={})
    assert model.calls == 0


@pytest.mark.parametrize("policy", ["allow", "deny"])
async def test_redis_down(
    policy: Any, redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server_factory()
    budget = Budget("down", usd=1, redis_url=server.url(), on_store_error=policy)
    server.stop()
    model = Model()
    with caplog.at_level(logging.WARNING, logger="pyai_caching"):
        if policy == "allow":
            assert await run(model, "a", budget) == "answer"
            assert await run(model, "b", budget) == "answer"
            warnings = [r for r in caplog.records if "cannot be reached" in r.getMessage()]
            assert len(warnings) == 1  # once per outage
            assert model.calls == 2
        else:
            with pytest.raises(BudgetExceededError, match="could not be reached") as caught:
                await run(model, "a", budget)
            assert caught.value.budget == "down"
            assert model.calls == 0


# --- where counters live ----------------------------------------------------------------------------------------


async def test_a_memory_store_keeps_the_same_rules_in_this_process() -> None:
    counters = MemoryStore()
    model = Model()
    budget = Budget("local", usd="0.003", tenant="namespace", store=counters)
    await run(model, "a", budget, namespace="x")
    with pytest.raises(BudgetExceededError):
        await run(model, "b", budget, namespace="x")
    await run(model, "b", budget, namespace="y")
    twin = Budget("local", usd="0.003", tenant="namespace", store=counters)  # same store and name: same counters
    with pytest.raises(BudgetExceededError):
        await run(model, "c", twin, namespace="y")
    rows = await read_budget_usage_async(store=counters)
    assert [(r.tenant, r.spent) for r in rows] == [("x", COST), ("y", COST)]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "exactly one limit"),
        ({"usd": 1, "tokens": 5}, "exactly one limit"),
        ({"usd": -1}, "usd"),
        ({"usd": "lots"}, "usd"),
        ({"tokens": 1.5}, "tokens"),
        ({"usd": 1, "period": "week"}, "period"),
        ({"usd": 1, "tenant": "customer"}, "tenant"),
        ({"usd": 1, "reserve": -1}, "reserve"),
        ({"tokens": 10, "reserve": "0.5"}, "reserve"),
        ({"usd": 1, "lease": 0}, "lease"),
        ({"usd": 1, "on_store_error": "maybe"}, "on_store_error"),
        ({"usd": 1, "clock": "now"}, "clock"),
        ({"usd": 1, "store": LocalStore}, "MemoryStore"),
        ({"usd": 10**8}, "too large"),
    ],
)
def test_bad_budgets_are_refused_naming_the_fix(
    redis_url: str, tmp_path: Path, kwargs: dict[str, Any], fragment: str
) -> None:
    if kwargs.get("store") is LocalStore:
        kwargs["store"] = LocalStore(tmp_path)
    else:
        kwargs.setdefault("redis_url", redis_url)
    with pytest.raises(ConfigurationError, match=fragment):
        Budget("b", **kwargs)


def test_a_budget_needs_redis_or_says_how_to_do_without(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("LLM_CACHE_REDIS_URL", raising=False)
    with pytest.raises(ConfigurationError, match=r"redis_url=.*MemoryStore\(\)"):
        Budget("b", usd=1)


def test_budget_arguments_of_a_call(redis_url: str) -> None:
    budget = Budget("b", usd=1, tenant="task", redis_url=redis_url)
    with pytest.raises(ConfigurationError, match="task_name"):
        ResponseCache(store=MemoryStore(), budget=budget)
    with pytest.raises(ConfigurationError, match="same name"):
        ResponseCache(store=MemoryStore(), budget=[budget, Budget("b", usd=2, redis_url=redis_url)], task_name="t")
    with pytest.raises(ConfigurationError, match="Budget"):
        ResponseCache(store=MemoryStore(), budget=[budget, 5], task_name="t")


def test_a_clock_must_tell_an_aware_time(redis_url: str) -> None:
    budget = Budget("naive", usd=1, redis_url=redis_url, clock=lambda: datetime(2030, 1, 1))
    with pytest.raises(ConfigurationError, match="aware"):
        run_sync(run(Model(), "a", budget))


def test_a_process_killed_mid_request_holds_its_reservation_until_the_lease_ends(
    redis_url: str, redis_client: redis.Redis
) -> None:
    name = "killed"
    budget = Budget(name, usd="0.010", redis_url=redis_url)
    model, store = Model(), MemoryStore()
    for prompt in ("a", "b", "c"):
        run_sync(run(model, prompt, budget, store=store))  # $0.009 spent; the largest request: $0.003
    worker = subprocess.Popen(
        [sys.executable, str(WORKER), redis_url, name, "0", "1.0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert worker.stdout is not None
        assert worker.stdin is not None
        assert worker.stdout.readline() == "ready\n", worker.communicate(timeout=60)[1]
        worker.stdin.write("go\n")
        worker.stdin.flush()
        deadline = time.monotonic() + 60
        while not redis_client.get(f"{name}:in_model"):
            assert time.monotonic() < deadline, worker.stderr
            time.sleep(0.01)
        worker.kill()  # dies holding $0.003 for at most its 1 s lease
        worker.communicate(timeout=30)
        killed_at = time.monotonic()
        with pytest.raises(BudgetExceededError) as caught:
            run_sync(run(model, "d", budget, store=store))
        assert caught.value.reserved == pytest.approx(0.003)
        while True:  # refused while the lease runs, admitted once it has ended
            try:
                run_sync(run(model, "d", budget, store=store))
                break
            except BudgetExceededError:
                assert time.monotonic() - killed_at < 30, "the reservation was never given back"
                time.sleep(0.05)
        assert time.monotonic() - killed_at >= 0.5
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.communicate(timeout=30)
    [usage] = read_budget_usage(redis_url)
    assert (usage.spent, usage.reserved, usage.in_flight) == (Decimal("0.012"), 0, 0)


async def test_budgets_on_two_stores_give_back_what_the_first_held(redis_url: str) -> None:
    counters = MemoryStore()
    roomy = Budget("roomy", usd=1, reserve="0.5", store=counters)
    spent = Budget("spent", usd=0, redis_url=redis_url)
    with pytest.raises(BudgetExceededError, match="'spent'"):
        await run(Model(), "a", [roomy, spent])
    [usage] = await read_budget_usage_async(store=counters)
    assert (usage.admitted, usage.reserved, usage.in_flight, usage.spent) == (1, 0, 0, 0)


async def test_streamed_runs_are_checked_and_charged(redis_url: str) -> None:
    calls = 0

    async def stream(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        nonlocal calls
        calls += 1
        for chunk in ("ans", "wer"):
            yield chunk

    agent = Agent(FunctionModel(stream_function=stream, model_name="priced"))
    budget = Budget("streams", tokens=1, redis_url=redis_url)  # the first request's tokens spend it
    cache = ResponseCache(store=MemoryStore(), budget=budget)
    async with agent.run_stream("a", capabilities=[cache]) as result:
        assert await result.get_output() == "answer"
    with pytest.raises(BudgetExceededError):
        async with agent.run_stream("b", capabilities=[cache]) as result:
            await result.get_output()
    async with agent.run_stream("a", capabilities=[cache]) as result:  # a hit streams for free
        assert await result.get_output() == "answer"
    [usage] = await read_budget_usage_async(redis_url)
    assert usage.spent >= 1
    assert (usage.admitted, usage.denied, usage.in_flight) == (1, 1, 0)
    assert calls == 1


async def test_task_budgets_and_budgets_together(redis_url: str) -> None:
    model = Model()
    ledger = RedisSpendLedger(redis_url)
    budgets = [TaskBudget(1, ledger), Budget("daily", usd="0.003", redis_url=redis_url)]
    await run(model, "a", budgets)
    with pytest.raises(BudgetExceededError) as caught:
        await run(model, "b", budgets)
    assert caught.value.budget == "daily"
    assert await ledger.spent("triage") == COST  # the TaskBudget's ledger recorded the call


async def test_usage_rows(redis_url: str) -> None:
    clock = Clock(datetime(2032, 7, 9, 12, tzinfo=UTC))
    budget = Budget("rows", usd="0.01", tenant="namespace", period="month", redis_url=redis_url, clock=clock)
    await run(Model(), "a", budget, namespace="acme")
    [usage] = await read_budget_usage_async(redis_url, budget="rows", tenant="acme", at=clock.now)
    assert usage.budget == "rows"
    assert (usage.unit, usage.period, usage.limit) == ("usd", "month", Decimal("0.01"))
    assert usage.period_start == datetime(2032, 7, 1).date()
    assert usage.resets_at == datetime(2032, 8, 1, tzinfo=UTC)
    assert (usage.spent, usage.remaining, usage.used) == (COST, Decimal("0.007"), pytest.approx(0.3))
    assert await read_budget_usage_async(redis_url, budget="other", at=clock.now) == []
    with pytest.raises(ConfigurationError, match="aware"):
        await read_budget_usage_async(redis_url, at=datetime(2032, 7, 9))
