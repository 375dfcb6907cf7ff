"""The run-level fast path: find a whole run's entry before pydantic-ai's agent graph starts.

pydantic-ai spends ~1.7 ms setting a run up before the first model request, so a hit served from inside the run
can never be much faster than a direct run. For an agent whose first request is fully determined by its static
configuration, the call's prompt and its history, the key of that first request can be computed without running
anything, and a whole-run entry stored under it answers the call with one GET and one decode.

The static configuration is not rebuilt by hand (pydantic-ai changes too fast for that): the first run of a
configuration in a process goes through the graph, the `ResponseCache` capability records the canonical first
request, and this module learns a *template* from it: the request with the history and the user prompt taken
out. The template is only kept when re-assembling it with that run's history and prompt reproduces the observed
request exactly, and only for agents that pass `static_signature` (no instruction or system-prompt functions,
no dynamic toolsets, no extra capabilities, no output validators or functions, no active `agent.override`).
Anything unknown makes an agent ineligible: it then keeps the request-level path, which is always correct.
"""

from __future__ import annotations

import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.messages import ModelMessage

from .keys import CanonicalRequest, canonical_messages, canonical_settings, digest_json, dumps_canonical

__all__ = ["RunTemplate", "learn_template", "lookup_template", "static_signature"]

_DEFAULT_CAPABILITIES = frozenset({"ToolSearch", "PendingMessageDrainCapability"})
"""Capabilities every pydantic-ai agent carries that add nothing to a request by themselves."""

_FAST_RUN_KWARGS = frozenset({"deps", "model_settings", "usage_limits", "output_type", "instructions", "infer_name"})
"""`agent.run` keywords the fast path understands; any other keyword sends the call through the graph."""

_MAX_TEMPLATES = 1024

_override_vars: OrderedDict[int, tuple[weakref.ref[Any], tuple[ContextVar[Any], ...]]] = OrderedDict()
"""Per agent (by `id`, checked through the weak reference): its `agent.override()` context variables."""


def _override_context_vars(agent: Any, attributes: Mapping[str, Any]) -> tuple[ContextVar[Any], ...]:
    """The `_override_*` context variables of `agent`, found once per agent instead of scanning its attributes."""
    found = _override_vars.get(id(agent))
    if found is not None and found[0]() is agent:
        return found[1]
    variables = tuple(
        value for name, value in attributes.items() if name.startswith("_override_") and isinstance(value, ContextVar)
    )
    with _lock:
        _override_vars[id(agent)] = (weakref.ref(agent), variables)
        while len(_override_vars) > _MAX_TEMPLATES:
            _override_vars.popitem(last=False)
    return variables


def _plain_output_type(output_type: Any) -> bool:
    if isinstance(output_type, type):
        return True
    origin = getattr(output_type, "__origin__", None)
    return origin is not None and not callable(getattr(output_type, "__get__", None))


