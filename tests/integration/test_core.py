"""The core promise: a repeated identical call returns the same typed output without calling the model."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from _agents import Counter, make_agent
from _redis_servers import RedisServer
from pydantic import BaseModel
from pydantic_ai import Agent, RunContext
from pydantic_ai.exceptions import UserError
from pydantic_ai.messages import ModelMessagesTypeAdapter, ModelRequest, ModelResponse, TextPart, UserPromptPart
from pydantic_ai.models.test import TestModel
from pydantic_ai.run import AgentRunResult

from pyai_caching import (
    CacheMissError,
    CacheMode,
    ConfigurationError,
    LocalStore,
    MemoryStore,
    ResponseCache,
    cached_agent_run,
    cached_agent_run_sync,
    clear_cache,
    clear_cache_async,
)
from pyai_caching.types import ModelMessage as PlainMessage

ROOT = Path(__file__).resolve().parents[2]


class UserProfile(BaseModel):
    name: str
    age: int


@dataclasses.dataclass
class Pet:
    kind: str
    legs: int


@pytest.fixture(params=["memory", "local", "redis"])
def store_kwargs(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    """The cache options of a call, for each kind of store."""
    if request.param == "memory":
        return {"store": MemoryStore()}
    if request.param == "local":
        return {"store": LocalStore(tmp_path / "cache")}
    return {"redis_url": request.getfixturevalue("redis_url")}


async def test_miss_then_hit_returns_same_typed_output(store_kwargs: dict[str, Any]) -> None:
    counter = Counter()
    agent = make_agent(counter, UserProfile, instructions="Make a profile.")
    first = await cached_agent_run(agent, "Ada, 36", "make_profile", **store_kwargs)
    second = await cached_agent_run(agent, "Ada, 36", "make_profile", **store_kwargs)
    third = await cached_agent_run(agent, "Ada, 36", "make_profile", **store_kwargs)
    assert first == second == third == UserProfile(name="Ada", age=36)
    assert isinstance(third, UserProfile)
    assert counter.calls == 1


async def test_hits_are_fresh_objects() -> None:
    counter = Counter()
    agent = make_agent(counter, UserProfile)
    store = MemoryStore()
    a = await cached_agent_run(agent, "x", "t", store=store)
    b = await cached_agent_run(agent, "x", "t", store=store)
    c = await cached_agent_run(agent, "x", "t", store=store)
    b.name = "changed"
    assert c.name == "Ada"
    assert a.name == "Ada"
    assert b is not c


@pytest.mark.parametrize(
    ("output_type", "payload", "expected"),
    [
        (UserProfile, {"name": "Ada", "age": 36}, UserProfile(name="Ada", age=36)),
        (Pet, {"kind": "cat", "legs": 4}, Pet(kind="cat", legs=4)),
        (list[int], {"response": [1, 2, 3]}, [1, 2, 3]),
        (str, "plain text answer", "plain text answer"),
        (UserProfile | Pet, {"kind": "dog", "legs": 4}, Pet(kind="dog", legs=4)),
    ],
)
async def test_structured_outputs_keep_their_type(output_type: Any, payload: Any, expected: Any) -> None:
    counter = Counter(payload=payload)
    if output_type == UserProfile | Pet:

        def pick(messages: Any, info: Any) -> ModelResponse:
            counter.calls += 1
            tool = next(t for t in info.output_tools if "Pet" in t.name)
            from pydantic_ai.messages import ToolCallPart

            return ModelResponse(parts=[ToolCallPart(tool.name, payload)])

        from pydantic_ai.models.function import FunctionModel

        agent: Agent[Any, Any] = Agent(FunctionModel(pick, model_name="m"), output_type=output_type)
    else:
        agent = make_agent(counter, output_type)
    store = MemoryStore()
    for _ in range(3):
        out = await cached_agent_run(agent, "go", "typed", store=store)
        assert out == expected
        assert type(out) is type(expected)
    assert counter.calls == 1


async def test_full_result_same_types_on_hit_and_miss() -> None:
    counter = Counter()
    agent = make_agent(counter, UserProfile)
    store = MemoryStore()
    miss = await cached_agent_run(agent, "Ada", "t", store=store, full_result=True)
    hit = await cached_agent_run(agent, "Ada", "t", store=store, full_result=True)
    for result in (miss, hit):
        assert isinstance(result, AgentRunResult)
        assert isinstance(result.output, UserProfile)
        messages = result.all_messages()
        assert isinstance(messages[0], ModelRequest)
        assert isinstance(messages[1], ModelResponse)
        assert [type(m) for m in result.new_messages()] == [type(m) for m in miss.new_messages()]
    assert miss.usage.input_tokens == 100
    # a hit must not re-bill: no tokens, no cost
    assert hit.usage.input_tokens == 0
    assert hit.usage.output_tokens == 0
    assert not hit.usage.cost
    assert counter.calls == 1


async def test_full_result_with_history_keeps_history_and_new_messages() -> None:
    counter = Counter(payload="fine")
    agent = make_agent(counter)
    store = MemoryStore()
    history = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello!"}]
    miss = await cached_agent_run(agent, "how are you", "t", store=store, transcript_history=history, full_result=True)
    hit = await cached_agent_run(agent, "how are you", "t", store=store, transcript_history=history, full_result=True)
    assert counter.calls == 1
    for result in (miss, hit):
        assert len(result.all_messages()) == 4
        assert len(result.new_messages()) == 2
        assert result.output == "fine"


async def test_request_level_hit_through_capability_has_no_usage() -> None:
    counter = Counter()
    agent = make_agent(counter, UserProfile)
    cache = ResponseCache(store=MemoryStore())
    first = await agent.run("Ada", capabilities=[cache])
    second = await agent.run("Ada", capabilities=[cache])
    assert first.output == second.output
    assert counter.calls == 1
    assert second.usage.input_tokens == 0
    assert second.usage.output_tokens == 0


# --- what invalidates a key --------------------------------------------------------------------------------


def _dynamic_agent(counter: Counter, text: str) -> Agent[Any, Any]:
    agent = make_agent(counter)

    @agent.instructions
    def dyn(ctx: RunContext[Any]) -> str:
        return text

    return agent


def _tool_agent(counter: Counter, doc: str) -> Agent[Any, Any]:
    agent = make_agent(counter)

    def lookup(city: str) -> str:
        return "sunny"

    lookup.__doc__ = doc
    agent.tool_plain(lookup)
    return agent


VARIANTS: dict[str, Any] = {
    "prompt": lambda c: (make_agent(c), "other prompt", {}),
    "history": lambda c: (make_agent(c), "prompt", {"transcript_history": ["earlier"]}),
    "instructions": lambda c: (make_agent(c, instructions="Be terse."), "prompt", {}),
    "run instructions": lambda c: (make_agent(c), "prompt", {"instructions": "Be terse."}),
    "dynamic instructions": lambda c: (_dynamic_agent(c, "today is Tuesday"), "prompt", {}),
    "system prompt": lambda c: (make_agent(c, system_prompt="You are a pirate."), "prompt", {}),
    "output type": lambda c: (make_agent(c, UserProfile), "prompt", {}),
    "model": lambda c: (Agent(c.model("other-model")), "prompt", {}),
    "model settings": lambda c: (make_agent(c), "prompt", {"model_settings": {"temperature": 0.9}}),
    "tools": lambda c: (_tool_agent(c, "Weather of a city."), "prompt", {}),
    "namespace": lambda c: (make_agent(c), "prompt", {"namespace": "tenant-b"}),
}


def _base(counter: Counter) -> tuple[Agent[Any, Any], str, dict[str, Any]]:
    return make_agent(counter), "prompt", {}


@pytest.mark.parametrize("ingredient", sorted(VARIANTS))
async def test_each_key_ingredient_changed_alone_is_a_miss(ingredient: str) -> None:
    store = MemoryStore()
    counter = Counter(payload="answer")
    agent, prompt, kwargs = _base(counter)
    await cached_agent_run(agent, prompt, "t", store=store, **kwargs)
    assert counter.calls == 1
    agent2, prompt2, kwargs2 = VARIANTS[ingredient](counter)
    await cached_agent_run(agent2, prompt2, "t", store=store, **kwargs2)
    assert counter.calls == 2, f"changing {ingredient} alone must miss"
    # and the variant itself is cached
    await cached_agent_run(agent2, prompt2, "t", store=store, **kwargs2)
    assert counter.calls == 2


async def test_dynamic_instruction_text_change_is_a_miss() -> None:
    store = MemoryStore()
    counter = Counter(payload="answer")
    text = {"value": "Monday"}
    agent = make_agent(counter)

    @agent.instructions
    def today() -> str:
        return f"Today is {text['value']}."

    await cached_agent_run(agent, "what day is it", "t", store=store)
    await cached_agent_run(agent, "what day is it", "t", store=store)
    assert counter.calls == 1
    text["value"] = "Tuesday"
    await cached_agent_run(agent, "what day is it", "t", store=store)
    assert counter.calls == 2


async def test_tool_description_change_is_a_miss_and_identical_rebuild_hits() -> None:
    store = MemoryStore()
    counter = Counter(payload="answer")
    await cached_agent_run(_tool_agent(counter, "Weather of a city."), "p", "t", store=store)
    await cached_agent_run(_tool_agent(counter, "Weather of a city."), "p", "t", store=store)
    assert counter.calls == 1
    await cached_agent_run(_tool_agent(counter, "Weather of a town."), "p", "t", store=store)
    assert counter.calls == 2


async def test_identical_values_built_afresh_hit() -> None:
    store = MemoryStore()
    counter = Counter()

    def build() -> tuple[Agent[Any, Any], dict[str, Any]]:
        agent = make_agent(counter, UserProfile, instructions="Make a profile.", system_prompt="You are careful.")
        kwargs = {
            "model_settings": {"temperature": 0.2, "max_tokens": 100},
            "transcript_history": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "hi"}],
        }
        return agent, kwargs

    for _ in range(3):
        agent, kwargs = build()
        await cached_agent_run(agent, "Ada", "t", store=store, **kwargs)
    assert counter.calls == 1


async def test_transport_settings_do_not_change_the_key() -> None:
    store = MemoryStore()
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    await cached_agent_run(agent, "p", "t", store=store, model_settings={"temperature": 0.1, "timeout": 5})
    await cached_agent_run(
        agent, "p", "t", store=store, model_settings={"temperature": 0.1, "timeout": 30, "extra_headers": {"x": "y"}}
    )
    assert counter.calls == 1


async def test_history_survives_a_json_round_trip() -> None:
    store = MemoryStore()
    counter = Counter(payload="second answer")
    agent = make_agent(counter)
    first = await cached_agent_run(agent, "first question", "t", store=store, full_result=True)
    history = first.all_messages()
    await cached_agent_run(agent, "follow-up", "t", store=store, message_history=history)
    assert counter.calls == 2
    reloaded = ModelMessagesTypeAdapter.validate_json(ModelMessagesTypeAdapter.dump_json(history))
    await cached_agent_run(agent, "follow-up", "t", store=store, message_history=reloaded)
    assert counter.calls == 2


async def test_agent_override_model_is_honoured() -> None:
    store = MemoryStore()
    counter = Counter(payload="from counter")
    agent = make_agent(counter)
    await cached_agent_run(agent, "p", "t", store=store)
    with agent.override(model=TestModel(custom_output_text="from test model")):
        out = await cached_agent_run(agent, "p", "t", store=store)
        assert out == "from test model"
        again = await cached_agent_run(agent, "p", "t", store=store)
        assert again == "from test model"
    assert await cached_agent_run(agent, "p", "t", store=store) == "from counter"
    assert counter.calls == 1


# --- tools, streaming ----------------------------------------------------------------------------------------


async def test_tool_using_agent_reruns_tools_and_hits_every_request() -> None:
    store = MemoryStore()
    tool_calls: list[str] = []
    model_calls = 0

    def model_fn(messages: Any, info: Any) -> ModelResponse:
        nonlocal model_calls
        model_calls += 1
        from pydantic_ai.messages import ToolCallPart, ToolReturnPart

        last = messages[-1]
        returns = [p for p in last.parts if isinstance(p, ToolReturnPart)]
        if returns:
            return ModelResponse(parts=[TextPart(f"weather: {returns[0].content}")])
        return ModelResponse(parts=[ToolCallPart("weather", {"city": "Paris"})])

    from pydantic_ai.models.function import FunctionModel

    agent: Agent[Any, str] = Agent(FunctionModel(model_fn, model_name="tooly"))
    forecast = {"Paris": "sunny"}

    @agent.tool_plain
    def weather(city: str) -> str:
        tool_calls.append(city)
        return forecast[city]

    assert await cached_agent_run(agent, "weather?", "t", store=store) == "weather: sunny"
    assert (model_calls, len(tool_calls)) == (2, 1)
    assert await cached_agent_run(agent, "weather?", "t", store=store) == "weather: sunny"
    assert (model_calls, len(tool_calls)) == (2, 2), "tools run again with real results; both requests hit"
    forecast["Paris"] = "rainy"
    assert await cached_agent_run(agent, "weather?", "t", store=store) == "weather: rainy"
    assert model_calls == 3, "a different tool result makes the next request miss"


async def test_whole_run_caching_skips_tools_on_a_hit() -> None:
    store = MemoryStore()
    tool_calls: list[str] = []

    def model_fn(messages: Any, info: Any) -> ModelResponse:
        from pydantic_ai.messages import ToolCallPart, ToolReturnPart

        returns = [p for p in messages[-1].parts if isinstance(p, ToolReturnPart)]
        if returns:
            return ModelResponse(parts=[TextPart(f"weather: {returns[0].content}")])
        return ModelResponse(parts=[ToolCallPart("weather", {"city": "Paris"})])

    from pydantic_ai.models.function import FunctionModel

    agent: Agent[Any, str] = Agent(FunctionModel(model_fn, model_name="tooly"))

    @agent.tool_plain
    def weather(city: str) -> str:
        tool_calls.append(city)
        return "sunny"

    for _ in range(3):
        assert (
            await cached_agent_run(agent, "w?", "t", store=store, cache_whole_run=True, deps=None) == "weather: sunny"
        )
    assert len(tool_calls) == 1


async def test_run_stream_through_response_cache() -> None:
    counter = Counter(payload="a streamed answer of some length")
    agent = make_agent(counter)
    cache = ResponseCache(store=MemoryStore())
    outputs = []
    for _ in range(2):
        async with agent.run_stream("tell me", capabilities=[cache]) as stream:
            chunks = [c async for c in stream.stream_text(delta=True)]
            outputs.append(("".join(chunks), await stream.get_output()))
    assert outputs[0] == outputs[1] == ("a streamed answer of some length", "a streamed answer of some length")
    assert counter.calls == 1


async def test_run_stream_events_and_iter_through_response_cache() -> None:
    counter = Counter()
    agent = make_agent(counter, UserProfile)
    cache = ResponseCache(store=MemoryStore())
    await agent.run("p", capabilities=[cache])
    async with agent.run_stream_events("p", capabilities=[cache]) as stream:
        events = [e async for e in stream]
    assert events[-1].result.output == UserProfile(name="Ada", age=36)  # type: ignore[union-attr]
    async with agent.iter("p", capabilities=[cache]) as run:
        async for _ in run:
            pass
    assert run.result is not None
    assert run.result.output == UserProfile(name="Ada", age=36)
    assert counter.calls == 1


# --- modes -----------------------------------------------------------------------------------------------------


async def test_read_only_miss_raises_without_calling_the_model() -> None:
    counter = Counter()
    agent = make_agent(counter, UserProfile)
    with pytest.raises(CacheMissError, match="read-only"):
        await cached_agent_run(agent, "p", "t", store=MemoryStore(), cache_mode="read_only")
    assert counter.calls == 0


async def test_read_only_hit_and_refresh_and_bypass() -> None:
    counter = Counter(payload="v1")
    agent = make_agent(counter)
    store = MemoryStore()
    await cached_agent_run(agent, "p", "t", store=store)
    assert await cached_agent_run(agent, "p", "t", store=store, cache_mode=CacheMode.READ_ONLY) == "v1"
    counter.payload = "v2"
    assert await cached_agent_run(agent, "p", "t", store=store, cache_mode="bypass") == "v2"
    assert await cached_agent_run(agent, "p", "t", store=store) == "v1", "bypass must not write"
    assert await cached_agent_run(agent, "p", "t", store=store, cache_mode="refresh") == "v2"
    assert await cached_agent_run(agent, "p", "t", store=store) == "v2", "refresh overwrites"
    assert counter.calls == 3


# --- history forms ---------------------------------------------------------------------------------------------


async def test_transcript_forms_are_equivalent() -> None:
    store = MemoryStore()
    counter = Counter(payload="ok")
    agent = make_agent(counter)
    forms: list[list[Any]] = [
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}],
        ["hi", PlainMessage("assistant", "hello")],
        [ModelRequest(parts=[UserPromptPart("hi")]), ModelResponse(parts=[TextPart("hello")])],
    ]
    for form in forms:
        await cached_agent_run(agent, "next", "t", store=store, transcript_history=form)
    assert counter.calls == 1


async def test_message_converter_is_applied() -> None:
    store = MemoryStore()
    counter = Counter(payload="ok")
    agent = make_agent(counter)

    def converter(items: list[Any]) -> list[Any]:
        return [{"role": speaker, "content": text} for speaker, text in items]

    await cached_agent_run(
        agent, "next", "t", store=store, transcript_history=[("user", "hi")], message_converter=converter
    )
    await cached_agent_run(agent, "next", "t", store=store, transcript_history=["hi"])
    assert counter.calls == 1
    assert counter.seen[0][0].parts[0].content == "hi"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("transcript", "message"),
    [
        ([{"role": "robot", "content": "x"}], r"transcript_history\[0\]: unknown role 'robot'"),
        (["ok", {"content": "x"}], r"transcript_history\[1\].*missing \['role'\]"),
        (["ok", "ok", 42], r"transcript_history\[2\]: unsupported message of type int"),
        ([{"role": "user", "content": 5}], r"transcript_history\[0\]: content must be a string"),
    ],
)
async def test_bad_transcripts_name_the_index(transcript: list[Any], message: str) -> None:
    counter = Counter()
    with pytest.raises(ValueError, match=message):
        await cached_agent_run(make_agent(counter), "p", "t", store=MemoryStore(), transcript_history=transcript)
    assert counter.calls == 0


@pytest.mark.parametrize("prompt", ["", "   ", "\n\t"])
async def test_empty_prompt_is_answered_as_agent_run_answers_it(prompt: str) -> None:
    # The first rule: `agent.run("")` sends an empty user prompt and returns the model's answer; so does the cache.
    counter = Counter()
    agent = make_agent(counter)
    expected = (await agent.run(prompt)).output
    store = MemoryStore()
    assert await cached_agent_run(agent, prompt, "t", store=store) == expected
    assert await cached_agent_run(agent, prompt, "t", store=store) == expected
    assert counter.calls == 2  # the plain run and the first cached call; the repeat is a hit


async def test_no_prompt_and_no_history_raises_what_agent_run_raises() -> None:
    counter = Counter()
    agent = make_agent(counter)
    with pytest.raises(UserError) as plain:
        await agent.run(None)
    with pytest.raises(UserError) as cached:
        await cached_agent_run(agent, None, "t", store=MemoryStore())
    assert str(cached.value) == str(plain.value)
    assert counter.calls == 0


@pytest.mark.parametrize(
    "url",
    ["http://localhost:6379", "redis://", "redis://:secretpw@", "not a url", "redis://user:secretpw@host:notaport/0"],
)
async def test_bad_url_is_a_configuration_error_without_the_password(url: str) -> None:
    counter = Counter()
    with pytest.raises(ConfigurationError) as info:
        await cached_agent_run(make_agent(counter), "p", "t", redis_url=url)
    assert "secretpw" not in str(info.value)
    assert counter.calls == 0


# --- persistence across processes, corrupt entries, clearing ---------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    sys.path.insert(0, {tests!r})
    from _agents import Counter, make_agent
    from pydantic import BaseModel
    from pyai_caching import cached_agent_run, LocalStore

    class UserProfile(BaseModel):
        name: str
        age: int

    async def main():
        counter = Counter()
        agent = make_agent(counter, UserProfile, instructions="Make a profile.")
        kwargs = json.loads(sys.argv[1])
        if "dir" in kwargs:
            kwargs = {{"store": LocalStore(kwargs["dir"])}}
        out = await cached_agent_run(agent, "Ada, 36", "make_profile", **kwargs)
        print(json.dumps({{"calls": counter.calls, "output": out.model_dump()}}))

    asyncio.run(main())
    """
)


