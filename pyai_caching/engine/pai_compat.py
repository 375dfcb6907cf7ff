"""Every read of pydantic-ai internals, in one place.

The run-level fast path must know whether an agent's first request is fully determined by values it can compare,
and how pydantic-ai turns a final model response into the run's output. pydantic-ai has no public API for either,
so this module reads its private attributes and calls its output processors. If pydantic-ai renames or reshapes
any of them, `AgentShapeError` is raised here and the caller falls back to running the agent graph, which is
always correct; `tests/unit/test_pai_compat.py` fails loudly so that someone updates this module.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from pydantic_ai._parts_manager import ModelResponsePartsManager
from pydantic_ai._special_tokens import StreamRestorer
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart

__all__ = [
    "PRIVATE_AGENT_ATTRIBUTES",
    "PRIVATE_STREAM_ATTRIBUTES",
    "PUBLIC_AGENT_PROPERTIES",
    "AgentShapeError",
    "ModelResponsePartsManager",
    "OutputRecipe",
    "StaticParts",
    "StreamRestorer",
    "current_run_context",
    "output_recipe",
    "output_tool_name",
    "override_variables",
    "run_result",
    "static_parts",
]

DEFAULT_CAPABILITIES = frozenset({"ToolSearch", "PendingMessageDrainCapability"})
"""Capabilities every pydantic-ai agent carries that add no hook of their own to a request."""


class AgentShapeError(Exception):
    """pydantic-ai's internals are not shaped as this module expects (a newer or older version)."""


@dataclass(frozen=True, slots=True)
class StaticParts:
    """What of an agent's configuration shapes its first request, by value, when nothing in it is dynamic."""

    model: Any
    """The agent's model object (a `Model`)."""
    instructions: tuple[str, ...]
    system_prompts: tuple[str, ...]
    settings: Any
    """The agent's `model_settings` (a dict or `None`)."""
    output_type: Any
    tools: tuple[Any, ...]
    """The agent's function tools (`Tool` objects); empty for most agents."""
    native_tools: str
    """A stable text of the capability-provided native tools (the default `ToolSearchTool`)."""


_DYNAMIC_ATTRIBUTES = (
    "_system_prompt_functions",
    "_system_prompt_dynamic_functions",
    "_dynamic_toolsets",
    "_user_toolsets",
    "_cap_toolsets",
    "_output_validators",
    "_cap_instructions",
)
"""Private attributes that must be empty: each holds code that runs during a run (or a toolset that may)."""

_NONE_ATTRIBUTES = ("_cap_model_settings",)
"""Private attributes that must be `None`."""

_READ_ATTRIBUTES = ("_event_hooks", "_instructions", "_function_toolset", "_system_prompts", "_cap_native_tools")
"""Private attributes read for their values."""

PRIVATE_AGENT_ATTRIBUTES: tuple[str, ...] = (*_DYNAMIC_ATTRIBUTES, *_NONE_ATTRIBUTES, *_READ_ATTRIBUTES, "_metadata")
"""Every private attribute of `Agent` this library reads; `tests/unit/test_pai_compat.py` checks each exists on the
pinned pydantic-ai, so a rename fails loudly instead of silently turning the fast path off (or on)."""

PRIVATE_STREAM_ATTRIBUTES: tuple[str, ...] = (
    "_event_iterator",
    "_get_event_iterator",
    "_parts_manager",
    "_request_start_ns",
    "_finished",
    "_cancelled",
)
"""The private attributes of `StreamedResponse` that recording and replaying streams read or set
(`engine.stream_replay`), with `ModelResponsePartsManager` (the parts a stream's events add up to) and
`StreamRestorer` (special-token restoration of a stream), imported above."""

PUBLIC_AGENT_PROPERTIES = (
    "model",
    "output_type",
    "event_stream_handler",
    "validation_context",
    "instrument",
    "root_capability",
    "model_settings",
)
"""The public attributes and properties of `Agent` read instead of private attributes where pydantic-ai has one."""


def static_parts(agent: Any) -> StaticParts | None:
    """The static configuration of `agent`, or `None` when anything about it is computed during a run."""
    try:
        d = agent.__dict__
        if any(d[name] for name in _DYNAMIC_ATTRIBUTES) or any(d[name] is not None for name in _NONE_ATTRIBUTES):
            return None
        if agent.event_stream_handler is not None or agent.validation_context is not None:
            return None
        if agent.instrument is not None or callable(agent.model_settings):
            return None
        if callable(d.get("_metadata")):  # metadata computed per run: only the graph gives a full result's
            return None
        if _has_event_hooks(d["_event_hooks"]) or _override_active(d):
            return None
        caps = agent.root_capability.capabilities
        if any(type(c).__name__ not in DEFAULT_CAPABILITIES for c in caps):
            return None
        instructions = d["_instructions"]
        if not all(isinstance(getattr(i, "instruction", None), str) for i in instructions):
            return None
        return StaticParts(
            model=agent.model,
            instructions=tuple(i.instruction for i in instructions),
            system_prompts=tuple(d["_system_prompts"]),
            settings=agent.model_settings,
            output_type=agent.output_type,
            tools=tuple(d["_function_toolset"].tools.values()),
            native_tools=repr(d["_cap_native_tools"]),
        )
    except (KeyError, AttributeError, TypeError) as e:
        raise AgentShapeError(f"pydantic-ai's Agent is not shaped as expected: {type(e).__name__}: {e}") from e


