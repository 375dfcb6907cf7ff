"""The canonical form of a model request: what the model sees, with nothing else.

Everything here is pure: no I/O, no clock, no randomness, so a key computed in one process (or on one machine,
or after a JSON round trip of the history) is the key computed everywhere else.

A request's canonical form has two halves:

* the **header**: the model's identity (system and model name), the merged model settings that can change the
  answer, and the tool, output and instruction definitions (`ModelRequestParameters`);
* the **messages**, exactly as the model receives them, each reduced to the fields that reach the model.

Volatile fields are removed by structure (an explicit list per message and part kind), never by editing content:
timestamps, run and conversation ids, usage, provider response ids and details, part ids. Random
`tool_call_id`s are renumbered in order of first appearance so that call/return pairs stay linked.

Parts of a kind this module does not know (a newer pydantic-ai) keep every field except the globally volatile
ones: an unknown field can only cause a miss, never a wrong hit. `tests/unit/test_keys.py` fails when
pydantic-ai adds a field to a known kind, so that someone decides where it belongs.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pydantic_ai.messages import (
    ModelMessage,
    ModelMessagesTypeAdapter,
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    ThinkingPart,
    ToolCallPart,
    ToolReturnPart,
    UserPromptPart,
)
from pydantic_ai.models import Model, ModelRequestParameters
from pydantic_ai.settings import ModelSettings, merge_model_settings
from pydantic_core import to_jsonable_python

from pyai_caching._util.plain import NOT_PLAIN, plain_copy
from pyai_caching._util.redact import is_secret_name, redact, secret_digest
from pyai_caching.engine.fields import (
    GLOBAL_VOLATILE,
    MESSAGE_FIELDS,
    PARAMETER_FIELDS,
    PART_FIELDS,
    SETTINGS_IGNORED,
    TOOL_DEFINITION_FIELDS,
    TRANSPORT_SETTING_RE,
)
from pyai_caching.engine.identity import model_identity

__all__ = [
    "CanonicalRequest",
    "canonical_dumped_messages",
    "canonical_messages",
    "canonical_parameters",
    "canonical_request",
    "canonical_settings",
    "tool_definitions",
    "verify_direct_path",
]


@dataclass(frozen=True, slots=True)
class CanonicalRequest:
    """A model request reduced to what the model sees, ready to hash or to show to a person."""

    header: dict[str, Any]
    """Model identity, settings and request parameters."""
    messages: list[dict[str, Any]]
    """The messages, in order, with volatile fields removed and tool call ids renumbered."""

    def to_json_obj(self) -> dict[str, Any]:
        """The whole request as one JSON-compatible dict (for entries, cassettes and diffs)."""
        return {"header": self.header, "messages": self.messages}


def _strip(obj: dict[str, Any], counted: frozenset[str] | None) -> dict[str, Any]:
    if counted is None:
        return {k: v for k, v in obj.items() if k not in GLOBAL_VOLATILE}
    return {k: v for k, v in obj.items() if k in counted}


def _canonical_part(part: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    kind = part.get("part_kind")
    spec = PART_FIELDS.get(kind) if isinstance(kind, str) else None
    return _finish_part(_strip(part, spec[0] if spec else None), ids)


def _finish_part(out: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    call_id = out.get("tool_call_id")
    if isinstance(call_id, str):
        new_id = ids.get(call_id)
        if new_id is None:
            new_id = ids[call_id] = f"call_{len(ids) + 1}"
        out["tool_call_id"] = new_id
    content = out.get("content")
    if isinstance(content, list):
        out["content"] = [_strip(c, None) if isinstance(c, dict) else c for c in content]
    elif isinstance(content, dict) and "kind" in content:
        out["content"] = _strip(content, None)
    return out


def _canonical_dumped_message(message: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    kind = message.get("kind")
    spec = MESSAGE_FIELDS.get(kind) if isinstance(kind, str) else None
    canon = _strip(message, spec[0] if spec else None)
    canon["parts"] = [_canonical_part(p, ids) for p in message.get("parts", [])]
    return canon


def _dumped_canonical(message: ModelMessage, ids: dict[str, str]) -> dict[str, Any]:
    """The reference path: dump the message with pydantic-ai's own serializer, then strip it."""
    dumped: list[dict[str, Any]] = ModelMessagesTypeAdapter.dump_python([message], mode="json")
    return _canonical_dumped_message(dumped[0], ids)


