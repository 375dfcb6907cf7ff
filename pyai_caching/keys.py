"""Cache keys: the canonical form of what a model sees, and its SHA-256 digest.

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
import hashlib
import json
import math
import re
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

from ._redact import is_secret_name, redact, secret_digest
from .exceptions import ConfigurationError

__all__ = [
    "DEFAULT_NAMESPACE",
    "KEY_PREFIX",
    "KEY_SCHEMA_VERSION",
    "CanonicalRequest",
    "canonical_messages",
    "canonical_request",
    "canonical_settings",
    "digest",
    "digest_json",
    "dumps_canonical",
    "entry_key",
    "namespace_prefix",
    "validate_namespace",
]

KEY_SCHEMA_VERSION: Final = 1
"""Bumped whenever the canonical form changes; old entries then simply stop matching."""

KEY_PREFIX: Final = "pyai_caching:"
"""Every key this library writes starts with this prefix; nothing else is ever touched."""

DEFAULT_NAMESPACE: Final = "default"
"""The namespace used when none is given."""

_NAMESPACE_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")

# --- What counts -------------------------------------------------------------------------------------------

GLOBAL_VOLATILE: Final = frozenset(
    {
        "timestamp",
        "run_id",
        "conversation_id",
        "usage",
        "provider_response_id",
        "provider_details",
        "provider_url",
        "provider_name",
        "metadata",
        "state",
        "history_digest",
        "failed_attempts",
        "workspace_ref",
        "id",
        "identifier",
        "finish_reason",
        "model_name",
        "model_id",
        "canonical_system",
        "signature",
    }
)
"""Fields that never reach the model (or differ between two identical requests); dropped wherever they appear."""

MESSAGE_FIELDS: Final[Mapping[str, tuple[frozenset[str], frozenset[str]]]] = {
    # kind: (fields that count, fields that are ignored)
    "request": (
        frozenset({"kind", "parts", "instructions"}),
        frozenset({"timestamp", "run_id", "conversation_id", "metadata", "state"}),
    ),
    "response": (
        frozenset({"kind", "parts"}),
        frozenset(
            {
                "usage",
                "model_name",
                "model_id",
                "timestamp",
                "provider_name",
                "provider_url",
                "canonical_system",
                "provider_details",
                "provider_response_id",
                "finish_reason",
                "run_id",
                "conversation_id",
                "metadata",
                "workspace_ref",
                "history_digest",
                "failed_attempts",
                "state",
            }
        ),
    ),
}
"""The fields of `ModelRequest` and `ModelResponse`, split into those that count and those that do not."""

PART_FIELDS: Final[Mapping[str, tuple[frozenset[str], frozenset[str]]]] = {
    "system-prompt": (
        frozenset({"part_kind", "content", "scope"}),
        frozenset({"timestamp", "dynamic_ref", "context_id", "metadata"}),
    ),
    "user-prompt": (frozenset({"part_kind", "content"}), frozenset({"timestamp"})),
    "tool-return": (
        frozenset({"part_kind", "tool_name", "content", "tool_call_id", "tool_kind", "outcome"}),
        frozenset({"metadata", "timestamp", "retry"}),
    ),
    "retry-prompt": (frozenset({"part_kind", "content", "tool_name", "tool_call_id"}), frozenset({"timestamp"})),
    "text": (frozenset({"part_kind", "content"}), frozenset({"id", "provider_name", "provider_details", "citations"})),
    "tool-call": (
        frozenset({"part_kind", "tool_name", "args", "tool_call_id", "tool_kind"}),
        frozenset({"id", "provider_name", "provider_details"}),
    ),
    "thinking": (
        frozenset({"part_kind", "content"}),
        frozenset({"id", "signature", "provider_name", "provider_details"}),
    ),
    "file": (frozenset({"part_kind", "content"}), frozenset({"id", "provider_name", "provider_details"})),
    "builtin-tool-call": (
        frozenset({"part_kind", "tool_name", "args", "tool_call_id", "tool_kind"}),
        frozenset({"id", "provider_name", "provider_details"}),
    ),
    "builtin-tool-return": (
        frozenset({"part_kind", "tool_name", "content", "tool_call_id", "tool_kind", "outcome"}),
        frozenset({"metadata", "timestamp", "provider_name", "provider_details"}),
    ),
}
"""The fields of each known part kind, split into those that count and those that do not."""

TOOL_DEFINITION_FIELDS: Final = (
    "name",
    "parameters_json_schema",
    "description",
    "strict",
    "kind",
    "tool_kind",
    "defer_loading",
    "return_schema",
    "include_return_schema",
)
"""The fields of a `ToolDefinition` that reach the model; the rest (timeouts, toolset ids, metadata) do not."""

TOOL_DEFINITION_IGNORED: Final = frozenset(
    {
        "outer_typed_dict_key",
        "sequential",
        "metadata",
        "timeout",
        "unless_native",
        "with_native",
        "unless_tool_kind",
        "toolset_id",
        "capability_id",
    }
)
"""`ToolDefinition` fields that are local bookkeeping and stay out of the key."""

PARAMETER_FIELDS: Final = (
    "output_mode",
    "output_object",
    "prompted_output_template",
    "allow_text_output",
    "allow_image_output",
    "thinking",
)
"""Scalar fields of `ModelRequestParameters` that count (tools and instructions are handled separately)."""

PARAMETER_IGNORED: Final = frozenset(
    {
        "_telemetry_mcp_url_ids",
        "_telemetry_mcp_url_toolset_ids",
        "_telemetry_mcp_url_tool_names",
        "_framing_announcement",
        "tool_visibility",
        "revealed_tool_names",
        "introduced_tool_names",
        "deferred_capability_ids",
        "instruction_visibility",
        "cache",
    }
)
"""`ModelRequestParameters` fields that stay out of the key (telemetry, visibility bookkeeping, prompt caching)."""

SETTINGS_IGNORED: Final = frozenset(
    {
        "timeout",
        "request_timeout",
        "first_event_timeout",
        "max_retries",
        "extra_headers",
        "framing_announcement",
        "cache",
        "service_tier",
    }
)
"""Model settings that change how a request is sent, not what the model answers."""

_TRANSPORT_SETTING_RE: Final = re.compile(r"(_headers|_timeout)$", re.I)
"""Provider-specific transport settings (`*_headers`, `*_timeout`), dropped like `SETTINGS_IGNORED`."""


# --- Canonical form ----------------------------------------------------------------------------------------


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


_ENCODER: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""One encoder for every canonical dump (`json.dumps` with these options would build a new one per call)."""


