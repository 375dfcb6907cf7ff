"""Expense recording through real agents: simple and rich recorders, failing recorders, unknown prices, budgets."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import pytest
from _redis_servers import RedisServer
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from pyai_caching import (
    BudgetExceededError,
    ConfigurationError,
    Expense,
    LoggingRecorder,
    MemoryStore,
    ModelCosts,
    RateLimitError,
    RedisSpendLedger,
    ResponseCache,
    TaskBudget,
    cached_agent_run,
    cached_agent_run_sync,
)

PRICES = {"priced": ModelCosts(2, 10)}
"""$2 per million input tokens, $10 per million output tokens."""

REQUEST_COST = Decimal("0.003")
"""1,000 input tokens at $2/M plus 100 output tokens at $10/M."""


class Model:
    """A model function answering with fixed usage (1,000 in, 100 out) that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        return ModelResponse(parts=[TextPart("answer")], usage=RequestUsage(input_tokens=1_000, output_tokens=100))

    def agent(self, name: str = "priced") -> Agent[None, str]:
        return Agent(FunctionModel(self, model_name=name))


class ToolModel(Model):
    """Two requests per run: the first calls the `lookup` tool, the second answers."""

    def __init__(self) -> None:
        super().__init__()
        self.tool_runs = 0

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        usage = RequestUsage(input_tokens=1_000, output_tokens=100)
        done = any(isinstance(p, ToolReturnPart) for m in messages if isinstance(m, ModelRequest) for p in m.parts)
        if not done:
            return ModelResponse(parts=[ToolCallPart("lookup", {})], usage=usage)
        return ModelResponse(parts=[TextPart("answer")], usage=usage)

    def agent(self, name: str = "priced") -> Agent[None, str]:
        agent: Agent[None, str] = Agent(FunctionModel(self, model_name=name))

        @agent.tool_plain
        def lookup() -> str:
            self.tool_runs += 1
            return "looked up"

        return agent


class AcmeModel(FunctionModel):
    """A model of a provider nobody has prices for."""

    @property
    def system(self) -> str:
        return "acme"


# --- the simple recorder -------------------------------------------------------------------------------------------


async def test_sync_recorder_gets_cost_of_requests_made_and_zero_on_a_hit() -> None:
    model, store = Model(), MemoryStore()
    seen: list[tuple[str, str, float]] = []

    def recorder(model_name: str, task_name: str, cost: float) -> None:
        seen.append((model_name, task_name, cost))

    for _ in range(2):
        out = await cached_agent_run(
            model.agent(), "q", "triage", store=store, custom_costs=PRICES, expense_recorder=recorder
        )
        assert out == "answer"
    assert model.calls == 1
    assert seen == [("function:priced", "triage", 0.003), ("function:priced", "triage", 0.0)]
    assert all(isinstance(cost, float) for _, _, cost in seen)


async def test_async_recorder() -> None:
    model, store = Model(), MemoryStore()
    seen: list[float] = []

    async def recorder(model_name: str, task_name: str, cost: float) -> None:
        seen.append(cost)

    await cached_agent_run(model.agent(), "q", "t", store=store, custom_costs=PRICES, expense_recorder=recorder)
    await cached_agent_run(model.agent(), "q", "t", store=store, custom_costs=PRICES, expense_recorder=recorder)
    assert seen == [0.003, 0.0]


def test_sync_entry_point_records_too() -> None:
    model, store = Model(), MemoryStore()
    seen: list[float] = []
    expenses: list[Expense] = []
    for _ in range(2):
        cached_agent_run_sync(
            model.agent(),
            "q",
            "t",
            store=store,
            custom_costs=PRICES,
            expense_recorder=lambda m, t, c: seen.append(c),
            expense_hook=expenses.append,
        )
    assert seen == [0.003, 0.0]
    assert [e.misses for e in expenses] == [1, 0]


# --- the rich record -----------------------------------------------------------------------------------------------


