"""The agents, histories and timed scenarios of the benchmark.

Every scenario is an `async` callable that runs one batch and returns one figure for the round (a median per-call
time in microseconds, or calls per second); `run.py` runs every scenario once per round, in turn, and reports the
median over the rounds.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from statistics import median
from typing import Any

import redis.asyncio as aioredis
from pydantic import BaseModel
from pydantic_ai import Agent, RunContext
from pydantic_ai.capabilities import Hooks, ProcessHistory
from pydantic_ai.messages import (
    ModelMessage,
    ModelRequest,
    ModelResponse,
    TextPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import cached_agent_run
from pyai_caching.engine.canonical import canonical_request
from pyai_caching.engine.keys import request_digest

__all__ = [
    "PROMPT",
    "TOOL_PROMPT",
    "Agents",
    "UserProfile",
    "direct_run",
    "history",
    "key_time_us",
    "loop_stall_us",
    "make_agents",
    "per_call_us",
    "profile_hit",
    "redis_get_floor",
    "reference_loop_ms",
    "throughput",
    "tool_hit",
]

PROMPT = "Make a profile for Ada Lovelace, mathematician, born 1815."
TOOL_PROMPT = "Look up user 42 and make a profile."


class UserProfile(BaseModel):
    """The structured output of the benchmark agents."""

    name: str
    age: int
    email: str
    city: str
    interests: list[str]
    bio: str


_PROFILE_ARGS: dict[str, Any] = {
    "name": "Ada Lovelace",
    "age": 36,
    "email": "ada@example.com",
    "city": "London",
    "interests": ["mathematics", "analytical engines", "poetry", "music"],
    "bio": (
        "Ada Lovelace was an English mathematician and writer, chiefly known for her work on Charles Babbage's "
        "proposed mechanical general-purpose computer, the Analytical Engine. She was the first to recognise that "
        "the machine had applications beyond pure calculation."
    ),
}


@dataclass
class Agents:
    """The agents under test, and the request parameters the tool-using one sends (for the key benchmark)."""

    profile: Agent[None, UserProfile]
    """Tool-less, structured output: one model request per run (static: takes the run-level fast path)."""
    tool: Agent[None, UserProfile]
    """Calls `lookup_user` first, then answers: two model requests per run (request-level caching)."""
    hooked: Agent[None, UserProfile]
    """The profile agent with capabilities (a `before_model_request` hook and a history processor): one request per
    run, served at request level, inside pydantic-ai's graph."""
    captured: dict[str, Any] = field(default_factory=dict)
    """`ModelRequestParameters` seen by the tool-using agent's model."""
    model_calls: dict[str, int] = field(default_factory=dict)
    """How often each agent's model function actually ran (a hit must not change it)."""
    tool_calls: dict[str, int] = field(default_factory=dict)
    """How often the `lookup_user` tool ran (request-level hits still run it)."""


def make_agents() -> Agents:
    """Build the two agents (each with its own `FunctionModel`)."""
    captured: dict[str, Any] = {}
    model_calls = {"profile": 0, "tool": 0, "hooked": 0}
    tool_calls = {"lookup_user": 0}

    def profile_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        model_calls["profile"] += 1
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, _PROFILE_ARGS)])

    profile = Agent(
        FunctionModel(profile_model, model_name="profile-model"),
        output_type=UserProfile,
        instructions="You write short, factual user profiles as structured data.",
    )

    def tool_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        model_calls["tool"] += 1
        captured.setdefault("parameters", info.model_request_parameters)
        last = messages[-1]
        if any(isinstance(p, ToolReturnPart) and p.tool_name == "lookup_user" for p in last.parts):
            return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, _PROFILE_ARGS)])
        return ModelResponse(parts=[ToolCallPart("lookup_user", {"user_id": 42})])

    tool = Agent(
        FunctionModel(tool_model, model_name="tool-model"),
        output_type=UserProfile,
        instructions="Look the user up with the tool, then write a short profile as structured data.",
    )

    @tool.tool_plain
    def lookup_user(user_id: int) -> dict[str, Any]:
        """Return the stored record of a user."""
        tool_calls["lookup_user"] += 1
        return {"id": user_id, "name": "Ada Lovelace", "city": "London", "born": 1815}

    def hooked_model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        model_calls["hooked"] += 1
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, _PROFILE_ARGS)])

    hooks: Hooks[None] = Hooks()

    @hooks.on.before_model_request
    async def tag_request(ctx: RunContext[None], request_context: Any) -> Any:
        return request_context

    hooked = Agent(
        FunctionModel(hooked_model, model_name="hooked-model"),
        output_type=UserProfile,
        instructions="You write short, factual user profiles as structured data.",
        capabilities=[hooks, ProcessHistory(_keep_last_ten)],
    )
    return Agents(
        profile=profile, tool=tool, hooked=hooked, captured=captured, model_calls=model_calls, tool_calls=tool_calls
    )


def _keep_last_ten(messages: list[ModelMessage]) -> list[ModelMessage]:
    return messages[-10:]


