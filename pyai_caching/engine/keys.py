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

from pyai_caching._util.redact import is_secret_name, redact, secret_digest
from pyai_caching.exceptions import ConfigurationError

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

KEY_SCHEMA_VERSION: Final = 2
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
        "finish_reason",
        "model_name",
        "model_id",
        "canonical_system",
        "signature",
        "record_id",
        "ui_visibility",
        "request_timestamp",
        "duration",
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
                "request_timestamp",
                "duration",
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
        frozenset({"metadata", "timestamp", "retry", "ui_visibility"}),
    ),
    "retry-prompt": (frozenset({"part_kind", "content", "tool_name", "tool_call_id"}), frozenset({"timestamp"})),
    "text": (frozenset({"part_kind", "content"}), frozenset({"id", "provider_name", "provider_details", "citations"})),
    "tool-call": (
        frozenset({"part_kind", "tool_name", "args", "tool_call_id", "tool_kind"}),
        frozenset({"id", "provider_name", "provider_details", "ui_visibility"}),
    ),
    "thinking": (
        frozenset({"part_kind", "content"}),
        frozenset({"id", "signature", "provider_name", "provider_details"}),
    ),
    "file": (frozenset({"part_kind", "content"}), frozenset({"id", "provider_name", "provider_details"})),
    "builtin-tool-call": (
        frozenset({"part_kind", "tool_name", "args", "tool_call_id", "tool_kind"}),
        frozenset({"id", "provider_name", "provider_details", "ui_visibility"}),
    ),
    "builtin-tool-return": (
        frozenset({"part_kind", "tool_name", "content", "tool_call_id", "tool_kind", "outcome"}),
        frozenset({"metadata", "timestamp", "provider_name", "provider_details", "ui_visibility"}),
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
        "ui_visibility",
        "durable",
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
        "deferred_capabilities",
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
# path, message by message. On a miss (`verify_direct_path`), the first message that uses a class is
# canonicalized both ways and compared, byte for byte: a class whose direct form ever differs from its dump (a
# newer pydantic-ai that serializes a field differently) is sent down the reference path from then on, so keys
# do not depend on which path ran.

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
_trusted: dict[type, tuple[str, ...]] = dict(_candidates)
"""Classes that take the direct path: every candidate until a comparison shows a difference."""
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


def model_identity(model: Model) -> dict[str, Any]:
    """Who answers, by value: the model's class, provider system, model name, base URL and profile.

    `model` is the model that serves the request (an `agent.override(model=...)`, a `ModelFallback` candidate
    or a `SelectModel` choice already applied). Two model objects that agree on all of these send the same request
    to the same endpoint; anything that differs (another deployment behind another base URL, a custom profile
    that changes how tools or output are sent) gives another key. Wrappers of this library are skipped.
    """
    return {
        "class": _model_classes(model),
        "config": _model_config(model),
        "system": str(model.system),
        "name": str(model.model_name),
        "base_url": _text_or_none(getattr(model, "base_url", None)),
        "profile": _profile_fingerprint(model),
    }


_OWN_WRAPPERS: Final = frozenset({"RetryingModel", "CachingModel"})


def _model_classes(model: Model) -> list[str]:
    classes: list[str] = []
    current: Any = model
    for _ in range(16):  # a chain of wrappers (instrumentation, the user's own) around the model that answers
        cls = type(current)
        if cls.__name__ not in _OWN_WRAPPERS:
            classes.append(f"{cls.__module__}.{cls.__qualname__}")
        current = getattr(current, "wrapped", None)
        if current is None:
            break
    return classes


_NOT_CONFIG: Final = frozenset({"wrapped", "settings", "_settings", "profile", "_profile"})
"""Model attributes that are counted elsewhere in the key (settings, profile) or are the next model of a chain."""

UNKEYABLE_MODEL: Final = "<unkeyable>"
"""The `config` of a model whose state cannot be turned into key material: such a request is never cached."""


def _model_config(model: Model) -> list[dict[str, Any]] | str:
    """What configures each model of the chain, by value: plain attributes (functions of a user's class by
    qualified name).

    `TestModel(custom_output_text=...)` and the state of a user's own `WrapperModel` (a tenant it adds to every
    request) change what is answered. A `FunctionModel` is identified by its model name (by default derived from
    its function's name), as a provider's model is, so that a test model is the same in every process.
    pydantic-ai's own models also hold objects (providers, clients), which their base URL identifies; a model
    class of anyone else holding state that is not plain data makes the request uncacheable (`UNKEYABLE_MODEL`),
    since nothing can show that a stored answer fits it.
    """
    chain: list[dict[str, Any]] = []
    current: Any = model
    for _ in range(16):
        cls = type(current)
        if cls.__name__ not in _OWN_WRAPPERS:
            own = cls.__module__.split(".")[0] == "pydantic_ai"
            config: dict[str, Any] = {}
            for name, value in sorted(vars(current).items()):
                if name in _NOT_CONFIG or name.startswith(("last_", "_entered", "__")):
                    continue
                if own and callable(value):
                    continue  # a `FunctionModel`'s function: its model name identifies it, across processes too
                plain = _config_value(value)
                if plain is _NOT_PLAIN:
                    if not own:
                        return UNKEYABLE_MODEL
                    continue
                config[name] = plain
            chain.append(config)
        current = getattr(current, "wrapped", None)
        if current is None:
            break
    return chain


def _config_value(value: Any) -> Any:
    plain = _plain_copy(value)
    if plain is not _NOT_PLAIN:
        return plain
    if isinstance(value, tuple):
        items = [_config_value(v) for v in value]
        return _NOT_PLAIN if any(v is _NOT_PLAIN for v in items) else items
    if isinstance(value, type) or callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__qualname__)}"
    return _NOT_PLAIN


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