def static_signature(agent: Any, run_kwargs: Mapping[str, Any], *, whole_run: bool) -> tuple[Hashable, ...] | None:
    """A hashable description of everything (besides prompt and history) that shapes the agent's first request.

    `None` when the agent has dynamic parts (or parts this module does not understand); such an agent never
    takes the fast path. Reads pydantic-ai's private attributes defensively: a missing attribute means `None`.
    """
    if not run_kwargs.keys() <= _FAST_RUN_KWARGS:
        return None
    try:
        d = agent.__dict__
        if d["_system_prompt_functions"] or d["_system_prompt_dynamic_functions"]:
            return None
        if d["_dynamic_toolsets"] or d["_user_toolsets"] or d["_cap_toolsets"] or d["_output_validators"]:
            return None
        if d["_event_stream_handler"] is not None or callable(d["model_settings"]):
            return None
        instructions = d["_instructions"]
        if not all(isinstance(getattr(i, "instruction", None), str) for i in instructions):
            return None
        tools = d["_function_toolset"].tools
        if tools and not (whole_run and all(getattr(t, "prepare", None) is None for t in tools.values())):
            return None
        for variable in _override_context_vars(agent, d):
            if variable.get() is not None:
                return None
        caps = getattr(d["_root_capability"], "capabilities", None)
        if caps is None or any(type(c).__name__ not in _DEFAULT_CAPABILITIES for c in caps):
            return None
        model = d["_model"]
        output_type = run_kwargs.get("output_type", d["_output_type"])
        if not _plain_output_type(output_type):
            return None
        run_instructions = run_kwargs.get("instructions")
        if run_instructions is not None and not isinstance(run_instructions, str):
            return None
        settings = run_kwargs.get("model_settings")
        if callable(settings):
            return None
        model_settings = getattr(model, "settings", None) if model is not None and not isinstance(model, str) else None
        agent_settings = d["model_settings"]
        if model_settings is None and agent_settings is None and settings is None:
            settings_json = "{}"  # what `canonical_settings` gives for no settings at all
        else:
            settings_json = dumps_canonical(canonical_settings(model_settings, agent_settings, settings))
        return (
            id(agent),
            id(model),
            id(d["_output_schema"]),
            output_type,
            tuple(i.instruction for i in instructions),
            d["_system_prompts"],
            tuple(tools),
            settings_json,
            run_instructions,
        )
    except (KeyError, AttributeError, TypeError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class RunTemplate:
    """The first request of a static configuration, with the history and the user prompt taken out."""

    agent_ref: weakref.ref[Any]
    """The agent the template was learned from (a recycled `id()` must not match)."""
    header_json: str
    """Canonical JSON of the request header (model, settings, parameters)."""
    last_message: dict[str, Any]
    """The run's new request, canonical, without its final user-prompt part."""
    _last_json: tuple[str, str] = field(init=False, repr=False, compare=False)
    """Canonical JSON of the new request split where the prompt's JSON string goes (`prefix`, `suffix`)."""

    def __post_init__(self) -> None:
        # The prompt is one JSON string at a fixed place of the canonical text (keys are sorted whatever the
        # value), so the text around it is computed once: a hit then only encodes the prompt itself.
        marker = f"pyai_caching-prompt-{uuid.uuid4().hex}"
        text = dumps_canonical(self._last_with(marker))
        prefix, found, suffix = text.partition(dumps_canonical(marker))
        if not found or dumps_canonical(marker) in suffix:
            raise ValueError("the prompt marker must appear exactly once in the template")
        object.__setattr__(self, "_last_json", (prefix, suffix))

    def _last_with(self, prompt: str) -> dict[str, Any]:
        last = dict(self.last_message)
        last["parts"] = [*self.last_message["parts"], {"part_kind": "user-prompt", "content": prompt}]
        return last

    def last_json(self, prompt: str) -> str:
        """Canonical JSON of the run's new request for `prompt`."""
        prefix, suffix = self._last_json
        return prefix + dumps_canonical(prompt) + suffix

    def messages_json(self, history: Sequence[dict[str, Any]], prompt: str) -> list[str]:
        """Canonical JSON of every message of the first request for `history` and `prompt`."""
        return [*(dumps_canonical(m) for m in history), self.last_json(prompt)]

    def run_digest(self, namespace: str, history: Sequence[dict[str, Any]], prompt: str, extra: str) -> str:
        """The digest of the first request of a run with this history and prompt."""
        last = self.last_json(prompt)
        # The canonical array of all messages: the history's array with the new request appended.
        messages = dumps_canonical(history)[:-1] + "," + last + "]" if history else "[" + last + "]"
        return digest_json(namespace, self.header_json, messages, extra=extra)


_lock = threading.Lock()
_templates: OrderedDict[tuple[Hashable, ...], RunTemplate] = OrderedDict()


def _template_key(signature: tuple[Hashable, ...], has_history: bool) -> tuple[Hashable, ...]:
    return (*signature, has_history)


def lookup_template(agent: Any, signature: tuple[Hashable, ...], has_history: bool) -> RunTemplate | None:
    """The template learned for this configuration in this process, if any."""
    template = _templates.get(_template_key(signature, has_history))
    if template is None or template.agent_ref() is not agent:
        return None
    return template


def learn_template(
    agent: Any,
    signature: tuple[Hashable, ...],
    observed: CanonicalRequest,
    history_canonical: list[dict[str, Any]],
    prompt: str,
) -> RunTemplate | None:
    """Learn (and keep) a template from an observed first request; `None` if it cannot reproduce the request."""
    messages = observed.messages
    if len(messages) != len(history_canonical) + 1 or messages[:-1] != history_canonical:
        return None
    last = messages[-1]
    parts = last.get("parts")
    if last.get("kind") != "request" or not parts or parts[-1] != {"part_kind": "user-prompt", "content": prompt}:
        return None
    try:
        template = RunTemplate(
            agent_ref=weakref.ref(agent),
            header_json=dumps_canonical(observed.header),
            last_message={**last, "parts": parts[:-1]},
        )
    except ValueError:
        return None
    expected = [dumps_canonical(m) for m in messages]
    if template.messages_json(history_canonical, prompt) != expected:
        return None
    with _lock:
        key = _template_key(signature, bool(history_canonical))
        _templates[key] = template
        _templates.move_to_end(key)
        while len(_templates) > _MAX_TEMPLATES:
            _templates.popitem(last=False)
    return template


def history_canonical(history: Sequence[ModelMessage]) -> list[dict[str, Any]]:
    """The canonical form of a history (empty for no history)."""
    return canonical_messages(history) if history else []