def _child(kwargs: dict[str, Any]) -> dict[str, Any]:
    code = _CHILD.format(tests=str(ROOT / "tests"))
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps(kwargs)], capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


@pytest.mark.parametrize("kind", ["redis", "local"])
async def test_hit_in_a_new_process_after_a_miss_in_the_parent(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if kind == "redis":
        kwargs: dict[str, Any] = {"redis_url": request.getfixturevalue("redis_url")}
        child_kwargs = kwargs
    else:
        kwargs = {"store": LocalStore(tmp_path)}
        child_kwargs = {"dir": str(tmp_path)}
    counter = Counter()
    agent = make_agent(counter, UserProfile, instructions="Make a profile.")
    await cached_agent_run(agent, "Ada, 36", "make_profile", **kwargs)
    assert counter.calls == 1
    child = await asyncio.to_thread(_child, child_kwargs)
    assert child == {"calls": 0, "output": {"name": "Ada", "age": 36}}


def test_embedded_store_shared_by_two_processes_at_once(tmp_path: Path) -> None:
    code = _CHILD.format(tests=str(ROOT / "tests"))
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, json.dumps({"dir": str(tmp_path)})],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert all(r["output"] == {"name": "Ada", "age": 36} for r in results)
    # afterwards a third process hits
    assert _child({"dir": str(tmp_path)})["calls"] == 0