# The direct path. Dumping messages through pydantic-ai's serializer runs Python callbacks for every usage object
# and tool result (~12 us a message), only for most of the dump to be thrown away. For the common message and
# part classes, whose counted fields hold plain JSON data (str, int, finite float, bool, None, and lists and
# str-keyed dicts of those), the canonical form is read straight from the attributes instead. Anything else (an
# image, a tool result that is a pydantic model, a subclass, a part kind not listed here) takes the reference
# path, message by message. On a miss (`verify_direct_path`), the first message that uses a class is
# canonicalized both ways and compared, byte for byte: a class whose direct form ever differs from its dump (a
# newer pydantic-ai that serializes a field differently) is sent down the reference path from then on, so keys
# do not depend on which path ran.

_DIRECT_CLASSES: Final = (
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    UserPromptPart,
    ToolReturnPart,
    TextPart,
    ToolCallPart,
    ThinkingPart,
)


def _counted_attributes(
    cls: type, kind_field: str, table: Mapping[str, tuple[frozenset[str], frozenset[str]]]
) -> tuple[str, ...] | None:
    """The counted fields of a dataclass, in declaration order (the order pydantic dumps them in)."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kind = fields[kind_field].default if kind_field in fields else None
    if not isinstance(kind, str) or kind not in table:
        return None
    counted = table[kind][0]
    return tuple(name for name in fields if name in counted)


_candidates: dict[type, tuple[str, ...]] = {
    cls: names
    for cls, names in (
        *((cls, _counted_attributes(cls, "kind", MESSAGE_FIELDS)) for cls in _DIRECT_CLASSES[:2]),
        *((cls, _counted_attributes(cls, "part_kind", PART_FIELDS)) for cls in _DIRECT_CLASSES[2:]),
    )
    if names is not None
}
"""Classes that may take the direct path, with their counted attributes, until their first message is compared."""
_direct: dict[type, tuple[str, ...]] = {}
"""Classes whose direct form matched their dump. Replaced (never mutated) when a class is added."""
_trusted: dict[type, tuple[str, ...]] = dict(_candidates)
"""Classes that take the direct path: every candidate until a comparison shows a difference."""
_verify_lock = threading.Lock()


def _direct_canonical(
    message: Any, ids: dict[str, str], table: Mapping[type, tuple[str, ...]]
) -> dict[str, Any] | None:
    """The canonical form read from the attributes, or `None` when a class or a value is not in `table`'s reach.

    On `None`, `ids` may hold the renumbered ids of this message's first parts, which the reference path then
    assigns identically (they are numbered in order of first appearance either way).
    """
    names = table.get(type(message))
    if names is None:
        return None
    canon: dict[str, Any] = {}
    for name in names:
        if name == "parts":
            parts: list[dict[str, Any]] = []
            for part in message.parts:
                part_names = table.get(type(part))
                if part_names is None:
                    return None
                out: dict[str, Any] = {}
                for part_name in part_names:
                    value = getattr(part, part_name)
                    if type(value) is not str:
                        value = plain_copy(value)
                        if value is NOT_PLAIN:
                            return None
                    out[part_name] = value
                parts.append(_finish_part(out, ids))
            canon["parts"] = parts
        else:
            value = getattr(message, name)
            if type(value) is not str:
                value = plain_copy(value)
                if value is NOT_PLAIN:
                    return None
            canon[name] = value
    return canon


def _canonical_message(message: ModelMessage, ids: dict[str, str]) -> dict[str, Any]:
    direct = _direct_canonical(message, ids, _trusted)
    if direct is not None:
        return direct
    return _dumped_canonical(message, ids)


def verify_direct_path(messages: Sequence[ModelMessage]) -> None:
    """Compare the direct path with pydantic-ai's serializer for classes not compared yet (once per class).

    Called on a miss, where the model call dwarfs it: building pydantic-ai's message serializer costs the first
    call of a process about 100 ms, which a hit should not pay. The direct path cannot make two different requests
    share a key (it reads every counted field as plain data, and anything else takes the reference path); the
    comparison keeps keys identical whichever path computed them, and a class that ever differs is sent down the
    reference path from then on.
    """
    global _direct, _trusted
    ids: dict[str, str] = {}
    for message in messages:
        new = [c for c in (type(message), *(type(p) for p in message.parts)) if c in _candidates and c not in _direct]
        if not new:
            continue
        before = dict(ids)
        direct = _direct_canonical(message, ids, _trusted)
        direct_ids = dict(ids)
        ids.clear()
        ids.update(before)
        reference = _dumped_canonical(message, ids)
        if direct is None:  # a value that is not plain data: nothing learned about the classes
            continue
        same = direct_ids == ids and json.dumps(direct, allow_nan=False) == json.dumps(reference, allow_nan=False)
        with _verify_lock:
            if same:
                _direct = {**_direct, **{c: _candidates[c] for c in new if c in _candidates}}
            else:
                for c in new:
                    _candidates.pop(c, None)
                _trusted = {**_candidates}


def canonical_messages(messages: Sequence[ModelMessage]) -> list[dict[str, Any]]:
    """Reduce `messages` to their canonical JSON-compatible form (see the module docstring)."""
    ids: dict[str, str] = {}
    return [_canonical_message(m, ids) for m in messages]


def canonical_dumped_messages(dumped: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Like `canonical_messages`, for messages already dumped with `ModelMessagesTypeAdapter` (`mode='json'`)."""
    ids: dict[str, str] = {}
    return [_canonical_dumped_message(m, ids) for m in dumped]


