"""Property: for generated agent configurations and one generated change, cached == uncached (see `_harness`)."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic_ai import Agent, RunContext
from pydantic_ai.capabilities import Hooks
from pydantic_ai.messages import ModelRequest, SystemPromptPart

from pyai_caching.stores import MemoryStore

from ._harness import Call, Oracle, Scenario, World, check
from ._scenarios import A, Creds, Price, history

OUTPUT_TYPES: list[Any] = [str, int, A, Price, Creds, list[int]]
TEXT = st.text(alphabet=st.characters(codec=None, exclude_categories=("Cc",)), min_size=1, max_size=12)
SETTINGS = st.one_of(st.none(), st.fixed_dictionaries({"temperature": st.sampled_from([0.0, 0.5, 1.0])}))


@dataclasses.dataclass
class Config:
    model_name: str
    output_type: Any
    instructions: str | None
    system_prompt: str | None
    agent_settings: dict[str, Any] | None
    model_settings: dict[str, Any] | None
    tool_description: str | None
    """A tool the agent calls first (whole-run mode), or `None` for a tool-less agent."""
    tenant_hook: bool
    """A `before_model_request` hook that puts `deps` into the request."""
    deps: str
    history: tuple[str, ...]
    prompt: str


CONFIGS = st.builds(
    Config,
    model_name=st.sampled_from(["m1", "m2"]),
    output_type=st.sampled_from(OUTPUT_TYPES),
    instructions=st.one_of(st.none(), TEXT),
    system_prompt=st.one_of(st.none(), TEXT),
    agent_settings=SETTINGS,
    model_settings=SETTINGS,
    tool_description=st.one_of(st.none(), TEXT),
    tenant_hook=st.booleans(),
    deps=st.sampled_from(["tenant-a", "tenant-b"]),
    history=st.lists(TEXT, max_size=2).map(tuple),
    prompt=TEXT,
)
FIELDS = [f.name for f in dataclasses.fields(Config)]


def build(config: Config) -> World:
    oracle = Oracle(name=config.model_name)
    capabilities: list[Any] = []
    if config.tenant_hook:
        hooks: Hooks[str] = Hooks()

        @hooks.on.before_model_request
        async def add_tenant(ctx: RunContext[str], rc: Any) -> Any:
            rc.messages.insert(0, ModelRequest(parts=[SystemPromptPart(f"tenant={ctx.deps}")]))
            return rc

        capabilities.append(hooks)
    agent: Agent[str, Any] = Agent(
        oracle.model(settings=config.model_settings),
        output_type=config.output_type,
        instructions=config.instructions,
        system_prompt=config.system_prompt or (),
        model_settings=config.agent_settings,
        deps_type=str,
        capabilities=capabilities,
    )
    if config.tool_description is not None:

        @agent.tool_plain(description=config.tool_description)
        def lookup(q: str) -> str:
            return f"found {q}"

    return World(agent, oracle)


def call_of(config: Config) -> Call:
    kwargs: dict[str, Any] = {"deps": config.deps}
    if config.history:
        kwargs["message_history"] = history(*config.history)
    return Call(config.prompt, kwargs, {"cache_whole_run": config.tool_description is not None})


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=CONFIGS, field=st.sampled_from(FIELDS), other=CONFIGS)
def test_cached_equals_uncached_for_generated_configurations(config: Config, field: str, other: Config) -> None:
    """One field of the configuration changes (to the value it has in `other`); every call is compared."""
    changed = dataclasses.replace(config, **{field: getattr(other, field)})

    def change(world: World, call: Call) -> Call:
        rebuilt = build(changed)
        world.agent, world.oracle = rebuilt.agent, rebuilt.oracle
        return call_of(changed)

    scenario = Scenario(f"generated-{field}", lambda: build(config), change, call_of(config))
    asyncio.run(check(scenario, MemoryStore()))
