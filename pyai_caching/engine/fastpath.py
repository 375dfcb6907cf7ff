"""The run-level fast path: find a whole run's entry before pydantic-ai's agent graph starts.

pydantic-ai spends ~1.7 ms setting a run up before the first model request, so a hit served from inside the run
can never be much faster than a direct run. For an agent whose first request is fully determined by its static
configuration, the call's prompt and its history, the key of that first request can be computed without running
anything, and a whole-run entry stored under it answers the call with one GET and one decode.

The static configuration is not rebuilt by hand (pydantic-ai changes too fast for that): the first run of a
configuration goes through the graph, the cache records the first request as the model received it, and this
module learns a *template* from it: the request with the history and the user prompt taken out, and the *output
recipe* by which pydantic-ai turned the final response into the output. A template is kept only when re-assembling
it reproduces the observed request exactly and the recipe reproduces the observed output.

Templates are kept on the agent they were learned from, under a *shape* of everything that feeds the first
request, compared by value on every call: the model's identity, instructions, system prompts, settings, the
output type, tool definitions (name, description, schema, strictness) and the capability-provided native tools.
A change to any of them gives a new shape, so a stale template is never used. Anything the shape cannot
compare (instruction or system-prompt functions, toolsets, capabilities with hooks, output validators or
functions, validation context, event handlers, `agent.override`, usage limits) makes the call take the graph,
which is always correct.

A run entry holds the model's raw messages, never the validated output: on a hit the recipe runs pydantic-ai's own
output processor on the stored final response, so the caller's validators run exactly once, as on a miss.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.messages import ModelMessage

from pyai_caching._util.canonical_json import dumps_canonical
from pyai_caching.engine.canonical import CanonicalRequest, canonical_messages, canonical_settings, tool_definitions
from pyai_caching.engine.identity import model_identity
from pyai_caching.engine.keys import digest_json
from pyai_caching.engine.pai_compat import AgentShapeError, OutputRecipe, fallback_serves, static_parts

__all__ = ["RunTemplate", "learn_template", "lookup_template", "static_shape"]

_FAST_RUN_KWARGS = frozenset({"deps", "model_settings", "output_type", "instructions", "infer_name"})
"""`agent.run` keywords the fast path understands; any other keyword sends the call through the graph."""

_MAX_TEMPLATES = 64
"""Templates kept per agent (least recently learned dropped first)."""

_TEMPLATES_ATTRIBUTE = "_pyai_caching_templates"
"""Where an agent's templates are kept: on the agent itself, so they live and die with it."""


def _plain_output_type(output_type: Any) -> bool:
    if isinstance(output_type, type):
        return True
    origin = getattr(output_type, "__origin__", None)
    return origin is not None and not callable(getattr(output_type, "__get__", None))


def static_shape(agent: Any, run_kwargs: Mapping[str, Any], *, whole_run: bool) -> tuple[Hashable, ...] | None:
    """Everything (besides prompt and history) that feeds the agent's first request, as comparable values.

    `None` when the agent has dynamic parts, or parts this module does not understand: the call then takes the
    graph. Computed on every call, so a change to the agent is seen by the next call.
    """
    if not run_kwargs.keys() <= _FAST_RUN_KWARGS:
        return None
    try:
        parts = static_parts(agent)
    except AgentShapeError:
        return None
    if parts is None or parts.model is None or isinstance(parts.model, str) or fallback_serves(parts.model):
        return None
    if parts.tools and not (whole_run and all(getattr(t, "prepare", None) is None for t in parts.tools)):
        return None
    output_type = run_kwargs.get("output_type", parts.output_type)
    run_instructions = run_kwargs.get("instructions")
    settings = run_kwargs.get("model_settings")
    if not _plain_output_type(output_type) or callable(settings):
        return None
    if run_instructions is not None and not isinstance(run_instructions, str):
        return None
    model = parts.model
    try:
        identity = dumps_canonical(model_identity(model))
        settings_json = dumps_canonical(canonical_settings(model.settings, parts.settings, settings))
        tools_json = dumps_canonical(tool_definitions([t.tool_def for t in parts.tools])) if parts.tools else ""
    except (TypeError, ValueError, AttributeError):
        return None
    return (
        identity,
        output_type,
        "output_type" in run_kwargs,
        parts.instructions,
        parts.system_prompts,
        settings_json,
        run_instructions,
        tools_json,
        parts.native_tools,
    )


@dataclass(frozen=True, slots=True)
class RunTemplate:
    """The first request of a static configuration, with the history and the user prompt taken out."""

    recipe: OutputRecipe
    """How the final response becomes the output for this configuration."""
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


def _templates_of(agent: Any) -> OrderedDict[tuple[Hashable, ...], RunTemplate] | None:
    templates = agent.__dict__.get(_TEMPLATES_ATTRIBUTE)
    return templates if isinstance(templates, OrderedDict) else None


def lookup_template(agent: Any, shape: tuple[Hashable, ...], has_history: bool) -> RunTemplate | None:
    """The template learned from this agent for this configuration, if any."""
    templates = _templates_of(agent)
    return None if templates is None else templates.get((*shape, has_history))


def learn_template(
    agent: Any,
    shape: tuple[Hashable, ...],
    observed: CanonicalRequest,
    history_canonical: list[dict[str, Any]],
    prompt: str,
    recipe: OutputRecipe,
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
            recipe=recipe,
            header_json=dumps_canonical(observed.header),
            last_message={**last, "parts": parts[:-1]},
        )
    except ValueError:
        return None
    expected = [dumps_canonical(m) for m in messages]
    if template.messages_json(history_canonical, prompt) != expected:
        return None
    with _lock:
        templates = _templates_of(agent)
        if templates is None:
            templates = OrderedDict()
            try:
                agent.__dict__[_TEMPLATES_ATTRIBUTE] = templates
            except (AttributeError, TypeError):
                return None
        key = (*shape, bool(history_canonical))
        templates[key] = template
        templates.move_to_end(key)
        while len(templates) > _MAX_TEMPLATES:
            templates.popitem(last=False)
    return template


def history_canonical(history: Sequence[ModelMessage]) -> list[dict[str, Any]]:
    """The canonical form of a history (empty for no history)."""
    return canonical_messages(history) if history else []
