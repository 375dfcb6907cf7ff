"""The scenario table: each row is an agent factory, a call and one change (see `_harness`)."""

from __future__ import annotations

import dataclasses
from typing import Any

from pydantic import BaseModel, Field, SecretStr, ValidationInfo, field_serializer, field_validator
from pydantic_ai import Agent, NativeOutput, PromptedOutput, RunContext, TextOutput, ToolOutput
from pydantic_ai.capabilities import Hooks, ModelFallback, ProcessHistory
from pydantic_ai.messages import (
    BinaryContent,
    ModelMessage,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    UserPromptPart,
)

from ._harness import Call, Oracle, Scenario, World

# --- output types ----------------------------------------------------------------------------------------------


class Price(BaseModel):
    cents: int

    @field_validator("cents")
    @classmethod
    def to_cents(cls, v: int) -> int:
        return v * 100


class PlainPrice(BaseModel):  # the same schema as `Price`, another validator
    cents: int


PlainPrice.model_config["title"] = "Price"
PlainPrice.model_rebuild(force=True)


class Creds(BaseModel):
    user: str
    token: SecretStr


class WithExcluded(BaseModel):
    name: str
    internal: str = Field(default="", exclude=True)


class Rounded(BaseModel):
    amount: float

    @field_serializer("amount")
    def _round(self, v: float) -> int:
        return round(v)


class Scaled(BaseModel):
    value: int

    @field_validator("value")
    @classmethod
    def scale(cls, v: int, info: ValidationInfo) -> int:
        return v * (info.context or {}).get("factor", 1)


class A(BaseModel):
    a: int


class B(BaseModel):
    b: str


@dataclasses.dataclass
class Point:
    x: int
    y: int


# --- factories ---------------------------------------------------------------------------------------------------


def world(oracle: Oracle | None = None, **agent_kwargs: Any) -> World:
    oracle = oracle or Oracle()
    return World(Agent(oracle.model(), **agent_kwargs), oracle)


def same_call(w: World, c: Call) -> Call:
    return c


def with_kwargs(**kwargs: Any) -> Any:
    def change(w: World, c: Call) -> Call:
        return dataclasses.replace(c, kwargs={**c.kwargs, **kwargs})

    return change


def with_prompt(prompt: Any) -> Any:
    def change(w: World, c: Call) -> Call:
        return dataclasses.replace(c, prompt=prompt)

    return change


def tenant_hooks() -> World:
    hooks: Hooks[str] = Hooks()

    @hooks.on.before_model_request
    async def add_tenant(ctx: RunContext[str], rc: Any) -> Any:
        rc.messages.insert(0, ModelRequest(parts=[SystemPromptPart(f"tenant={ctx.deps}")]))
        return rc

    return world(deps_type=str, capabilities=[hooks])


def prepare_hook() -> World:
    hooks: Hooks[str] = Hooks()

    @hooks.on.prepare_model_request
    async def tune(ctx: RunContext[str], rc: Any) -> Any:
        rc.model_settings = {**(rc.model_settings or {}), "temperature": 0.1 if ctx.deps == "cold" else 0.9}
        return rc

    return world(deps_type=str, capabilities=[hooks])


def history_processor_capability() -> World:
    state = {"keep": 1}

    def keep_last(messages: list[ModelMessage]) -> list[ModelMessage]:
        return messages[-state["keep"] :]

    w = world(capabilities=[ProcessHistory(keep_last)])
    w.state = state
    return w


def history_processor_with_context() -> World:
    state = {"prefix": "A"}

    def add_note(ctx: RunContext[Any], messages: list[ModelMessage]) -> list[ModelMessage]:
        return [ModelRequest(parts=[SystemPromptPart(f"note {state['prefix']}")]), *messages]

    w = world(capabilities=[ProcessHistory(add_note)])
    w.state = state
    return w


def fallback() -> World:
    primary, secondary = Oracle(name="primary", fail=True), Oracle(name="secondary")
    agent = Agent(primary.model(), capabilities=[ModelFallback(secondary.model())])
    w = World(agent, secondary, {"primary": primary})
    return w


