"""Review findings that the scenario table cannot express.

- What `full_result=True` returns besides output and parts. A run-level (fast path) hit builds its `AgentRunResult`
  from the stored run: its messages carry the run id and conversation id of the run that stored them (possibly
  another user's conversation), and the result has no metadata and a fresh conversation id. A plain `agent.run`
  (and a request-level hit) gives the agent's metadata, the conversation id of the history it continues, and
  messages stamped with the result's own ids.
- A setting that changes what the serving model sends but is left out of the key (`framing_announcement`), shown
  with a model that builds its request the way pydantic-ai's provider adapters do.
"""

from __future__ import annotations

import hashlib
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart
from pydantic_ai.models import Model, ModelRequestParameters

from pyai_caching import cached_agent_run
from pyai_caching.stores import MemoryStore

from ._harness import Oracle


def conversation(conversation_id: str) -> list[ModelMessage]:
    return [
        ModelRequest(parts=[UserPromptPart("one")], conversation_id=conversation_id),
        ModelResponse(parts=[TextPart("reply to one")], conversation_id=conversation_id),
    ]


def identity(result: Any) -> dict[str, Any]:
    """What of a result identifies the run besides its output: metadata, conversation, the ids its messages carry."""
    return {
        "metadata": result.metadata,
        "conversation_id": result.conversation_id,
        "message_conversation_ids": [m.conversation_id for m in result.new_messages()],
        "messages_of_this_run": [m.run_id == result.run_id for m in result.new_messages()],
    }


async def test_fast_hit_full_result_is_the_result_of_this_run() -> None:
    oracle = Oracle()
    agent = Agent(oracle.model(), metadata={"team": "billing"})
    store = MemoryStore()
    # Alice's conversation stores the run entry.
    await cached_agent_run(
        agent, "hello", "t", store=store, message_history=conversation("conv-alice"), full_result=True
    )

    # Bob's conversation has the same content.
    plain = await agent.run("hello", message_history=conversation("conv-bob"))
    calls = oracle.calls
    cached = await cached_agent_run(
        agent, "hello", "t", store=store, message_history=conversation("conv-bob"), full_result=True
    )

    assert oracle.calls == calls  # a hit
    assert identity(plain) == {
        "metadata": {"team": "billing"},
        "conversation_id": "conv-bob",
        "message_conversation_ids": ["conv-bob", "conv-bob"],
        "messages_of_this_run": [True, True],
    }
    assert identity(cached) == identity(plain)


class InstructionsEcho(Model):
    """A model that builds its system prompt the way pydantic-ai's adapters do (Anthropic, Google, Bedrock, Mistral,
    Cohere, Hugging Face: `self._get_instruction_parts(...)` inside `request`) and answers with a digest of it."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0

    @property
    def model_name(self) -> str:
        return "instructions-echo"

    @property
    def system(self) -> str:
        return "echo"

    async def request(
        self, messages: list[ModelMessage], model_settings: Any, model_request_parameters: ModelRequestParameters
    ) -> ModelResponse:
        self.calls += 1
        model_settings, model_request_parameters = self.prepare_request(model_settings, model_request_parameters)
        parts = self._get_instruction_parts(messages, model_request_parameters) or []
        system_prompt = "\n\n".join(p.content for p in parts)
        return ModelResponse(parts=[TextPart(hashlib.sha256(system_prompt.encode()).hexdigest()[:12])])


async def test_framing_announcement_setting_changes_the_system_prompt() -> None:
    """`framing_announcement='always'` puts a ~120-word announcement first in the system prompt of every model whose
    profile has no inline system prompts; `SETTINGS_IGNORED` leaves the setting out of the key."""
    model = InstructionsEcho()
    agent = Agent(model, instructions="Answer in one word.")
    store = MemoryStore()
    await cached_agent_run(agent, ["hello"], "t", store=store)

    always: Any = {"framing_announcement": "always"}
    plain = (await agent.run(["hello"], model_settings=always)).output
    cached = await cached_agent_run(agent, ["hello"], "t", store=store, model_settings=always)

    assert plain != (await agent.run(["hello"])).output  # the setting changes what the model is sent
    assert cached == plain


class FailsOnce(Oracle):
    """An oracle whose first call fails with a 503 (a provider overloaded for a moment)."""

    def __call__(self, messages: list[ModelMessage], info: Any) -> ModelResponse:
        self.fail = self.calls == 0
        return super().__call__(messages, info)


async def test_nested_model_fallback_falls_back_as_in_agent_run() -> None:
    """`cached_agent_run` turns its retries off for a `ModelFallback` only when it is one of the agent's top-level
    capabilities. Inside a `WrapperCapability` (a user's capability that wraps another) the cache retries the primary
    instead, so the run does not fall back: here the primary answers on the retry, where `agent.run` gets the
    secondary's answer (and with a primary that stays down, `RateLimitError` after 60 s instead of an answer)."""
    from pydantic_ai.capabilities import ModelFallback
    from pydantic_ai.capabilities.wrapper import WrapperCapability

    primary, secondary = FailsOnce(name="primary"), Oracle(name="secondary")
    agent = Agent(primary.model(), capabilities=[WrapperCapability(ModelFallback(secondary.model()))])
    plain = (await agent.run("hello")).output

    primary.calls = 0
    cached = await cached_agent_run(agent, "hello", "t", store=MemoryStore())

    assert cached == plain


async def test_a_hit_uses_no_tokens_so_token_limits_do_not_trip_on_it() -> None:
    """Decided, and documented in docs/guide/keys.md ("What is outside the key"): a hit consumes no tokens (usage
    is what differs by design), so a token limit that the model's own answer would exceed does not trip on a hit;
    the request limit still counts."""
    from pydantic_ai.exceptions import UsageLimitExceeded
    from pydantic_ai.usage import UsageLimits

    oracle = Oracle()
    agent = Agent(oracle.model())
    store = MemoryStore()
    await cached_agent_run(agent, "hello", "t", store=store)
    tight = UsageLimits(output_tokens_limit=1)
    try:
        await agent.run("hello", usage_limits=tight)
        raise AssertionError("the plain run should exceed the token limit")
    except UsageLimitExceeded:
        pass
    calls = oracle.calls
    assert (
        await cached_agent_run(agent, "hello", "t", store=store, usage_limits=tight)
        == (await agent.run("hello")).output
    )
    assert oracle.calls == calls + 1  # only the plain run above called the model