async def test_expense_on_a_miss_and_on_a_whole_run_hit() -> None:
    model, store = Model(), MemoryStore()
    agent = model.agent()  # the whole-run fast path learns per agent
    expenses: list[Expense] = []
    for _ in range(2):
        await cached_agent_run(
            agent, "q", "triage", store=store, namespace="ns1", custom_costs=PRICES, expense_hook=expenses.append
        )
    miss, hit = expenses
    assert (miss.task_name, miss.model, miss.models, miss.namespace) == (
        "triage",
        "function:priced",
        ("function:priced",),
        "ns1",
    )
    assert miss.cost == REQUEST_COST
    assert miss.cost_saved == 0
    assert (miss.requests, miss.hits, miss.misses, miss.attempts) == (1, 0, 1, 1)
    assert (miss.usage.input_tokens, miss.usage.output_tokens) == (1_000, 100)
    assert miss.error is None
    assert miss.duration > 0
    assert not miss.run_level_hit

    assert hit.run_level_hit
    assert hit.cost == 0
    assert hit.cost_saved == REQUEST_COST
    assert (hit.requests, hit.hits, hit.misses, hit.attempts) == (1, 1, 0, 0)
    assert hit.saved_usage.input_tokens == 1_000
    assert hit.usage.input_tokens == 0
    assert hit.model == "function:priced"


async def test_request_level_hits_report_what_they_saved() -> None:
    model, store = ToolModel(), MemoryStore()
    expenses: list[Expense] = []
    for _ in range(2):
        out = await cached_agent_run(
            model.agent(), "q", "t", store=store, custom_costs=PRICES, expense_hook=expenses.append
        )
        assert out == "answer"
    assert model.calls == 2
    assert model.tool_runs == 2
    miss, hit = expenses
    assert miss.cost == 2 * REQUEST_COST
    assert miss.misses == 2
    assert miss.hits == 0
    assert hit.cost == 0
    assert hit.cost_saved == 2 * REQUEST_COST
    assert hit.hits == 2
    assert not hit.run_level_hit


@pytest.mark.parametrize("whole_run_hit", [True, False])
async def test_savings_are_priced_from_the_stored_usage_at_the_current_prices(whole_run_hit: bool) -> None:
    model, store = Model(), MemoryStore()
    agent = model.agent()
    await cached_agent_run(agent, "q", "t", store=store, custom_costs=PRICES)
    expenses: list[Expense] = []
    doubled = {"priced": ModelCosts(4, 20)}
    again = agent if whole_run_hit else model.agent()
    await cached_agent_run(again, "q", "t", store=store, custom_costs=doubled, expense_hook=expenses.append)
    assert expenses[0].run_level_hit is whole_run_hit
    assert expenses[0].cost_saved == 2 * REQUEST_COST
    if whole_run_hit:
        # Without custom prices now, the cost stored with the entry (by the first call) is what the hit saved.
        await cached_agent_run(again, "q", "t", store=store, expense_hook=expenses.append)
        assert expenses[1].cost_saved == REQUEST_COST


async def test_several_hooks_and_recorder_objects() -> None:
    model = Model()
    received: list[str] = []

    class Recorder:
        async def record(self, expense: Expense) -> None:
            received.append("object")

    def plain(expense: Expense) -> None:
        received.append("callable")

    await cached_agent_run(model.agent(), "q", "t", store=MemoryStore(), expense_hook=[Recorder(), plain])
    assert received == ["object", "callable"]


async def test_logging_recorder(caplog: pytest.LogCaptureFixture) -> None:
    model = Model()
    with caplog.at_level(logging.INFO, logger="pyai_caching.spend"):
        await cached_agent_run(
            model.agent(), "q", "triage", store=MemoryStore(), custom_costs=PRICES, expense_hook=LoggingRecorder()
        )
    [line] = [r for r in caplog.records if r.name == "pyai_caching.spend"]
    message = line.getMessage()
    assert "triage" in message
    assert "function:priced" in message
    assert "$0.003000" in message
    assert line.expense["cost"] == 0.003  # type: ignore[attr-defined]