def override_variables(agent: Any) -> tuple[ContextVar[Any], ...]:
    """The context variables `agent.override(...)` sets (`Agent._override_*`): while any holds a value, the agent's
    configuration is not what its attributes say."""
    return tuple(
        value
        for name, value in agent.__dict__.items()
        if name.startswith("_override_") and isinstance(value, ContextVar)
    )


def current_run_context() -> Any:
    """The `RunContext` of the model request in progress, or `None` (pydantic-ai keeps it in a context variable)."""
    from pydantic_ai._run_context import get_current_run_context

    return get_current_run_context()


def run_result(agent: Any, output: Any, history: list[Any], new_messages: list[Any], tool_name: str | None) -> Any:
    """An `AgentRunResult` made as pydantic-ai's graph makes one: `new_messages` stamped with a new run id and the
    conversation of `history`, the agent's static metadata, and `output`."""
    from pydantic_ai._agent_graph import GraphAgentState
    from pydantic_ai.run import AgentRunResult

    state = GraphAgentState()
    conversation = next((m.conversation_id for m in reversed(history) if getattr(m, "conversation_id", None)), None)
    if conversation is not None:
        state.conversation_id = conversation
    metadata = getattr(agent, "_metadata", None)
    state.metadata = metadata if isinstance(metadata, dict) else None
    stamped = [dataclasses.replace(m, run_id=state.run_id, conversation_id=state.conversation_id) for m in new_messages]
    state.message_history = [*history, *stamped]
    return AgentRunResult(output, _output_tool_name=tool_name, _state=state, _new_message_index=len(history))


def output_tool_name(result: Any) -> str | None:
    """The name of the output tool that ended a run (`None`: text output)."""
    name = getattr(result, "_output_tool_name", None)
    return name if isinstance(name, str) else None


def _has_event_hooks(hooks: Any) -> bool:
    registry = getattr(hooks, "_registry", None)
    if isinstance(registry, Mapping):
        return any(registry.values())
    return bool(getattr(hooks, "__len__", None) and len(hooks))  # unknown shape: any hook at all counts


_OVERRIDE_VARS = "_pyai_caching_override_vars"
"""Where an agent's `agent.override()` context variables are kept once found (on the agent, like its templates)."""


def _override_active(attributes: dict[str, Any]) -> bool:
    """Whether an `agent.override(...)` is in effect in this context (its variables are found once per agent)."""
    variables = attributes.get(_OVERRIDE_VARS)
    if not isinstance(variables, tuple):
        found = attributes.items()
        variables = tuple(v for name, v in found if name.startswith("_override_") and isinstance(v, ContextVar))
        attributes[_OVERRIDE_VARS] = variables
    return any(variable.get() is not None for variable in variables)


def output_schema(agent: Any, output_type: Any) -> Any:
    """The output schema a run of `agent` with `output_type` (`None`: the agent's own) uses."""
    try:
        return agent._prepare_output_schema(output_type)
    except AttributeError as e:
        raise AgentShapeError(f"pydantic-ai's Agent has no _prepare_output_schema: {e}") from e


def gather_text(response: ModelResponse) -> str | None:
    """The text of a response as pydantic-ai's graph reads it for text and structured-text output."""
    from pydantic_ai._agent_graph import _gather_output  # pyright: ignore[reportPrivateUsage]

    text: str | None = _gather_output(response).text
    return text