_profiles_lock = threading.Lock()
_profiles: dict[int, tuple[Any, Any, str]] = {}
"""Fingerprints of model profiles: `id -> (profile, copy when fingerprinted, fingerprint)`. The profile is held,
so its `id` cannot be reused while it is here, and the copy is compared by value on every use, so a profile
changed in place is fingerprinted again."""


def _profile_fingerprint(model: Model) -> str | None:
    try:
        profile: Any = model.profile
    except Exception:  # a model whose profile cannot be built: the rest of its identity still counts
        return None
    if profile is None:
        return None
    found = _profiles.get(id(profile))
    if found is not None and found[0] is profile and found[1] == profile:
        return found[2]
    fingerprint = hashlib.sha256(dumps_canonical(_stable(profile)).encode()).hexdigest()[:32]
    copied = dict(profile) if isinstance(profile, dict) else dataclasses.replace(profile) if _is_dc(profile) else None
    with _profiles_lock:
        if len(_profiles) > 256:
            _profiles.clear()
        _profiles[id(profile)] = (profile, copied if copied is not None else object(), fingerprint)
    return fingerprint


def _is_dc(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _stable(value: Any, depth: int = 0) -> Any:
    """A form of `value` that is the same in every process (sets sorted, classes and functions by name)."""
    if depth > 20:
        return "<deep>"
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(k): _stable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_stable(v, depth + 1) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_stable(v, depth + 1) for v in value), key=dumps_canonical)
    if isinstance(value, type) or callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__qualname__)}"
    if _is_dc(value):
        return {f.name: _stable(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


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
    h = hashlib.sha256(f"pyai_caching/key/v{KEY_SCHEMA_VERSION}\x00{namespace}\x00".encode())
    h.update(_utf8(extra))
    h.update(b"\x00")
    h.update(_utf8(header_json))
    h.update(b"\x00")
    h.update(_utf8(messages_json))
    return h.hexdigest()


def _utf8(text: str) -> bytes:
    """UTF-8, with lone surrogates (which `agent.run` accepts in a prompt) encoded rather than refused."""
    return text.encode("utf-8", "surrogatepass")


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
    if not _NAMESPACE_RE.fullmatch(namespace):
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
