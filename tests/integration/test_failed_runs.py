"""What a failed run leaves in the cache: good responses stay, suspect ones go."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent, ModelHTTPError
from pydantic_ai.exceptions import UnexpectedModelBehavior
from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import MemoryStore, RateLimitError, cached_agent_run


def _weather_agent(state: dict[str, Any]) -> Agent[Any, str]:
    def model_fn(messages: list[Any], info: AgentInfo) -> ModelResponse:
        returns = [p for p in messages[-1].parts if isinstance(p, ToolReturnPart)]
        if not returns:
            state["first"] += 1
            return ModelResponse(parts=[ToolCallPart("weather", {"city": "Paris"})])
        state["second"] += 1
        if state["rate_limited"]:
            raise ModelHTTPError(429, "test-model", body={"error": "rate_limit_exceeded"})
        return ModelResponse(parts=[TextPart(f"weather: {returns[0].content}")])

    agent: Agent[Any, str] = Agent(FunctionModel(model_fn, model_name="weather-model"))

    @agent.tool_plain
    def weather(city: str) -> str:
        return "sunny"

    return agent


async def test_a_rate_limited_run_keeps_its_earlier_responses() -> None:
    store = MemoryStore()
    state = {"first": 0, "second": 0, "rate_limited": True}
    agent = _weather_agent(state)
    with pytest.raises(RateLimitError):
        await cached_agent_run(agent, "weather?", "t", store=store, max_wait=0.05, initial_wait=0.01)
    assert state["first"] == 1
    state["rate_limited"] = False
    assert await cached_agent_run(agent, "weather?", "t", store=store) == "weather: sunny"
    assert state["first"] == 1, "the first request was answered from the cache, not billed again"


class Strict(BaseModel):
    value: int


async def test_a_response_that_never_validates_is_not_kept() -> None:
    store = MemoryStore()
    calls = {"n": 0}

    def model_fn(messages: list[Any], info: AgentInfo) -> ModelResponse:
        calls["n"] += 1
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {"value": "not a number"})])

    agent: Agent[Any, Strict] = Agent(FunctionModel(model_fn, model_name="bad"), output_type=Strict)
    for expected_calls in (2, 4):  # the first attempt and its one output retry
        with pytest.raises(UnexpectedModelBehavior):
            await cached_agent_run(agent, "p", "t", store=store)
        assert calls["n"] == expected_calls, "the failing response was not replayed from the cache"
