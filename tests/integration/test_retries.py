"""Rate-limit retries through real agents: one request at a time, tenacity underneath, a bounded budget."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import tenacity
from pydantic_ai import Agent
from pydantic_ai.exceptions import (
    ModelHTTPError,
    ModelOverloadedError,
    ModelQuotaExceededError,
    ModelRateLimitError,
    ModelUnavailableError,
    UsageLimitExceeded,
)
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from pyai_caching import (
    Expense,
    MemoryStore,
    RateLimitError,
    ResponseCache,
    RetryingModel,
    RetryPolicy,
    cached_agent_run,
    cached_agent_run_sync,
)
from pyai_caching.retry import is_retryable

FAST = {"initial_wait": 0.01, "max_wait": 2.0}
"""Small waits so the tests stay fast; generous max_wait so a loaded machine does not run out of budget."""

MARGIN = 1.0
"""Slack for scheduling on a busy 2-core machine when checking that a call returns within max_wait."""


def rate_limit(**kwargs: Any) -> ModelHTTPError:
    return ModelHTTPError(status_code=429, model_name="scripted", body={"error": "rate limited"}, **kwargs)


@dataclass
class Script:
    """A model function that raises the scripted errors in order, then answers `text`; it times every call."""

    errors: list[BaseException] = field(default_factory=list)
    """Errors to raise, one per call, before answering."""
    text: str = "done"
    """The answer once the errors are used up."""
    calls: list[float] = field(default_factory=list)
    """`time.monotonic()` of every call."""
    always: BaseException | None = None
    """Raise this on every call (after `errors`)."""

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls.append(time.monotonic())
        if self.errors:
            raise self.errors.pop(0)
        if self.always is not None:
            raise self.always
        return ModelResponse(parts=[TextPart(self.text)], usage=RequestUsage(input_tokens=50, output_tokens=5))

    def agent(self) -> Agent[None, str]:
        return Agent(FunctionModel(self, model_name="scripted"))

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.calls, self.calls[1:], strict=False)]


async def test_429_without_hint_is_retried_then_cached() -> None:
    script = Script(errors=[rate_limit(), rate_limit()])
    store = MemoryStore()
    expenses: list[Expense] = []
    out = await cached_agent_run(script.agent(), "hi", "t", store=store, expense_hook=expenses.append, **FAST)
    assert out == "done"
    assert len(script.calls) == 3
    assert expenses[0].attempts == 3
    assert expenses[0].misses == 1
    assert expenses[0].retry_wait > 0
    # The successful response was cached: the next call does not reach the model at all.
    assert await cached_agent_run(script.agent(), "hi", "t", store=store, **FAST) == "done"
    assert len(script.calls) == 3


@pytest.mark.parametrize(
    "hint",
    [
        pytest.param({"headers": {"retry-after-ms": "300"}}, id="retry-after-ms-header"),
        pytest.param({"retry_after": 0.3}, id="retry_after-attribute"),
        pytest.param({"body": {"error": {"retry_after": 0.3}}}, id="retry_after-in-body"),
    ],
)
async def test_provider_retry_after_is_honoured(hint: dict[str, Any]) -> None:
    error = ModelHTTPError(status_code=429, model_name="scripted", **hint)
    script = Script(errors=[error])
    # initial_wait is tiny, so a gap of ~0.3 s can only come from the provider's hint.
    out = await cached_agent_run(script.agent(), "hi", "t", store=MemoryStore(), initial_wait=0.001, max_wait=5)
    assert out == "done"
    assert len(script.calls) == 2
    assert script.gaps()[0] >= 0.29


async def test_retry_after_header_longer_than_the_budget_is_capped() -> None:
    script = Script(always=rate_limit(headers={"Retry-After": "30"}))
    started = time.monotonic()
    with pytest.raises(RateLimitError) as caught:
        await cached_agent_run(script.agent(), "hi", "t", store=MemoryStore(), initial_wait=0.01, max_wait=0.3)
    elapsed = time.monotonic() - started
    assert elapsed < 0.3 + MARGIN
    assert caught.value.attempts == 2
    assert 0.25 <= caught.value.waited <= 0.3 + 1e-6
    assert script.gaps()[0] >= 0.25


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ModelHTTPError(status_code=503, model_name="scripted"), id="plain-503"),
        pytest.param(ModelHTTPError(status_code=529, model_name="scripted"), id="plain-529"),
        pytest.param(
            ModelHTTPError.for_category(ModelUnavailableError, status_code=503, model_name="scripted"),
            id="unavailable-503",
        ),
        pytest.param(
            ModelHTTPError.for_category(ModelOverloadedError, status_code=529, model_name="scripted"),
            id="overloaded-529",
        ),
        pytest.param(
            ModelHTTPError.for_category(ModelRateLimitError, status_code=429, model_name="scripted"),
            id="rate-limit-429",
        ),
        pytest.param(ModelHTTPError(status_code=500, model_name="scripted"), id="plain-500"),
    ],
)
async def test_transient_provider_errors_are_retried(error: ModelHTTPError) -> None:
    script = Script(errors=[error])
    assert await cached_agent_run(script.agent(), "hi", "t", store=MemoryStore(), **FAST) == "done"
    assert len(script.calls) == 2


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(ModelHTTPError(status_code=400, model_name="scripted", body={"error": "bad"}), id="400"),
        pytest.param(
            ModelHTTPError.for_category(ModelQuotaExceededError, status_code=429, model_name="scripted"),
            id="quota-429",
        ),
        pytest.param(ModelHTTPError(status_code=402, model_name="scripted"), id="402"),
        pytest.param(UsageLimitExceeded("the model's own usage limit"), id="usage-limit"),
    ],
)
async def test_errors_waiting_cannot_fix_propagate_unchanged_and_nothing_is_cached(error: Exception) -> None:
    script = Script(errors=[error])
    store = MemoryStore()
    expenses: list[Expense] = []
    with pytest.raises(type(error)) as caught:
        await cached_agent_run(script.agent(), "hi", "t", store=store, expense_hook=expenses.append, **FAST)
    assert caught.value is error
    assert len(script.calls) == 1
    assert expenses[0].error == type(error).__name__
    assert expenses[0].misses == 0
    # Nothing was cached: the next call goes to the model (which now answers).
    assert await cached_agent_run(script.agent(), "hi", "t", store=store, **FAST) == "done"
    assert len(script.calls) == 2


async def test_budget_exhaustion_raises_rate_limit_error_within_max_wait() -> None:
    script = Script(always=rate_limit())
    store = MemoryStore()
    started = time.monotonic()
    with pytest.raises(RateLimitError) as caught:
        await cached_agent_run(script.agent(), "hi", "t", store=store, initial_wait=0.01, max_wait=0.3)
    elapsed = time.monotonic() - started
    assert elapsed < 0.3 + MARGIN
    error = caught.value
    assert isinstance(error.__cause__, ModelHTTPError)
    assert error.__cause__.status_code == 429
    assert error.attempts == len(script.calls) >= 2
    assert 0 < error.waited <= 0.3 + 1e-6
    assert "max_wait" in str(error)
    assert "rate limited" not in str(error)  # the provider's body stays out of our message
    # Nothing was cached.
    script.always = None
    assert await cached_agent_run(script.agent(), "hi", "t", store=store, **FAST) == "done"


async def test_zero_max_wait_makes_one_attempt() -> None:
    script = Script(always=rate_limit())
    with pytest.raises(RateLimitError) as caught:
        await cached_agent_run(script.agent(), "hi", "t", store=MemoryStore(), max_wait=0)
    assert caught.value.attempts == 1
    assert caught.value.waited == 0
    assert len(script.calls) == 1


async def test_retry_false_leaves_the_provider_error_unchanged() -> None:
    error = rate_limit()
    script = Script(errors=[error])
    with pytest.raises(ModelHTTPError) as caught:
        await cached_agent_run(script.agent(), "hi", "t", store=MemoryStore(), retry=False)
    assert caught.value is error
    assert len(script.calls) == 1


async def test_custom_tenacity_policy() -> None:
    script = Script(always=rate_limit())
    retrying = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(is_retryable),
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_fixed(0.01),
    )
    with pytest.raises(RateLimitError) as caught:
        await cached_agent_run(script.agent(), "hi", "t", store=MemoryStore(), retry=retrying)
    assert caught.value.attempts == 3 == len(script.calls)
    assert caught.value.waited == pytest.approx(0.02)


async def test_custom_tenacity_policy_with_reraise_raises_the_provider_error() -> None:
    error = rate_limit()
    script = Script(always=error)
    retrying = tenacity.AsyncRetrying(stop=tenacity.stop_after_attempt(2), reraise=True)
    with pytest.raises(ModelHTTPError) as caught:
        await cached_agent_run(script.agent(), "hi", "t", store=MemoryStore(), retry=retrying)
    assert caught.value is error
    assert len(script.calls) == 2


@dataclass
class ToolScript:
    """A tool-using model: request 1 calls the `lookup` tool, request 2 answers from its result."""

    second_request_errors: list[BaseException]
    first_requests: int = 0
    second_requests: int = 0
    tool_runs: int = 0

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        returned = [
            part.content
            for message in messages
            if isinstance(message, ModelRequest)
            for part in message.parts
            if isinstance(part, ToolReturnPart)
        ]
        usage = RequestUsage(input_tokens=40, output_tokens=4)
        if not returned:
            self.first_requests += 1
            return ModelResponse(parts=[ToolCallPart("lookup", {"city": "Paris"})], usage=usage)
        self.second_requests += 1
        if self.second_request_errors:
            raise self.second_request_errors.pop(0)
        return ModelResponse(parts=[TextPart(f"weather: {returned[0]}")], usage=usage)

    def agent(self) -> Agent[None, str]:
        agent: Agent[None, str] = Agent(FunctionModel(self, model_name="tools"))

        @agent.tool_plain
        def lookup(city: str) -> str:
            self.tool_runs += 1
            return f"sunny in {city}"

        return agent


async def test_only_the_rate_limited_request_is_repeated_not_the_tools_or_earlier_requests() -> None:
    script = ToolScript(second_request_errors=[rate_limit(), rate_limit()])
    expenses: list[Expense] = []
    out = await cached_agent_run(
        script.agent(), "weather?", "t", store=MemoryStore(), expense_hook=expenses.append, **FAST
    )
    assert out == "weather: sunny in Paris"
    assert script.tool_runs == 1
    assert script.first_requests == 1
    assert script.second_requests == 3
    assert expenses[0].misses == 2
    assert expenses[0].attempts == 4


async def test_a_hit_never_reaches_the_retrying_model() -> None:
    script = Script()
    store = MemoryStore()
    assert await cached_agent_run(script.agent(), "hi", "t", store=store, **FAST) == "done"
    script.always = rate_limit()  # the provider is now rate-limiting everything
    expenses: list[Expense] = []
    out = await cached_agent_run(script.agent(), "hi", "t", store=store, expense_hook=expenses.append, **FAST)
    assert out == "done"
    assert len(script.calls) == 1  # the rate-limited model was never called, so nothing was retried or waited for
    assert expenses[0].attempts == 0
    assert expenses[0].hits == 1


async def test_request_level_hits_in_a_tool_run_are_not_retried() -> None:
    script = ToolScript(second_request_errors=[])
    store = MemoryStore()
    await cached_agent_run(script.agent(), "weather?", "t", store=store, **FAST)
    script.second_request_errors = [rate_limit()] * 5
    out = await cached_agent_run(script.agent(), "weather?", "t", store=store, **FAST)
    assert out == "weather: sunny in Paris"
    assert script.first_requests == 1
    assert script.second_requests == 1
    assert script.tool_runs == 2  # tools run on every call unless cache_whole_run=True


def test_sync_entry_point_retries_too() -> None:
    script = Script(errors=[rate_limit()])
    assert cached_agent_run_sync(script.agent(), "hi", "t", store=MemoryStore(), **FAST) == "done"
    assert len(script.calls) == 2


def test_the_capability_retries_by_default() -> None:
    assert ResponseCache(store=MemoryStore()).retry == RetryPolicy()
    assert ResponseCache(store=MemoryStore(), retry=None).retry is None


@dataclass
class StreamScript:
    """A streaming model function: raises `open_errors` before its first chunk, then streams; can fail mid-way."""

    open_errors: list[BaseException] = field(default_factory=list)
    fail_after_first_chunk: BaseException | None = None
    calls: int = 0

    async def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        self.calls += 1
        if self.open_errors:
            raise self.open_errors.pop(0)
        yield "hello "
        if self.fail_after_first_chunk is not None:
            raise self.fail_after_first_chunk
        yield "world"

    def agent(self) -> Agent[None, str]:
        return Agent(FunctionModel(stream_function=self, model_name="streamer"))


async def test_opening_a_stream_is_retried() -> None:
    script = StreamScript(open_errors=[rate_limit(), ModelHTTPError(status_code=503, model_name="streamer")])
    cache = ResponseCache(store=MemoryStore(), retry=RetryPolicy(initial_wait=0.01, max_wait=2))
    async with script.agent().run_stream("hi", capabilities=[cache]) as run:
        output = await run.get_output()
    assert output == "hello world"
    assert script.calls == 3


async def test_a_stream_that_already_yielded_is_not_retried() -> None:
    failure = ModelHTTPError(status_code=503, model_name="streamer")
    script = StreamScript(fail_after_first_chunk=failure)
    cache = ResponseCache(store=MemoryStore(), retry=RetryPolicy(initial_wait=0.01, max_wait=2))
    with pytest.raises(ModelHTTPError) as caught:
        async with script.agent().run_stream("hi", capabilities=[cache]) as run:
            await run.get_output()
    assert caught.value is failure
    assert script.calls == 1


async def test_retrying_model_works_without_the_cache() -> None:
    script = Script(errors=[rate_limit()])
    model = RetryingModel(FunctionModel(script, model_name="scripted"), RetryPolicy(initial_wait=0.01, max_wait=2))
    result = await Agent(model).run("hi")
    assert result.output == "done"
    assert len(script.calls) == 2
    assert model.model_name == "scripted"