async def test_a_failed_call_is_recorded_with_its_error() -> None:
    def rate_limited(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        raise ModelHTTPError(status_code=429, model_name="priced")

    agent = Agent(FunctionModel(rate_limited, model_name="priced"))
    expenses: list[Expense] = []
    seen: list[float] = []
    with pytest.raises(RateLimitError):
        await cached_agent_run(
            agent,
            "q",
            "t",
            store=MemoryStore(),
            max_wait=0.05,
            initial_wait=0.01,
            expense_hook=expenses.append,
            expense_recorder=lambda m, t, c: seen.append(c),
        )
    [expense] = expenses
    assert expense.error == "RateLimitError"
    assert expense.misses == 0
    assert expense.cost == 0
    assert expense.attempts >= 2
    assert seen == [0.0]


# --- failing recorders ---------------------------------------------------------------------------------------------


def _raise_sync(*args: Any) -> None:
    raise RuntimeError("recorder down")


async def _raise_async(*args: Any) -> None:
    raise RuntimeError("recorder down")


class _RaisingRecorder:
    def record(self, expense: Expense) -> None:
        raise RuntimeError("recorder down")


@pytest.mark.parametrize(
    "options",
    [
        pytest.param({"expense_recorder": _raise_sync}, id="sync-recorder"),
        pytest.param({"expense_recorder": _raise_async}, id="async-recorder"),
        pytest.param({"expense_hook": _raise_sync}, id="sync-hook"),
        pytest.param({"expense_hook": _raise_async}, id="async-hook"),
        pytest.param({"expense_hook": _RaisingRecorder()}, id="recorder-object"),
    ],
)
async def test_a_failing_recorder_loses_neither_the_result_nor_the_cache_entry(
    options: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    model, store = Model(), MemoryStore()
    later: list[Expense] = []
    hooks = options.get("expense_hook")
    if hooks is not None:
        options = {"expense_hook": [hooks, later.append]}
    with caplog.at_level(logging.WARNING, logger="pyai_caching"):
        assert await cached_agent_run(model.agent(), "q", "t", store=store, **options) == "answer"
    assert any("failed" in r.getMessage() and r.exc_info for r in caplog.records)
    if hooks is not None:
        assert len(later) == 1  # the hooks after the failing one still ran
    # The entry was cached: the next call does not reach the model.
    assert await cached_agent_run(model.agent(), "q", "t", store=store, **options) == "answer"
    assert model.calls == 1


# --- prices --------------------------------------------------------------------------------------------------------


async def test_unknown_model_costs_none_warns_once_and_is_still_cached(caplog: pytest.LogCaptureFixture) -> None:
    name = f"acme-{uuid.uuid4().hex[:8]}"
    model = Model()
    agent = Agent(AcmeModel(model, model_name=name))
    store = MemoryStore()
    expenses: list[Expense] = []
    seen: list[float] = []
    with caplog.at_level(logging.WARNING, logger="pyai_caching"):
        for prompt in ("q", "q", "other"):
            out = await cached_agent_run(
                agent,
                prompt,
                "t",
                store=store,
                expense_hook=expenses.append,
                expense_recorder=lambda m, t, c: seen.append(c),
            )
            assert out == "answer"
    assert model.calls == 2
    miss, hit, other = expenses
    assert miss.cost is None
    assert miss.unpriced_requests == 1
    assert miss.model == f"acme:{name}"
    assert hit.cost == 0
    assert hit.cost_saved is None
    assert hit.unpriced_hits == 1
    assert other.cost is None
    assert seen == [0.0, 0.0, 0.0]
    assert len([r for r in caplog.records if name in r.getMessage()]) == 1


async def test_known_model_is_priced_through_genai_prices() -> None:
    model = Model()
    expenses: list[Expense] = []
    await cached_agent_run(model.agent("gpt-4o"), "q", "t", store=MemoryStore(), expense_hook=expenses.append)
    # gpt-4o: $2.50 per million input tokens, $10 per million output tokens.
    assert expenses[0].cost == Decimal("0.0035")


async def test_custom_costs_win_over_genai_prices() -> None:
    model = Model()
    expenses: list[Expense] = []
    await cached_agent_run(
        model.agent("gpt-4o"),
        "q",
        "t",
        store=MemoryStore(),
        custom_costs={"gpt-4o": ModelCosts(2, 10)},
        expense_hook=expenses.append,
    )
    assert expenses[0].cost == REQUEST_COST


# --- argument checks -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        ({"expense_recorder": "log"}, "expense_recorder"),
        ({"expense_hook": 3}, "expense_hook"),
        ({"expense_hook": [print, 3]}, "expense_hook"),
        ({"custom_costs": [("priced", ModelCosts(1, 1))]}, "custom_costs"),
        ({"custom_costs": {"priced": 3}}, "custom_costs"),
        ({"max_wait": -1}, "max_wait"),
        ({"budget": "5 dollars"}, "budget"),
    ],
)
async def test_bad_options_are_rejected_before_the_model_is_called(options: dict[str, Any], fragment: str) -> None:
    model = Model()
    with pytest.raises(ConfigurationError, match=fragment):
        await cached_agent_run(model.agent(), "q", "t", store=MemoryStore(), **options)
    assert model.calls == 0