def dumps_canonical(obj: Any) -> str:
    """Serialize `obj` to the one canonical JSON text: sorted keys, no spaces, UTF-8, no NaN."""
    return _ENCODER.encode(obj)


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
# path, message by message. The first message that uses a class is canonicalized both ways and compared,
# byte for byte: a class whose direct form ever differs from its dump (a newer pydantic-ai that serializes a
# field differently) is sent down the reference path from then on, so keys never depend on which path ran.

_NOT_PLAIN: Final = object()
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
_verify_lock = threading.Lock()


def _plain_copy(value: Any) -> Any:
    """A copy of plain JSON data (which pydantic's JSON-mode dump returns unchanged), else `_NOT_PLAIN`."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is float:
        return value if math.isfinite(value) else _NOT_PLAIN
    if t is list:
        items = [_plain_copy(v) for v in value]
        return _NOT_PLAIN if any(v is _NOT_PLAIN for v in items) else items
    if t is dict:
        out: dict[str, Any] = {}
        for k, v in value.items():
            if type(k) is not str:
                return _NOT_PLAIN
            c = out[k] = _plain_copy(v)
            if c is _NOT_PLAIN:
                return _NOT_PLAIN
        return out
    return _NOT_PLAIN


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
                        value = _plain_copy(value)
                        if value is _NOT_PLAIN:
                            return None
                    out[part_name] = value
                parts.append(_finish_part(out, ids))
            canon["parts"] = parts
        else:
            value = getattr(message, name)
            if type(value) is not str:
                value = _plain_copy(value)
                if value is _NOT_PLAIN:
                    return None
            canon[name] = value
    return canon


def _canonical_message(message: ModelMessage, ids: dict[str, str]) -> dict[str, Any]:
    direct = _direct_canonical(message, ids, _direct)
    if direct is not None:
        return direct
    return _verified_canonical(message, ids)


def _verified_canonical(message: ModelMessage, ids: dict[str, str]) -> dict[str, Any]:
    """The reference path; when the message has classes not compared yet, compare both paths on it."""
    global _direct
    new = [c for c in (type(message), *(type(p) for p in message.parts)) if c in _candidates and c not in _direct]
    if not new:
        return _dumped_canonical(message, ids)
    before = dict(ids)
    direct = _direct_canonical(message, ids, {**_direct, **_candidates})
    direct_ids = dict(ids)
    ids.clear()
    ids.update(before)
    reference = _dumped_canonical(message, ids)
    if direct is None:  # a value that is not plain data: nothing learned about the classes
        return reference
    same = direct_ids == ids and json.dumps(direct, allow_nan=False) == json.dumps(reference, allow_nan=False)
    with _verify_lock:
        if same:
            _direct = {**_direct, **{c: _candidates[c] for c in new if c in _candidates}}
        else:
            for c in new:
                _candidates.pop(c, None)
    return reference


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
    placeholder (`pyai_caching._redact`): two credentials still give two keys, but no secret reaches a key, an
    entry or a cassette in readable form.
    """
    merged: ModelSettings | None = None
    for layer in layers:
        merged = merge_model_settings(merged, layer)
    if not merged:
        return {}
    out: dict[str, Any] = {}
    for name, value in merged.items():
        if name in SETTINGS_IGNORED or _TRANSPORT_SETTING_RE.search(name):
            continue
        out[name] = secret_digest(_jsonable(value)) if is_secret_name(name) else redact(_jsonable(value))
    return out


