"""A model error, a validation failure and a cancelled call leave nothing in the cache: the next call asks again."""

from __future__ import annotations

import asyncio

import pytest
import redis
from _fault_kit import eventually, our_keys
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError, UnexpectedModelBehavior
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import RedisStore, ResponseCache, cached_agent_run

pytestmark = pytest.mark.faults


class Person(BaseModel):
    name: str
    age: int


class Scripted:
    """A model whose behaviour the test switches: `ok`, `error`, `invalid` (output that never validates), `slow`."""

    def __init__(self) -> None:
        self.behaviour = "ok"
        self.calls = 0

    async def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        if self.behaviour == "error":
            raise ModelHTTPError(status_code=500, model_name="scripted", body="server error")
        if self.behaviour == "slow":
            await asyncio.sleep(5)
        age = "not a number" if self.behaviour == "invalid" else 36
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {"name": "Ada", "age": age})])

    def agent(self) -> Agent[None, Person]:
        return Agent(FunctionModel(self, model_name="scripted"), output_type=Person)


async def check_next_call_asks_the_model(model: Scripted, agent: Agent[None, Person], url: str) -> None:
    model.behaviour = "ok"
    calls = model.calls
    assert await cached_agent_run(agent, "Ada", "t", redis_url=url) == Person(name="Ada", age=36)
    assert model.calls == calls + 1


async def test_a_model_error_is_not_cached(redis_url: str, redis_client: redis.Redis) -> None:
    model = Scripted()
    agent = model.agent()
    model.behaviour = "error"
    with pytest.raises(ModelHTTPError):
        await cached_agent_run(agent, "Ada", "t", redis_url=redis_url, retry=False)
    assert our_keys(redis_client) == []
    await check_next_call_asks_the_model(model, agent, redis_url)


async def test_a_validation_failure_is_not_cached(redis_url: str, redis_client: redis.Redis) -> None:
    model = Scripted()
    agent = model.agent()
    model.behaviour = "invalid"
    with pytest.raises(UnexpectedModelBehavior):
        await cached_agent_run(agent, "Ada", "t", redis_url=redis_url)
    assert model.calls == 2  # the first answer and the retry after the validation error
    assert our_keys(redis_client) == []  # both responses were stored during the run, and removed when it failed
    await check_next_call_asks_the_model(model, agent, redis_url)


async def test_a_validation_failure_is_not_cached_by_the_capability_alone(
    redis_url: str, redis_client: redis.Redis
) -> None:
    model = Scripted()
    agent = model.agent()
    model.behaviour = "invalid"
    cache = ResponseCache(redis_url=redis_url)
    with pytest.raises(UnexpectedModelBehavior):
        await agent.run("Ada", capabilities=[cache])
    assert our_keys(redis_client) == []
    model.behaviour = "ok"
    assert (await agent.run("Ada", capabilities=[cache])).output == Person(name="Ada", age=36)
    assert model.calls == 3


async def test_a_cancelled_call_is_not_cached(redis_url: str, redis_client: redis.Redis) -> None:
    model = Scripted()
    agent = model.agent()
    model.behaviour = "slow"
    call = asyncio.create_task(cached_agent_run(agent, "Ada", "t", redis_url=redis_url))
    await eventually(lambda: model.calls == 1, what="the model call")  # cancelled while the model runs
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert our_keys(redis_client) == []  # no entry, and the fill lock was released
    await check_next_call_asks_the_model(model, agent, redis_url)


class RepliesLate(RedisStore):
    """A real `RedisStore` whose lock acquisitions reach Redis, but whose replies never come back (a network that
    drops them): a call cancelled then has its lock taken in Redis without having heard so."""

    async def acquire_lock(self, key: str, token: str, *, ttl: float) -> bool:
        await super().acquire_lock(key, token, ttl=ttl)
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_call_cancelled_while_taking_the_lock_releases_it(redis_url: str, redis_client: redis.Redis) -> None:
    model = Scripted()
    agent = model.agent()
    call = asyncio.create_task(cached_agent_run(agent, "Ada", "t", store=RepliesLate(redis_url)))
    await eventually(lambda: bool(our_keys(redis_client)), what="the lock to be taken")
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert our_keys(redis_client) == [], "released at once, not left to expire"
    assert model.calls == 0


async def test_a_stream_broken_off_is_not_cached(redis_url: str, redis_client: redis.Redis) -> None:
    calls = 0

    async def stream(messages: list[ModelMessage], info: AgentInfo):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        for i in range(20):
            yield f"chunk{i} "
            await asyncio.sleep(0.005)

    agent = Agent(FunctionModel(stream_function=stream, model_name="streaming"))
    cache = ResponseCache(redis_url=redis_url)
    async with agent.run_stream("q", capabilities=[cache]) as run:
        async for _ in run.stream_text(delta=True):
            break  # the consumer stops reading after the first chunk
    assert our_keys(redis_client) == []
    async with agent.run_stream("q", capabilities=[cache]) as run:
        text = await run.get_output()
    assert text == "".join(f"chunk{i} " for i in range(20))
    assert calls == 2
    assert len(our_keys(redis_client)) == 1  # the complete response is stored


async def test_a_successful_retry_after_a_validation_failure_is_cached(redis_url: str) -> None:
    attempts = 0

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal attempts
        attempts += 1
        age = "not a number" if attempts % 2 == 1 else 36  # every first answer is invalid, the retry is fine
        if not info.output_tools:
            return ModelResponse(parts=[TextPart("?")])
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {"name": "Ada", "age": age})])

    agent = Agent(FunctionModel(model, model_name="retrying"), output_type=Person)
    assert await cached_agent_run(agent, "Ada", "t", redis_url=redis_url) == Person(name="Ada", age=36)
    assert await cached_agent_run(agent, "Ada", "t", redis_url=redis_url) == Person(name="Ada", age=36)
    assert attempts == 2  # the run succeeded, so what it stored stays and replays