def canonical_settings(*layers: ModelSettings | None) -> dict[str, Any]:
    """Merge settings layers (later wins) and keep only the settings that can change the answer.

    Transport settings (timeouts, retries, extra headers, prompt-cache hints) are dropped. The value of every
    secret-looking name, at any depth (`extra_body={"auth": {"access_token": ...}}`), is replaced by its digest
    placeholder (`pyai_caching._util.redact`): two credentials still give two keys, but no secret reaches a key, an
    entry or a cassette in readable form.
    """
    merged: ModelSettings | None = None
    for layer in layers:
        merged = merge_model_settings(merged, layer)
    if not merged:
        return {}
    out: dict[str, Any] = {}
    for name, value in merged.items():
        if name in SETTINGS_IGNORED or TRANSPORT_SETTING_RE.search(name):
            continue
        out[name] = secret_digest(_jsonable(value)) if is_secret_name(name) else redact(_jsonable(value))
    return out


def _jsonable(value: Any) -> Any:
    # Plain JSON data (most tool schemas and settings) is what `to_jsonable_python` would return anyway, and
    # copying it directly is several times faster than pydantic's type inference.
    plain = plain_copy(value)
    if plain is not NOT_PLAIN:
        return plain
    return to_jsonable_python(value, fallback=_unserializable)


def _unserializable(value: Any) -> str:
    return f"<{type(value).__qualname__}>"


def tool_definitions(tools: Sequence[Any]) -> list[dict[str, Any]]:
    """The fields of each `ToolDefinition` that reach the model, in canonical form."""
    return [{f: _jsonable(getattr(t, f, None)) for f in TOOL_DEFINITION_FIELDS} for t in tools]


def canonical_parameters(params: ModelRequestParameters) -> dict[str, Any]:
    """The parts of `ModelRequestParameters` that reach the model, in canonical form."""
    out: dict[str, Any] = {f: _jsonable(getattr(params, f, None)) for f in PARAMETER_FIELDS}
    out["function_tools"] = tool_definitions(params.function_tools)
    out["output_tools"] = tool_definitions(params.output_tools)
    out["native_tools"] = [_jsonable(t) for t in params.native_tools]
    out["instructions"] = [getattr(p, "content", None) for p in (params.instruction_parts or ())]
    return out


def canonical_request(
    model: Model,
    messages: Sequence[ModelMessage],
    model_settings: ModelSettings | None,
    params: ModelRequestParameters,
) -> CanonicalRequest:
    """The canonical form of one model request, as the model that serves it receives it.

    The model's own settings (`Model.settings`) are merged under the request's settings, as the model does.
    """
    header = {
        "model": model_identity(model),
        "settings": canonical_settings(model.settings, model_settings),
        "parameters": canonical_parameters(params),
    }
    return CanonicalRequest(header=header, messages=canonical_messages(messages))