@dataclass(frozen=True, slots=True)
class OutputRecipe:
    """How a run of one configuration turns its final response into its output, without the agent graph.

    Only for configurations where that is the whole of it: one output processor of pydantic-ai's own, no output
    functions, validators, hooks or validation context. `output` runs the processor on the stored raw data, so
    the caller's validators run exactly once on a hit, as on a miss.
    """

    source: str
    """`"text"`: the response's text; `"tool"`: the arguments of the one call of output tool `tool_name`."""
    processor: Any
    tool_name: str | None = None
    args_are_text: bool = False
    """For `"tool"`: whether the arguments were a JSON string (validated as JSON) rather than a dict."""

    def output(self, final: Mapping[str, Any]) -> tuple[bool, Any]:
        """`(True, output)`, or `(False, None)` when `final` is not of the shape this recipe was proven on."""
        data = self._data(final)
        if data is None:
            return False, None
        try:
            value = self.processor.validate(data, validation_context=None)
        except ValueError:  # pydantic's ValidationError: a run would retry; the graph decides what happens
            return False, None
        key = getattr(self.processor, "outer_typed_dict_key", None)
        if key:
            if not isinstance(value, dict) or key not in value:
                return False, None
            value = value[key]
        return True, value

    def _data(self, final: Mapping[str, Any]) -> Any:
        kinds = final.get("part_kinds")
        calls = final.get("tool_calls")
        if not isinstance(kinds, list) or not isinstance(calls, list):
            return None
        if self.source == "text":
            text = final.get("text")
            ok = not calls and isinstance(text, str) and text and set(kinds) <= {"text", "thinking"}
            return text if ok else None
        if len(calls) != 1 or not set(kinds) <= {"tool-call", "thinking"} or not isinstance(calls[0], dict):
            return None
        call = calls[0]
        args = call.get("args")
        if call.get("tool_name") != self.tool_name or isinstance(args, str) != self.args_are_text:
            return None
        return args if isinstance(args, str | dict) else None


def final_projection(response: ModelResponse) -> dict[str, Any]:
    """What of a final response an `OutputRecipe` reads: its text as the graph gathers it, its tool calls and the
    kinds of its parts. Kept in a run entry beside the raw messages, so a hit need not decode them all."""
    calls = [{"tool_name": p.tool_name, "args": p.args} for p in response.parts if isinstance(p, ToolCallPart)]
    return {
        "text": gather_text(response),
        "tool_calls": calls,
        "part_kinds": [getattr(p, "part_kind", "?") for p in response.parts],
    }


_PLAIN_PROCESSORS = frozenset({"TextOutputProcessor", "ObjectOutputProcessor"})


def _plain(processor: Any) -> bool:
    """A processor whose output is `validate` (and unwrapping), with no output function or choice behind it."""
    return (
        type(processor).__name__ in _PLAIN_PROCESSORS
        and getattr(processor, "_function_schema", None) is None
        and getattr(processor, "_choice_values", None) is None
    )


def output_recipe(schema: Any, final: Mapping[str, Any]) -> OutputRecipe | None:
    """The recipe by which `schema` turned a response with this projection into output, if it is a plain one."""
    calls = final.get("tool_calls") or []
    if calls:
        toolset = getattr(schema, "toolset", None)
        processors = getattr(toolset, "processors", None)
        if len(calls) != 1 or not isinstance(processors, Mapping):
            return None
        name = calls[0]["tool_name"]
        processor = processors.get(name)
        if processor is None or not _plain(processor):
            return None
        return OutputRecipe("tool", processor, name, isinstance(calls[0]["args"], str))
    processor = getattr(schema, "text_processor", None)
    if processor is None or not _plain(processor):
        return None
    return OutputRecipe("text", processor)


_RESERVED_METADATA = "__pydantic_ai__"


def history_sent_as_is(history: Sequence[ModelMessage]) -> bool:
    """Whether pydantic-ai sends `history` unchanged: only then may the fast path key it as given.

    pydantic-ai repairs a history before every request (merging consecutive messages, answering dangling tool
    calls), refuses a new prompt after a suspended response, and reads its own reserved metadata. A history any of
    that touches takes the graph, which keys what is really sent.
    """
    from pydantic_ai.messages import repair_messages

    for message in history:
        if isinstance(message, ModelResponse) and message.state != "complete":
            return False
        metadata = getattr(message, "metadata", None)
        if isinstance(metadata, Mapping) and _RESERVED_METADATA in metadata:
            return False
    try:
        repaired = repair_messages(history, repair_last_response=False)
    except Exception:
        return False
    return len(repaired) == len(history) and all(a is b or a == b for a, b in zip(repaired, history, strict=True))


def fallback_serves(model: Any = None, capability: Any = None) -> bool:
    """Whether a fallback decides per run which model answers: a `FallbackModel` anywhere in `model`'s wrapper
    chain, or a `ModelFallback` anywhere in `capability`'s tree (combined and wrapped capabilities included)."""
    for _ in range(16):
        if model is None:
            break
        if type(model).__name__ == "FallbackModel":
            return True
        model = getattr(model, "wrapped", None)
    pending, seen = [capability], 0
    while pending and seen < 256:
        current = pending.pop()
        seen += 1
        if current is None:
            continue
        if type(current).__name__ == "ModelFallback":
            return True
        pending.extend([*(getattr(current, "capabilities", None) or ()), getattr(current, "wrapped", None)])
    return False
