"""The differential harness: the same call cached and uncached, compared.

A scenario is a small table row: an agent factory, a call, and one change. `check` runs the call through
`cached_agent_run` twice (the repeat must make no model call: the cache still works there), then with the change;
each cached result is compared with a plain `agent.run` of the same call: output (value and type), the parts of
`new_messages()` without volatile fields, and the exception raised, if any.

The model is an *oracle*: its answer is a digest of everything it receives (messages, instructions, tools,
settings, its own name), so a cached answer to a different request shows up as a different output.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolReturnPart,
)
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_core import to_jsonable_python

from pyai_caching import cached_agent_run
from pyai_caching.stores import Store

VOLATILE = frozenset(
    {
        "timestamp",
        "request_timestamp",
        "duration",
        "tool_call_id",
        "id",
        "provider_details",
        "provider_name",
        "run_id",
        "conversation_id",
        "usage",
    }
)


@dataclass
class Oracle:
    """A deterministic model: it answers with a digest of the request it receives, and counts its calls."""

    name: str = "oracle"
    calls: int = 0
    think: bool = False
    """Also send a thinking part before the answer."""
    fail: bool = False
    """Raise a 503 instead of answering (for fallback scenarios)."""

    def digest(self, messages: list[ModelMessage], info: AgentInfo) -> str:
        seen = {
            "model": self.name,
            "messages": [_clean(to_jsonable_python(m, bytes_mode="base64")) for m in messages],
            "instructions": info.instructions,
            "tools": [(t.name, t.description, t.parameters_json_schema) for t in info.function_tools],
            "output_tools": [(t.name, t.description, t.parameters_json_schema) for t in info.output_tools],
            "settings": to_jsonable_python(info.model_settings or {}),
            "text": info.allow_text_output,
        }
        return hashlib.sha256(json.dumps(seen, sort_keys=True, default=str).encode()).hexdigest()

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        if self.fail:
            from pydantic_ai.exceptions import ModelHTTPError

            raise ModelHTTPError(503, self.name, "overloaded")
        digest = self.digest(messages, info)
        last = messages[-1]
        returned = isinstance(last, ModelRequest) and any(isinstance(p, ToolReturnPart) for p in last.parts)
        parts: list[Any] = [ThinkingPart(f"thinking about {digest[:6]}")] if self.think else []
        if info.function_tools and not returned:
            tool = info.function_tools[0]
            parts.append(ToolCallPart(tool.name, args_for(tool.parameters_json_schema, digest)))
        elif info.output_tools and (not info.allow_text_output or not returned):
            tool = info.output_tools[0]
            parts.append(ToolCallPart(tool.name, args_for(tool.parameters_json_schema, digest)))
        else:
            parts.append(TextPart(text_for(info, digest)))
        return ModelResponse(parts=parts, model_name=self.name)

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> Any:
        response = self(messages, info)
        for part in response.parts:
            if isinstance(part, TextPart):
                for i in range(0, len(part.content), 5):
                    yield part.content[i : i + 5]
            elif isinstance(part, ToolCallPart):
                yield {0: DeltaToolCall(name=part.tool_name, json_args=part.args_as_json_str())}

    def model(self, **kwargs: Any) -> FunctionModel:
        return FunctionModel(self, stream_function=self.stream, model_name=self.name, **kwargs)


def text_for(info: AgentInfo, digest: str) -> str:
    mode = info.model_request_parameters.output_object
    if mode is not None:  # native or prompted structured output: JSON text
        return json.dumps(args_for(mode.json_schema, digest))
    return f"answer {digest[:12]}"


def args_for(schema: dict[str, Any], digest: str, depth: int = 0) -> Any:
    """Arguments matching a JSON schema, derived from `digest` (so a different request gives other arguments)."""
    n = int(digest[depth * 2 : depth * 2 + 6], 16)
    if "anyOf" in schema or "oneOf" in schema:
        return args_for((schema.get("anyOf") or schema["oneOf"])[0], digest, depth)
    defs = schema.get("$defs", {})
    if "$ref" in schema:
        return args_for(defs[schema["$ref"].split("/")[-1]], digest, depth)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {
            k: args_for({**v, "$defs": defs} if "$ref" in v else v, digest, depth + i + 1)
            for i, (k, v) in enumerate(props.items())
        }
    if kind == "integer":
        return n % 1000
    if kind == "number":
        return (n % 10000) / 100
    if kind == "boolean":
        return n % 2 == 0
    if kind == "array":
        return [args_for(schema.get("items", {"type": "string"}), digest, depth + 1)]
    if "enum" in schema:
        return schema["enum"][n % len(schema["enum"])]
    return f"v{digest[depth : depth + 8]}"


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_clean(v) for v in value]
    return value


def parts_of(messages: list[ModelMessage]) -> list[Any]:
    """The messages without volatile fields (times, ids, usage, provider details)."""
    return _clean(to_jsonable_python(messages, bytes_mode="base64"))


@dataclass
class Call:
    """What is passed to `agent.run` (and to `cached_agent_run`)."""

    prompt: Any = "hello"
    kwargs: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    """Keywords for `cached_agent_run` only (cache_whole_run, deps_key, transcript_history, ...)."""
    plain: dict[str, Any] = field(default_factory=dict)
    """Keywords for the plain `agent.run` only (what a `cached_agent_run` keyword means there)."""


@dataclass
class World:
    """An agent, its oracle and anything the scenario's code reads (globals, flags)."""

    agent: Any
    oracle: Oracle
    state: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scenario:
    id: str
    build: Callable[[], World]
    change: Callable[[World, Call], Call | None]
    """Mutate the world and/or return the changed call (`None`: the same call)."""
    call: Call = field(default_factory=Call)
    run: str = "run"
    """`run`, `run_stream`, `run_stream_events` or `iter`."""
    cached_repeat: bool = True
    """Whether the repeat is expected to make no model call."""