def history(n: int) -> list[ModelMessage]:
    """A conversation of `n` messages: user prompts, tool calls and returns, and text answers, in turn."""
    messages: list[ModelMessage] = []
    i = 0
    while len(messages) < n:
        turn = i // 4
        step = i % 4
        if step == 0:
            messages.append(
                ModelRequest(parts=[UserPromptPart(f"Question {turn}: what do we know about user {turn} and why?")])
            )
        elif step == 1:
            messages.append(
                ModelResponse(parts=[ToolCallPart("lookup_user", {"user_id": turn}, tool_call_id=f"call-{turn}")])
            )
        elif step == 2:
            messages.append(
                ModelRequest(
                    parts=[
                        ToolReturnPart(
                            "lookup_user",
                            {"id": turn, "name": f"User {turn}", "city": "London", "born": 1815 + turn},
                            tool_call_id=f"call-{turn}",
                        )
                    ]
                )
            )
        else:
            messages.append(
                ModelResponse(
                    parts=[
                        TextPart(f"User {turn} is called User {turn}, lives in London and was born in {1815 + turn}.")
                    ]
                )
            )
        i += 1
    return messages


async def per_call_us(call: Callable[[], Awaitable[Any]], n: int) -> float:
    """Run `call` `n` times one after another; the median time of one call in microseconds."""
    times: list[float] = []
    clock = time.perf_counter
    for _ in range(n):
        start = clock()
        await call()
        times.append(clock() - start)
    return median(times) * 1e6


async def throughput(call: Callable[[], Awaitable[Any]], total: int, concurrency: int) -> float:
    """Calls per second for `total` calls through `asyncio.gather`, at most `concurrency` at a time."""
    semaphore = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with semaphore:
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(one() for _ in range(total)))
    return total / (time.perf_counter() - start)


async def loop_stall_us(call: Callable[[], Coroutine[Any, Any, Any]], n: int) -> float:
    """The longest single step (us) the event loop ran during one call, median over `n` calls.

    Every callback and task step the loop runs is timed (by wrapping `asyncio.Handle._run` for the duration of
    the measurement). While one step runs, no other task of the loop can: with asynchronous I/O the longest step
    of a hit is its longest piece of CPU work between two awaits, while a store doing blocking I/O in a coroutine
    would show a step as long as the whole round trip.
    """
    clock = time.perf_counter
    steps: list[float] = []
    original = asyncio.Handle._run

    def timed_run(handle: asyncio.Handle) -> None:
        start = clock()
        try:
            original(handle)
        finally:
            steps.append(clock() - start)

    longest: list[float] = []
    asyncio.Handle._run = timed_run  # type: ignore[method-assign]
    try:
        for _ in range(n):
            # The call runs in its own task so that its steps are loop steps (the caller's step is not counted).
            steps.clear()
            await asyncio.create_task(call())
            longest.append(max(steps) if steps else 0.0)
    finally:
        asyncio.Handle._run = original  # type: ignore[method-assign]
    return median(longest) * 1e6


def key_time_us(messages: list[ModelMessage], agents: Agents, n: int) -> float:
    """Median CPU time (us) of `canonical_request` + `request_digest` for one request carrying `messages`.

    Thread CPU time, not wall time: the computation is pure CPU work, and CPU time leaves out the moments the
    process is descheduled on a busy machine.
    """
    model = agents.tool.model
    assert isinstance(model, FunctionModel)
    parameters: ModelRequestParameters = agents.captured["parameters"]
    times: list[float] = []
    clock = time.thread_time
    for _ in range(n):
        start = clock()
        canonical = canonical_request(model, messages, None, parameters)
        request_digest(canonical, "default")
        times.append(clock() - start)
    return median(times) * 1e6


def reference_loop_ms() -> float:
    """CPU time (ms) of a fixed pure-Python loop: how fast this machine's CPU was during the run."""
    clock = time.thread_time
    start = clock()
    total = 0
    for i in range(1_000_000):
        total += i
    return (clock() - start) * 1e3


async def redis_get_floor(url: str, value_size: int = 2048) -> tuple[Callable[[], Awaitable[Any]], aioredis.Redis]:
    """A raw `GET` of a `value_size`-byte value through one redis-py asyncio client (one pool, reused)."""
    client = aioredis.Redis.from_url(url)
    await client.set("bench:floor", b"x" * value_size)

    async def get() -> Any:
        return await client.get("bench:floor")

    return get, client


def profile_hit(agent: Agent[None, UserProfile], **kwargs: Any) -> Callable[[], Awaitable[Any]]:
    """One `cached_agent_run` of the tool-less agent on `PROMPT`."""

    async def call() -> Any:
        return await cached_agent_run(agent, PROMPT, "make_profile", **kwargs)

    return call


def tool_hit(agent: Agent[None, UserProfile], **kwargs: Any) -> Callable[[], Awaitable[Any]]:
    """One `cached_agent_run` of the tool-using agent (request level: the tool runs, both requests hit)."""

    async def call() -> Any:
        return await cached_agent_run(agent, TOOL_PROMPT, "lookup_profile", **kwargs)

    return call


def direct_run(agent: Agent[None, UserProfile], prompt: str) -> Callable[[], Awaitable[Any]]:
    """One plain `agent.run`, no cache."""

    async def call() -> Any:
        return (await agent.run(prompt)).output

    return call