def _jsonable(value: Any) -> Any:
    # Plain JSON data (most tool schemas and settings) is what `to_jsonable_python` would return anyway, and
    # copying it directly is several times faster than pydantic's type inference.
    plain = _plain_copy(value)
    if plain is not _NOT_PLAIN:
        return plain
    return to_jsonable_python(value, fallback=_unserializable)


def _unserializable(value: Any) -> str:
    return f"<{type(value).__qualname__}>"


def _tool_definitions(tools: Sequence[Any]) -> list[dict[str, Any]]:
    return [{f: _jsonable(getattr(t, f, None)) for f in TOOL_DEFINITION_FIELDS} for t in tools]


def canonical_parameters(params: ModelRequestParameters) -> dict[str, Any]:
    """The parts of `ModelRequestParameters` that reach the model, in canonical form."""
    out: dict[str, Any] = {f: _jsonable(getattr(params, f, None)) for f in PARAMETER_FIELDS}
    out["function_tools"] = _tool_definitions(params.function_tools)
    out["output_tools"] = _tool_definitions(params.output_tools)
    out["native_tools"] = [_jsonable(t) for t in params.native_tools]
    out["instructions"] = [getattr(p, "content", None) for p in (params.instruction_parts or ())]
    return out


def model_identity(model: Model) -> dict[str, str]:
    """Who answers: the provider system and the model name (an `agent.override(model=...)` is already applied)."""
    return {"system": str(model.system), "name": str(model.model_name)}


def canonical_request(
    model: Model,
    messages: Sequence[ModelMessage],
    model_settings: ModelSettings | None,
    params: ModelRequestParameters,
) -> CanonicalRequest:
    """The canonical form of one model request, as `wrap_model_request` sees it.

    The model's own settings (`Model.settings`) are merged under the request's settings, as the model does.
    """
    header = {
        "model": model_identity(model),
        "settings": canonical_settings(model.settings, model_settings),
        "parameters": canonical_parameters(params),
    }
    return CanonicalRequest(header=header, messages=canonical_messages(messages))


# --- Digests and key strings -------------------------------------------------------------------------------


def digest(namespace: str, header_json: str, message_jsons: Sequence[str], *, extra: str = "") -> str:
    """SHA-256 (hex) of a request given as canonical JSON fragments.

    `header_json` is `dumps_canonical(header)`, `message_jsons` are `dumps_canonical(message)` for each message.
    Hashing fragments lets a caller that already holds some of them (the run-level fast path) skip
    re-serializing them; the result equals hashing the whole request.
    """
    return digest_json(namespace, header_json, "[" + ",".join(message_jsons) + "]", extra=extra)


def digest_json(namespace: str, header_json: str, messages_json: str, *, extra: str = "") -> str:
    """`digest` with the messages given as one canonical JSON array (the same bytes are hashed)."""
    h = hashlib.sha256(f"pyai_caching/key/v{KEY_SCHEMA_VERSION}\x00{namespace}\x00{extra}\x00".encode())
    h.update(header_json.encode())
    h.update(b"\x00")
    h.update(messages_json.encode())
    return h.hexdigest()


def request_digest(canonical: CanonicalRequest, namespace: str, *, extra: str = "") -> str:
    """SHA-256 (hex) of a whole canonical request."""
    # One dump of the whole list: the canonical array is the messages' canonical texts joined by commas.
    return digest_json(namespace, dumps_canonical(canonical.header), dumps_canonical(canonical.messages), extra=extra)


def validate_namespace(namespace: str | None) -> str:
    """Return the namespace to use, or raise `ConfigurationError` if it would break the key scheme."""
    if namespace is None:
        return DEFAULT_NAMESPACE
    if not isinstance(namespace, str):
        raise ConfigurationError(f"namespace must be a string, got {type(namespace).__name__}")
    if not _NAMESPACE_RE.match(namespace):
        raise ConfigurationError(
            f"namespace {namespace!r} is not allowed: use 1-64 characters from letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return namespace


def namespace_prefix(namespace: str | None = None) -> str:
    """The key prefix of one namespace, or of every entry of this library when `namespace` is `None`."""
    if namespace is None:
        return KEY_PREFIX
    return f"{KEY_PREFIX}{validate_namespace(namespace)}:"


def entry_key(namespace: str, kind: str, hex_digest: str) -> str:
    """The store key of an entry: `pyai_caching:<namespace>:<kind>:{<digest>}`.

    The digest is wrapped in a Redis Cluster hash tag, so an entry and its lock live on the same node.
    """
    return f"{KEY_PREFIX}{namespace}:{kind}:{{{hex_digest}}}"
