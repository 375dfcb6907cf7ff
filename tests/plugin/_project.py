"""An inner test project for `pytester`: real agents driven by a `FunctionModel` standing in for a real model.

The stand-in answers unless the environment variable `STAND_IN` is `fail`, in which case any call raises: a
replaying run sets it to prove the responses come from the cassette. `PROMPT`, `TEMPERATURE` and `TOOL_SCHEMA`
change what the agents send, to provoke replay misses.
"""

from __future__ import annotations

import pytest

INI = """
[pytest]
asyncio_mode = auto
asyncio_default_fixture_loop_scope = function
filterwarnings = error
addopts = --strict-markers -p no:cacheprovider
"""

AGENTS = '''
from __future__ import annotations

import os

from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import FunctionModel

from pyai_caching import ResponseCache, cached_agent_run

PROMPT = os.environ.get("PROMPT", "Make a profile for Ada")
TOOL_CALLS = []


class Profile(BaseModel):
    name: str
    age: int


def _check():
    if os.environ.get("STAND_IN") == "fail":
        raise AssertionError("the stand-in model was called")


def answer(messages, info):
    _check()
    returned = [p for m in messages for p in m.parts if isinstance(p, ToolReturnPart)]
    if info.function_tools and not returned:
        return ModelResponse(parts=[ToolCallPart(info.function_tools[0].name, {"city": "Paris"})])
    if info.output_tools:
        age = 36 if not returned else len(returned[0].content)
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {"name": "Ada", "age": age})])
    return ModelResponse(parts=[TextPart("Hello Ada")])


async def stream_answer(messages, info):
    _check()
    for chunk in ("Hello", ", ", "Ada"):
        yield chunk


model = FunctionModel(answer, stream_function=stream_answer, model_name="stand-in")
profile_agent = Agent(
    model,
    output_type=Profile,
    instructions="Make profiles.",
    model_settings={"temperature": float(os.environ.get("TEMPERATURE", "0"))},
)
chat_agent = Agent(model, capabilities=[ResponseCache()])  # built at import time: the cassette still wins

if os.environ.get("TOOL_SCHEMA") == "v2":
    def weather(city: str, days: int = 1) -> str:
        """The weather in a city."""
        TOOL_CALLS.append(city)
        return "sunny"
else:
    def weather(city: str) -> str:
        """The weather in a city."""
        TOOL_CALLS.append(city)
        return "sunny"

tool_agent = Agent(model, output_type=Profile, tools=[weather])


async def make_profile(prompt: str = PROMPT) -> Profile:
    return await cached_agent_run(profile_agent, prompt, task_name="make_profile")
'''

TESTS = """
import pytest

from agents import PROMPT, Profile, TOOL_CALLS, chat_agent, make_profile, tool_agent
from pyai_caching import cached_agent_run


@pytest.mark.llm_cassette
async def test_profile():
    assert await make_profile() == Profile(name="Ada", age=36)


async def test_stream(llm_cassette):
    async with chat_agent.run_stream(PROMPT) as stream:
        deltas = [d async for d in stream.stream_text(delta=True, debounce_by=None)]
        text = await stream.get_output()
    assert text == "Hello, Ada"
    assert deltas == ["Hello", ", ", "Ada"], "a replayed stream streams the recorded deltas"


async def test_tools(llm_cassette):
    out = await cached_agent_run(tool_agent, PROMPT, task_name="tools")
    assert out == Profile(name="Ada", age=5)
    assert TOOL_CALLS == ["Paris"], "tools run for real on replay"
"""


def make_project(pytester: pytest.Pytester, tests: str = TESTS, *, name: str = "test_agents") -> None:
    """Write the inner project: `pytest.ini`, `agents.py` and one test module."""
    pytester.makeini(INI)
    pytester.makepyfile(agents=AGENTS)
    pytester.makepyfile(**{name: tests})