async def test_corrupt_entries_are_misses_that_get_overwritten(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    counter = Counter()
    agent = make_agent(counter, UserProfile)
    await cached_agent_run(agent, "p", "t", redis_url=redis_url)
    keys = sorted(k.decode() for k in redis_client.keys("pyai_caching:*"))
    assert keys, "entries were written"
    for key in keys:
        redis_client.set(key, b'{"format": "pyai_caching", "version": 1, "kind": "resp')  # truncated
    fresh = make_agent(counter, UserProfile)  # new agent: the request-level path is used
    with caplog.at_level(logging.WARNING, logger="pyai_caching"):
        assert await cached_agent_run(fresh, "p", "t", redis_url=redis_url) == UserProfile(name="Ada", age=36)
    assert counter.calls == 2
    assert "unreadable entry" in caplog.text
    # overwritten: the next call hits
    assert await cached_agent_run(make_agent(counter, UserProfile), "p", "t", redis_url=redis_url)
    assert counter.calls == 2


async def test_future_version_entry_is_a_miss(redis_url: str, redis_client: redis.Redis) -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    await cached_agent_run(agent, "p", "t", redis_url=redis_url)
    for key in redis_client.keys("pyai_caching:*"):
        data = json.loads(redis_client.get(key))  # type: ignore[arg-type]
        data["version"] = 99
        redis_client.set(key, json.dumps(data))
    await cached_agent_run(make_agent(counter), "p", "t", redis_url=redis_url)
    assert counter.calls == 2


async def test_clear_cache_deletes_only_our_entries(redis_url: str, redis_client: redis.Redis) -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    redis_client.set("other:app:key", "keep me")
    redis_client.hset("other:hash", "f", "v")
    await cached_agent_run(agent, "p", "t", redis_url=redis_url, namespace="a")
    await cached_agent_run(agent, "p", "t", redis_url=redis_url, namespace="b")
    deleted_a = await clear_cache_async(redis_url, namespace="a")
    assert deleted_a >= 1
    assert not redis_client.keys("pyai_caching:a:*")
    assert redis_client.keys("pyai_caching:b:*")
    deleted_all = await asyncio.to_thread(clear_cache, redis_url)
    assert deleted_all >= 1
    assert not redis_client.keys("pyai_caching:*")
    assert redis_client.get("other:app:key") == b"keep me"
    assert redis_client.hget("other:hash", "f") == b"v"


# --- sync entry point ------------------------------------------------------------------------------------------


def test_sync_entry_point_from_plain_code(redis_url: str) -> None:
    counter = Counter()
    agent = make_agent(counter, UserProfile)
    for _ in range(3):
        assert cached_agent_run_sync(agent, "Ada", "t", redis_url=redis_url) == UserProfile(name="Ada", age=36)
    assert counter.calls == 1


async def test_sync_entry_point_inside_a_running_loop(redis_url: str) -> None:
    counter = Counter()
    agent = make_agent(counter, UserProfile)
    # as in a notebook: a sync call made while this event loop is running
    assert cached_agent_run_sync(agent, "Ada", "t", redis_url=redis_url) == UserProfile(name="Ada", age=36)
    assert cached_agent_run_sync(agent, "Ada", "t", redis_url=redis_url, full_result=True).output.age == 36
    assert counter.calls == 1


def test_sync_calls_do_not_leak_connections(redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory()  # a server of its own: the session server also holds other tests' pools
    counter = Counter()
    agent = make_agent(counter, UserProfile)
    for i in range(30):
        cached_agent_run_sync(agent, f"prompt {i % 3}", "t", redis_url=server.url(db=3))
    with server.client() as checker:
        ours = [c for c in checker.client_list() if c["name"] == "pyai_caching"]  # not the checker itself
    assert 1 <= len(ours) <= 5, ours


@pytest.mark.parametrize("kind", ["memory", "redis"])
async def test_an_agent_that_already_has_a_response_cache_does_not_wait_for_itself(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """Two caches on one store see the same key; the inner one must not wait for the outer one's fill."""
    counter = Counter(payload="x")
    kwargs: dict[str, Any] = (
        {"store": MemoryStore()} if kind == "memory" else {"redis_url": request.getfixturevalue("redis_url")}
    )
    agent = Agent(counter.model(), capabilities=[ResponseCache(**kwargs)])
    for _ in range(3):
        assert await asyncio.wait_for(cached_agent_run(agent, "p", "t", **kwargs), timeout=20) == "x"
    assert counter.calls == 1