def recover_primary(w: World, c: Call) -> None:
    w.state["primary"].fail = False


def replace_model(w: World, c: Call) -> None:
    w.agent.model = Oracle(name="other-model").model()


def override_instructions(w: World, c: Call) -> None:
    w.state["override"] = w.agent.override(instructions="answer like a pirate")
    w.state["override"].__enter__()


def native_tools() -> World:
    from pydantic_ai.capabilities import NativeTool
    from pydantic_ai.native_tools import WebSearchTool

    return world(capabilities=[NativeTool(WebSearchTool())])


TRANSCRIPT_A = [{"role": "user", "content": "one"}, {"role": "assistant", "content": "reply to one"}]
TRANSCRIPT_B = [{"role": "user", "content": "two"}, {"role": "assistant", "content": "reply to two"}]


def transcript(turns: list[dict[str, str]]) -> Call:
    plain = history(turns[0]["content"])
    return Call("hello", {}, {"transcript_history": turns}, {"message_history": plain})


def override_model(w: World, c: Call) -> None:
    w.state["override"] = w.agent.override(model=Oracle(name="overridden").model())
    w.state["override"].__enter__()


def dynamic_system_prompt_from_deps() -> World:
    w = world(deps_type=str)

    @w.agent.system_prompt
    def by_user(ctx: RunContext[str]) -> str:
        return f"user is {ctx.deps}"

    return w


GLOBAL = {"mood": "calm"}


def dynamic_instructions_from_global() -> World:
    w = world()

    @w.agent.instructions
    def mood() -> str:
        return f"be {GLOBAL['mood']}"

    return w


def set_global(w: World, c: Call) -> None:
    GLOBAL["mood"] = "excited"


def instructions_from_deps() -> World:
    w = world(deps_type=str)

    @w.agent.instructions
    def lang(ctx: RunContext[str]) -> str:
        return f"answer in {ctx.deps}"

    return w


def tool_agent(**kwargs: Any) -> World:
    w = world(**kwargs)

    @w.agent.tool_plain(description="Look up the weather")
    def weather(city: str) -> str:
        return f"sunny in {city}"

    return w


def edit_tool_description(w: World, c: Call) -> None:
    tool = w.agent._function_toolset.tools["weather"]
    tool.description = "Look up the weather (in Fahrenheit)"


def prepared_tool() -> World:
    w = world(deps_type=str)

    async def only_for_admin(ctx: RunContext[str], tool_def: Any) -> Any:
        return tool_def if ctx.deps == "admin" else None

    @w.agent.tool(prepare=only_for_admin)
    def secret_stats(ctx: RunContext[str]) -> str:
        return "42"

    return w


def toolset_from_deps() -> World:
    from pydantic_ai.toolsets import FunctionToolset

    w = world(deps_type=str)

    @w.agent.toolset
    def per_user(ctx: RunContext[str]) -> FunctionToolset[str]:
        ts: FunctionToolset[str] = FunctionToolset()

        def lookup(q: str) -> str:
            return f"{ctx.deps}:{q}"

        ts.add_function(lookup, name=f"lookup_{ctx.deps}")
        return ts

    return w


def output_validator_from_deps() -> World:
    w = world(deps_type=int, output_type=A)

    @w.agent.output_validator
    def scale(ctx: RunContext[int], out: A) -> A:
        return A(a=out.a * ctx.deps)

    return w


def shout(text: str) -> str:
    return text.upper() + "!"


def output_function(a: int) -> str:
    return f"function saw {a * 3}"


def two_agents_sharing_a_schema() -> World:
    oracle = Oracle()
    w = World(Agent(oracle.model(), output_type=Price), oracle)
    w.state["other"] = Agent(oracle.model(), output_type=PlainPrice)
    return w


def switch_agent(w: World, c: Call) -> None:
    w.agent = w.state["other"]


def thinking() -> World:
    return world(Oracle(think=True))


def history(*texts: str) -> list[ModelMessage]:
    out: list[ModelMessage] = []
    for t in texts:
        out.append(ModelRequest(parts=[UserPromptPart(t)]))
        out.append(ModelResponse(parts=[TextPart(f"reply to {t}")]))
    return out


