"""A streamed hit streams: the deltas of an uncached streamed run, of the cached miss and of the cached hit, compared
delta by delta, for `run_stream` (`stream_text(delta=True)`, `stream_output`, `stream_response`),
`run_stream_events` and `iter` (`node.stream`), on every store.

The model streams thinking deltas (`DeltaThinkingCalls`), tool-call argument deltas (`DeltaToolCalls`, for a
function tool and for an output tool) and text deltas, several of each, and its answers depend on what it was
sent (the tool's result is in the text), so a hit that served another request's answer shows up too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ToolReturnPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaThinkingPart, DeltaToolCall, FunctionModel
from pydantic_core import to_jsonable_python

from pyai_caching import ResponseCache
from pyai_caching.stores import LocalStore, MemoryStore, RedisStore, Store

VOLATILE = frozenset({"timestamp", "request_timestamp", "duration", "run_id", "usage", "conversation_id"})
"""What differs between two runs of the same agent anyway (times, ids of the run) or on a hit by design (usage)."""


class Profile(BaseModel):
    name: str = ""
    age: int | None = None


@dataclass
class Streamer:
    """A streamed model: thinking deltas, then a tool call in argument deltas, then text deltas (or an output tool
    call in argument deltas) that depend on the prompt and the tool's result."""

    calls: int = 0

    async def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        self.calls += 1
        last = messages[-1]
        returned = [p for p in last.parts if isinstance(p, ToolReturnPart)] if isinstance(last, ModelRequest) else []
        prompt = next(
            p.content for m in messages if isinstance(m, ModelRequest) for p in m.parts if isinstance(p, UserPromptPart)
        )
        yield {0: DeltaThinkingPart(content="Let me ")}
        yield {0: DeltaThinkingPart(content="think about ")}
        yield {0: DeltaThinkingPart(content=f"{prompt}.")}
        if info.function_tools and not returned:
            tool = info.function_tools[0].name
            yield {1: DeltaToolCall(name=tool, json_args='{"ci', tool_call_id="call-1")}
            yield {1: DeltaToolCall(json_args='ty": "Pa', tool_call_id="call-1")}
            yield {1: DeltaToolCall(json_args='ris"}', tool_call_id="call-1")}
            return
        if info.output_tools:
            tool = info.output_tools[0].name
            yield {1: DeltaToolCall(name=tool, json_args='{"name": "A', tool_call_id="call-2")}
            yield {1: DeltaToolCall(json_args='da", "ag', tool_call_id="call-2")}
            yield {1: DeltaToolCall(json_args=f'e": {len(prompt)}}}', tool_call_id="call-2")}
            return
        weather = returned[0].content if returned else "unknown"
        for chunk in ("Hello ", "there, ", f"you asked {prompt!r}; ", "the weather ", f"is {weather}."):
            yield chunk


def _never(messages: list[ModelMessage], info: AgentInfo) -> Any:
    raise AssertionError("the runs here stream")


def chat_agent(model: Streamer) -> Agent[None, str]:
    agent = Agent(FunctionModel(_never, stream_function=model, model_name="streamer"))

    @agent.tool_plain
    def weather(city: str) -> str:
        """The weather in a city."""
        return f"sunny in {city}"

    return agent


def profile_agent(model: Streamer) -> Agent[None, Profile]:
    return Agent(FunctionModel(_never, stream_function=model, model_name="streamer"), output_type=Profile)


def clean(value: Any) -> Any:
    """A JSON form without what differs between runs anyway (see `VOLATILE`)."""
    value = to_jsonable_python(value, bytes_mode="base64")
    return _drop(value)


def _drop(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_drop(v) for v in value]
    return value


Collected = tuple[list[Any], Any, Any]
"""What a run's consumer saw (deltas, outputs or events, in order), the output, and the messages."""


async def text_deltas(agent: Agent[None, Any], caps: list[Any]) -> Collected:
    async with agent.run_stream("Paris?", capabilities=caps) as stream:
        seen = [d async for d in stream.stream_text(delta=True, debounce_by=None)]
        return seen, await stream.get_output(), clean(stream.all_messages())