def test_a_budget_needs_a_task_name(redis_url: str) -> None:
    budget = TaskBudget(1, RedisSpendLedger(redis_url))
    with pytest.raises(ConfigurationError, match="task_name"):
        ResponseCache(store=MemoryStore(), budget=budget)


@pytest.mark.parametrize(
    ("args", "kwargs", "fragment"),
    [
        ((-1,), {}, "limit_usd"),
        (("lots",), {}, "limit_usd"),
        ((1,), {"period": "week"}, "period"),
        ((1,), {"on_ledger_error": "maybe"}, "on_ledger_error"),
    ],
)
def test_task_budget_rejects_bad_values(
    redis_url: str, args: tuple[Any, ...], kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigurationError, match=fragment):
        TaskBudget(*args, RedisSpendLedger(redis_url), **kwargs)


def test_task_budget_needs_a_ledger() -> None:
    with pytest.raises(ConfigurationError, match="RedisSpendLedger"):
        TaskBudget(1, "redis://localhost")  # type: ignore[arg-type]


# --- budgets -------------------------------------------------------------------------------------------------------


async def test_budget_stops_misses_once_reached_and_hits_stay_free(redis_url: str) -> None:
    model = Model()
    ledger = RedisSpendLedger(redis_url)
    budget = TaskBudget("0.005", ledger)
    store = MemoryStore()

    async def run(prompt: str, task: str = "triage") -> str:
        result: str = await cached_agent_run(
            model.agent(), prompt, task, store=store, custom_costs=PRICES, budget=budget
        )
        return result

    assert await run("a") == "answer"  # spent 0 before: allowed, now 0.003
    assert await run("b") == "answer"  # spent 0.003 < 0.005: allowed, now 0.006
    with pytest.raises(BudgetExceededError) as caught:
        await run("c")
    assert model.calls == 2  # the model was not called
    error = caught.value
    assert (error.task_name, error.spent, error.limit) == ("triage", pytest.approx(0.006), 0.005)
    assert "triage" in str(error)
    assert "limit_usd" in str(error)
    assert await run("a") == "answer"  # a hit stays free
    assert await run("c", task="other") == "answer"  # another task has its own budget
    assert model.calls == 3
    # The budget's ledger recorded the calls, though it was not passed as a hook.
    assert await ledger.spent("triage") == Decimal("0.006")


async def test_budget_counts_the_calls_own_requests(redis_url: str) -> None:
    model = ToolModel()
    ledger = RedisSpendLedger(redis_url)
    with pytest.raises(BudgetExceededError):
        await cached_agent_run(
            model.agent(), "q", "t", store=MemoryStore(), custom_costs=PRICES, budget=TaskBudget("0.002", ledger)
        )
    assert model.calls == 1
    assert model.tool_runs == 1
    [row] = await ledger.read()
    assert row.cost == REQUEST_COST
    assert row.errors == 1
    assert row.misses == 1


async def test_zero_budget_allows_hits_only(redis_url: str) -> None:
    model, store = Model(), MemoryStore()
    await cached_agent_run(model.agent(), "q", "t", store=store)
    budget = TaskBudget(0, RedisSpendLedger(redis_url))
    assert await cached_agent_run(model.agent(), "q", "t", store=store, budget=budget) == "answer"
    with pytest.raises(BudgetExceededError):
        await cached_agent_run(model.agent(), "new", "t", store=store, budget=budget)
    assert model.calls == 1


@pytest.mark.parametrize("policy", ["allow", "deny"])
async def test_unreadable_ledger(
    policy: Any, redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_server_factory()
    ledger = RedisSpendLedger(server.url(db=0))
    server.stop()
    model = Model()
    budget = TaskBudget(1, ledger, on_ledger_error=policy)
    with caplog.at_level(logging.WARNING, logger="pyai_caching"):
        if policy == "allow":
            assert await cached_agent_run(model.agent(), "q", "t", store=MemoryStore(), budget=budget) == "answer"
            assert any("could not be read" in r.getMessage() for r in caplog.records)
            assert model.calls == 1
        else:
            with pytest.raises(BudgetExceededError, match="could not be read"):
                await cached_agent_run(model.agent(), "q", "t", store=MemoryStore(), budget=budget)
            assert model.calls == 0