IMAGE_A = BinaryContent(data=b"\x89PNG\r\n\x1a\nAAAA", media_type="image/png")
IMAGE_B = BinaryContent(data=b"\x89PNG\r\n\x1a\nBBBB", media_type="image/png")


def whole(**cache: Any) -> dict[str, Any]:
    return {"cache_whole_run": True, **cache}


def with_deps(deps: Any) -> Any:
    return with_kwargs(deps=deps)


def call(prompt: Any = "hello", cache: dict[str, Any] | None = None, **kwargs: Any) -> Call:
    return Call(prompt, kwargs, cache or {})


def _limits(requests: int) -> Any:
    from pydantic_ai.usage import UsageLimits

    return UsageLimits(request_limit=requests)


def _token_limits(output_tokens: int) -> Any:
    from pydantic_ai.usage import UsageLimits

    return UsageLimits(output_tokens_limit=output_tokens)


# --- found by review (h-review) ----------------------------------------------------------------------------------


def fallback_model() -> World:
    """`FallbackModel` as the agent's model (not the `ModelFallback` capability): the cache sees only the wrapper."""
    from pydantic_ai.models.fallback import FallbackModel

    primary, secondary = Oracle(name="primary", fail=True), Oracle(name="secondary")
    return World(Agent(FallbackModel(primary.model(), secondary.model())), secondary, {"primary": primary})


def two_responses(model_name: str | None) -> list[ModelMessage]:
    """A history with two consecutive responses. pydantic-ai merges them before sending when they are synthetic
    (no `model_name`, `provider_name`, `provider_response_id`), and keeps them apart when they came from an API."""
    return [
        ModelRequest(parts=[UserPromptPart("one")]),
        ModelResponse(parts=[TextPart("first half")], model_name=model_name),
        ModelResponse(parts=[TextPart("second half")], model_name=model_name),
    ]


def suspended_history() -> list[ModelMessage]:
    """`history("one")` with its response suspended (Anthropic `pause_turn`, OpenAI background mode): `agent.run`
    refuses a new prompt on it (UserError)."""
    return [
        ModelRequest(parts=[UserPromptPart("one")]),
        ModelResponse(parts=[TextPart("reply to one")], state="suspended"),
    ]


def testmodel_world(text: str) -> World:
    from pydantic_ai.models.test import TestModel

    return World(Agent(TestModel(custom_output_text=text)), Oracle())


def replace_test_model(w: World, c: Call) -> None:
    from pydantic_ai.models.test import TestModel

    w.agent.model = TestModel(custom_output_text="London")


def _tenant_model_class() -> Any:
    from pydantic_ai.models.wrapper import WrapperModel

    class TenantModel(WrapperModel):
        """A user's own wrapper that puts its tenant into every request it sends."""

        def __init__(self, wrapped: Any, tenant: str) -> None:
            super().__init__(wrapped)
            self.tenant = tenant

        async def request(self, messages: Any, settings: Any, params: Any) -> Any:
            tagged = [ModelRequest(parts=[SystemPromptPart(f"tenant={self.tenant}")]), *messages]
            return await super().request(tagged, settings, params)

    return TenantModel


TenantModel = _tenant_model_class()


def tenant_wrapper_model() -> World:
    oracle = Oracle()
    base = oracle.model()
    return World(Agent(TenantModel(base, "tenant-a")), oracle, {"base": base})


def switch_tenant_model(w: World, c: Call) -> None:
    w.agent.model = TenantModel(w.state["base"], "tenant-b")


# Text files are inlined with their identifier by OpenAI Chat (`-----BEGIN FILE id="..."`), and files returned by
# tools are referenced by it ("See file <identifier>.") by several providers.
CONTRACT_A = BinaryContent(data=b"Payment due in 30 days.", media_type="text/plain", identifier="contract-acme.txt")
CONTRACT_B = BinaryContent(data=b"Payment due in 30 days.", media_type="text/plain", identifier="contract-globex.txt")


# --- the table ---------------------------------------------------------------------------------------------------