async def outputs(agent: Agent[None, Any], caps: list[Any]) -> Collected:
    async with agent.run_stream("Paris?", capabilities=caps) as stream:
        seen = [clean(o) async for o in stream.stream_output(debounce_by=None)]
        return seen, await stream.get_output(), clean(stream.all_messages())


async def responses(agent: Agent[None, Any], caps: list[Any]) -> Collected:
    async with agent.run_stream("Paris?", capabilities=caps) as stream:
        seen = [clean(r) async for r in stream.stream_response(debounce_by=None)]
        return seen, await stream.get_output(), clean(stream.all_messages())


async def stream_events(agent: Agent[None, Any], caps: list[Any]) -> Collected:
    async with agent.run_stream_events("Paris?", capabilities=caps) as events:
        seen = [[type(event).__name__, clean(event)] async for event in events]
    assert seen[-1][0] == "AgentRunResultEvent"
    return seen, seen[-1], None


async def iter_nodes(agent: Agent[None, Any], caps: list[Any]) -> Collected:
    seen: list[Any] = []
    async with agent.iter("Paris?", capabilities=caps) as run:
        async for node in run:
            if Agent.is_model_request_node(node) or Agent.is_call_tools_node(node):
                async with node.stream(run.ctx) as events:
                    seen.extend([[type(event).__name__, clean(event)] async for event in events])
    assert run.result is not None
    return seen, run.result.output, clean(run.result.all_messages())


SURFACES: dict[str, Callable[[Agent[None, Any], list[Any]], Awaitable[Collected]]] = {
    "stream_text_delta": text_deltas,
    "stream_output": outputs,
    "stream_response": responses,
    "run_stream_events": stream_events,
    "iter_node_stream": iter_nodes,
}
AGENTS = {"tool_then_text": chat_agent, "output_tool": profile_agent}


@pytest.fixture(params=["memory", "local", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "local":
        yield LocalStore(tmp_path / "cache")
    else:
        yield RedisStore(request.getfixturevalue("redis_url"))


CASES = [
    (surface, agent)
    for surface in sorted(SURFACES)
    for agent in sorted(AGENTS)
    if (surface, agent) != ("stream_text_delta", "output_tool")  # stream_text is for text output only
]


@pytest.mark.parametrize(("surface", "agent_kind"), CASES)
async def test_a_streamed_hit_streams_the_deltas_of_the_miss(surface: str, agent_kind: str, store: Store) -> None:
    collect, build = SURFACES[surface], AGENTS[agent_kind]
    model = Streamer()
    plain = await collect(build(model), [])
    assert model.calls == 2 if agent_kind == "tool_then_text" else model.calls == 1

    cache = ResponseCache(store=store, retry=None)
    model.calls = 0
    miss = await collect(build(model), [cache])
    assert model.calls == (2 if agent_kind == "tool_then_text" else 1)
    hit = await collect(build(model), [cache])
    assert model.calls == (2 if agent_kind == "tool_then_text" else 1), "the hit called the model"

    assert miss == plain
    assert hit == plain
    deltas = [e for e in hit[0] if isinstance(e, list) and e[0] == "PartDeltaEvent"]
    assert surface not in ("run_stream_events", "iter_node_stream") or len(deltas) >= 4, hit[0]
    assert len(hit[0]) >= 3, "the hit streamed in more than one chunk"


async def test_the_text_deltas_of_a_hit_are_those_of_the_miss(store: Store) -> None:
    model = Streamer()
    cache = ResponseCache(store=store, retry=None)
    first, _, _ = await text_deltas(chat_agent(model), [cache])
    again, output, _ = await text_deltas(chat_agent(model), [cache])
    expected = ["Hello ", "there, ", "you asked 'Paris?'; ", "the weather ", "is sunny in Paris."]
    assert first == expected
    assert again == expected
    assert output == "".join(expected)
    assert model.calls == 2