@dataclass
class Outcome:
    output: Any = None
    type_name: str = ""
    parts: Any = None
    error: str | None = None


def _describe(output: Any) -> Any:
    """The output by value: every field (excluded ones too), secrets by their value, the exact type of each."""
    secret = getattr(output, "get_secret_value", None)
    if callable(secret):
        return ["secret", type(output).__name__, secret()]
    fields = getattr(type(output), "model_fields", None)
    if isinstance(fields, dict):
        return [type(output).__name__, {k: _describe(getattr(output, k)) for k in fields}]
    if dataclasses.is_dataclass(output) and not isinstance(output, type):
        return [type(output).__name__, {f.name: _describe(getattr(output, f.name)) for f in dataclasses.fields(output)}]
    if isinstance(output, list | tuple):
        return [type(output).__name__, [_describe(v) for v in output]]
    if isinstance(output, dict):
        return ["dict", {repr(k): _describe(v) for k, v in output.items()}]
    return [type(output).__name__, repr(output)]


async def _outcome(coro: Awaitable[Any]) -> Outcome:
    try:
        result = await coro
    except Exception as e:
        return Outcome(error=f"{type(e).__name__}: {e}")
    output = result.output
    return Outcome(_describe(output), type(output).__name__, parts_of(result.new_messages()))


async def plain(world: World, call: Call, run: str) -> Outcome:
    return await _outcome(_run(world.agent, call, run, None))


async def cached(world: World, call: Call, run: str, store: Store) -> Outcome:
    return await _outcome(_run(world.agent, call, run, store))


async def _run(agent: Agent[Any, Any], call: Call, run: str, store: Store | None) -> Any:
    if run == "run":
        if store is None:
            result = await agent.run(call.prompt, **call.kwargs, **call.plain)
        else:
            result = await cached_agent_run(
                agent, call.prompt, "differential", store=store, full_result=True, **call.cache, **call.kwargs
            )
        return result
    capabilities = [] if store is None else [_capability(store, call)]
    kwargs = {**call.kwargs, "capabilities": [*call.kwargs.get("capabilities", []), *capabilities]}
    if run == "run_stream":
        async with agent.run_stream(call.prompt, **kwargs) as stream:
            chunks = [c async for c in stream.stream_output(debounce_by=None)]
            result = _Result(await stream.get_output(), stream.new_messages(), chunks[-1] if chunks else None)
        return result
    if run == "run_stream_events":
        final = None
        async with agent.run_stream_events(call.prompt, **kwargs) as events:
            async for event in events:
                final = getattr(event, "result", final)
        assert final is not None
        return final
    async with agent.iter(call.prompt, **kwargs) as agent_run:
        async for _ in agent_run:
            pass
    assert agent_run.result is not None
    return agent_run.result


def _capability(store: Store, call: Call) -> Any:  # streaming runs use the capability directly
    from pyai_caching import ResponseCache

    return ResponseCache(store=store, task_name="differential", retry=None)


@dataclass
class _Result:
    output: Any
    messages: list[ModelMessage]
    last_chunk: Any

    def new_messages(self) -> list[ModelMessage]:
        return self.messages


def same(a: Outcome, b: Outcome) -> bool:
    return (a.output, a.type_name, a.parts, a.error) == (b.output, b.type_name, b.parts, b.error)


async def check(scenario: Scenario, store: Store) -> None:
    """The differential check of one scenario on one store (see the module docstring)."""
    world = scenario.build()
    call = scenario.call
    expected = await plain(world, call, scenario.run)
    first = await cached(world, call, scenario.run, store)
    assert same(first, expected), f"{scenario.id}: first cached call differs\n{first}\n!=\n{expected}"
    before = world.oracle.calls
    repeat = await cached(world, call, scenario.run, store)
    assert same(repeat, expected), f"{scenario.id}: repeated cached call differs\n{repeat}\n!=\n{expected}"
    if scenario.cached_repeat:
        assert world.oracle.calls == before, f"{scenario.id}: the repeat called the model (the cache did not work)"
    changed = scenario.change(world, call) or call
    expected = await plain(world, changed, scenario.run)
    got = await cached(world, changed, scenario.run, store)
    assert same(got, expected), f"{scenario.id}: cached call after the change differs\n{got}\n!=\n{expected}"