# fmt: off
SCENARIOS: list[Scenario] = [
    # A capability edits the request after the key used to be taken: tenants.
    Scenario("hook-tenant", tenant_hooks, with_deps("tenant-b"), call("show my invoices", deps="tenant-a")),
    Scenario("prepare-hook-settings", prepare_hook, with_deps("warm"), call(deps="cold")),
    Scenario(
        "process-history-capability",
        history_processor_capability,
        lambda w, c: w.state.update(keep=3),
        call(message_history=history("one")),
    ),
    Scenario("history-processor-global", history_processor_with_context, lambda w, c: w.state.update(prefix="B")),
    Scenario("model-fallback-recovers", fallback, recover_primary),
    Scenario("agent-model-replaced", world, replace_model),
    Scenario("agent-override-model", world, override_model),
    Scenario("agent-override-instructions", lambda: world(instructions="be plain"), override_instructions),
    # Output code runs on a hit exactly as on a miss.
    Scenario("validator-applied-once", lambda: world(output_type=Price), with_prompt("again")),
    Scenario("secretstr-output", lambda: world(output_type=Creds), with_prompt("other")),
    Scenario("excluded-field-output", lambda: world(output_type=WithExcluded), with_prompt("other")),
    Scenario("lossy-serializer-output", lambda: world(output_type=Rounded), with_prompt("other")),
    Scenario(
        "validation-context-from-deps",
        lambda: world(output_type=Scaled, deps_type=int, validation_context=lambda ctx: {"factor": ctx.deps}),
        with_deps(7),
        call(deps=2),
    ),
    Scenario("shared-schema-other-validators", two_agents_sharing_a_schema, switch_agent),
    Scenario("output-validator-from-deps", output_validator_from_deps, with_deps(5), call(deps=2)),
    Scenario("output-function", lambda: world(output_type=output_function), with_prompt("other")),
    Scenario("union-output", lambda: world(output_type=[A, B]), with_prompt("other")),  # type: ignore[arg-type]
    Scenario("native-output", lambda: world(output_type=NativeOutput(A)), with_prompt("other")),
    Scenario("prompted-output", lambda: world(output_type=PromptedOutput(A)), with_prompt("other")),
    Scenario("text-output-function", lambda: world(output_type=TextOutput(shout)), with_prompt("other")),
    Scenario("tool-output-named", lambda: world(output_type=ToolOutput(A, name="give_a")), with_prompt("other")),
    Scenario("int-output", lambda: world(output_type=int), with_prompt("other")),
    Scenario("dataclass-output", lambda: world(output_type=Point), with_prompt("other")),
    Scenario("run-output-type", world, with_kwargs(output_type=B), call(output_type=A)),
    # Whole-run mode: deps without loss, tool definitions by value.
    Scenario("whole-run-tool-description", tool_agent, edit_tool_description, call(cache=whole())),
    Scenario(
        "whole-run-int-vs-str-keys",
        lambda: tool_agent(deps_type=dict),
        with_deps({"1": "a"}),
        call(cache=whole(), deps={1: "a"}),
    ),
    Scenario(
        "whole-run-secret-deps",
        lambda: tool_agent(deps_type=Creds),
        with_deps(Creds(user="u", token=SecretStr("bob"))),
        call(cache=whole(), deps=Creds(user="u", token=SecretStr("alice"))),
    ),
    Scenario(
        "whole-run-excluded-field-deps",
        lambda: tool_agent(deps_type=WithExcluded),
        with_deps(WithExcluded(name="n", internal="y")),
        call(cache=whole(), deps=WithExcluded(name="n", internal="x")),
    ),
    Scenario(
        "whole-run-set-deps", lambda: tool_agent(deps_type=set), with_deps({1, 3}), call(cache=whole(), deps={1, 2})
    ),
    Scenario(
        "whole-run-deps-key",
        lambda: tool_agent(deps_type=object),
        lambda w, c: dataclasses.replace(c, cache=whole(deps_key=lambda d: "v2")),
        call(cache=whole(deps_key=lambda d: "v1"), deps=object()),
    ),
    Scenario(
        "whole-run-cache-version",
        tool_agent,
        lambda w, c: dataclasses.replace(c, cache=whole(cache_version="2")),
        call(cache=whole(cache_version="1")),
    ),
    # Prompts and histories.
    Scenario("lone-surrogate-prompt", world, with_prompt("other \ud801"), call("hi \ud800")),
    Scenario("multimodal-prompt", world, with_prompt(["look", IMAGE_B]), call(["look", IMAGE_A])),
    Scenario(
        "message-history", world, with_kwargs(message_history=history("two")), call(message_history=history("one"))
    ),
    Scenario(
        "history-with-structured-output",
        lambda: world(output_type=A),
        with_kwargs(message_history=history("b")),
        call(message_history=history("a")),
    ),
    Scenario("transcript-history", world, lambda w, c: transcript(TRANSCRIPT_B), transcript(TRANSCRIPT_A)),
    Scenario("native-tools", native_tools, with_prompt("other")),
    # Dynamic configuration from deps and globals.
    Scenario("dynamic-system-prompt-deps", dynamic_system_prompt_from_deps, with_deps("bob"), call(deps="alice")),
    Scenario("dynamic-instructions-global", dynamic_instructions_from_global, set_global),
    Scenario("instructions-from-deps", instructions_from_deps, with_deps("French"), call(deps="English")),
    Scenario("tool-prepare-from-deps", prepared_tool, with_deps("admin"), call(deps="guest")),
    Scenario("toolset-from-deps", toolset_from_deps, with_deps("bob"), call(deps="alice")),
    Scenario(
        "system-prompt-edited",
        lambda: world(system_prompt="be brief"),
        lambda w, c: setattr(w.agent, "_system_prompts", ("be verbose",)),
    ),
    # Settings at every level.
    Scenario(
        "agent-settings",
        lambda: world(model_settings={"temperature": 0.1}),
        lambda w, c: setattr(w.agent, "model_settings", {"temperature": 0.7}),
    ),
    Scenario(
        "model-settings",
        lambda: world(Oracle()),
        lambda w, c: setattr(w.agent, "model", Oracle().model(settings={"max_tokens": 5})),
    ),
    Scenario(
        "run-settings",
        world,
        with_kwargs(model_settings={"temperature": 0.9}),
        call(model_settings={"temperature": 0.1}),
    ),
    Scenario("run-instructions", world, with_kwargs(instructions="be rude"), call(instructions="be kind")),
    Scenario("usage-limits", world, with_kwargs(usage_limits=_limits(0)), call(usage_limits=_limits(5))),
    Scenario("thinking-parts", thinking, with_prompt("other")),
    # Streaming.
    Scenario("run-stream", world, with_prompt("other"), run="run_stream"),
    Scenario("run-stream-structured", lambda: world(output_type=A), with_prompt("other"), run="run_stream"),
    Scenario("run-stream-events", tenant_hooks, with_deps("b"), call(deps="a"), run="run_stream_events"),
    Scenario("iter", tenant_hooks, with_deps("b"), call(deps="a"), run="iter"),
    # Found by review (h-review): each of these fails today.
    Scenario("fallback-model-recovers", fallback_model, recover_primary),
    Scenario(
        "history-synthetic-responses",
        world,
        with_kwargs(message_history=two_responses(None)),
        call(message_history=two_responses("oracle")),
    ),
    Scenario(
        "history-suspended-response",
        world,
        with_kwargs(message_history=suspended_history()),
        call(message_history=history("one")),
    ),
    Scenario("test-model-replaced", lambda: testmodel_world("Paris"), replace_test_model, cached_repeat=False),
    Scenario("wrapper-model-tenant", tenant_wrapper_model, switch_tenant_model, call(["show my invoices"])),
    # A token limit is checked against the response's usage, which is zero on a hit: `agent.run` raises
    # UsageLimitExceeded, the cached call answers. (Decided: docs/guide/keys.md, "What is outside the key".)
    Scenario("file-identifier", world, with_prompt(["Which file?", CONTRACT_B]), call(["Which file?", CONTRACT_A])),
]
# fmt: on
