"""The fingerprint of a request: its key's ingredients, each reduced to a digest. Pure: no I/O.

A fingerprint keeps the shape of the canonical request (`pyai_caching.engine.canonical.CanonicalRequest`): the model,
each setting, each tool (by name), the output definitions, the instructions and each part of each message. It
keeps in clear only what names an ingredient or is a small number: the model's class, provider and name, setting
names and their numeric or boolean values, tool names, part and message kinds, tool call ids (already renumbered
`call_1`, ...). Every text and every structured value (a prompt, a tool description, a JSON schema, tool
arguments, a tool's result) is a digest:

* `h:<16 hex>`: a value (SHA-256 of its canonical JSON);
* `t:<16 hex>`: a text;
* `t:<16 hex>~<16 hex>:<kinds>`: a text holding volatile tokens (dates, times, UUIDs, see
  `pyai_caching._util.volatile`): the second digest is of the text with those tokens masked, so two texts that
  differ only in them are told apart from texts that differ in anything else, without keeping either text.

The fingerprint of a stored entry's request (entries keep the canonical request) and of a miss are computed by
this one function, so they can be compared leaf by leaf with `pyai_caching._util.explain.differences`.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Final

from pyai_caching._util.canonical_json import dumps_canonical
from pyai_caching._util.volatile import mask

__all__ = [
    "FINGERPRINT_VERSION",
    "Memo",
    "fingerprint",
    "fingerprint_json",
    "is_digest",
    "text_digest",
    "value_digest",
    "volatile_kinds",
    "volatile_only",
]

FINGERPRINT_VERSION: Final = 1
"""Bumped when the fingerprint of a request changes; older misses are then compared as far as they can be."""

_DIGEST_HEX: Final = 16
_CLEAR: Final = frozenset(
    {"kind", "part_kind", "tool_name", "tool_call_id", "tool_kind", "outcome", "scope", "name", "output_mode"}
)
"""Fields whose short string values name an ingredient rather than hold content: kept in clear."""
_MAX_CLEAR: Final = 200
"""A 'clear' string longer than this is a digest after all (a planted or unusual value)."""
_HEAD_MESSAGES: Final = 8
_TAIL_MESSAGES: Final = 24
"""A conversation longer than head + tail messages keeps the first and last ones in detail; the middle is one digest,
so a fingerprint stays small (a few kilobytes) whatever the history's length."""


def _hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:_DIGEST_HEX]


def _utf8(text: str) -> bytes:
    # Lone surrogates (which a prompt may hold) are written escaped, as the entry's request record shows them.
    return text.encode("utf-8", "backslashreplace")


_known: dict[str, str] = {}
"""Leaves of texts seen lately, by the text's digest: instructions, tool descriptions and a conversation's earlier
messages come back with every miss, and need not be scanned for volatile tokens again."""
_KNOWN_MAX: Final = 4096


def text_digest(text: str) -> str:
    """The digest leaf of a text (see the module docstring)."""
    plain = "t:" + _hex(_utf8(text))
    leaf = _known.get(plain)
    if leaf is None:
        masked, kinds = mask(text)
        leaf = f"{plain}~{_hex(_utf8(masked))}:{','.join(kinds)}" if kinds else plain
        if len(_known) >= _KNOWN_MAX:
            _known.clear()
        _known[plain] = leaf
    return leaf


def value_digest(value: Any) -> str:
    """The digest leaf of a JSON value (see the module docstring)."""
    try:
        text = dumps_canonical(value)
    except (TypeError, ValueError, RecursionError):  # not JSON data (a planted entry): digest what can be shown of it
        text = repr(value)
    return "h:" + _hex(_utf8(text))


def is_digest(value: Any) -> bool:
    """Whether a fingerprint leaf is a digest (its value cannot be shown) rather than a value kept in clear."""
    return isinstance(value, str) and (value.startswith("t:") or value.startswith("h:"))


def volatile_kinds(leaf: Any) -> tuple[str, ...]:
    """The kinds of volatile token a text leaf holds (empty for any other leaf)."""
    if not isinstance(leaf, str) or not leaf.startswith("t:") or "~" not in leaf:
        return ()
    _, _, kinds = leaf.partition("~")[2].partition(":")
    return tuple(k for k in kinds.split(",") if k)


def volatile_only(old: Any, new: Any) -> tuple[str, ...] | None:
    """The volatile kinds when two text leaves differ only in volatile tokens, else `None`."""
    if not (isinstance(old, str) and isinstance(new, str) and "~" in old and "~" in new):
        return None
    masked_old, masked_new = old.partition("~")[2], new.partition("~")[2]
    if masked_old.partition(":")[0] != masked_new.partition(":")[0]:
        return None
    return tuple(sorted(set(volatile_kinds(old)) | set(volatile_kinds(new))))


def _leaf(value: Any, *, clear: bool = False) -> Any:
    kind = type(value)
    if kind is str:
        return value if clear and len(value) <= _MAX_CLEAR else text_digest(value)
    if value is None or kind is bool:
        return value
    if kind is int or kind is float:
        return value if abs(value) < 10**15 else value_digest(value)
    return value_digest(value)


def _fields(obj: dict[str, Any], spec: dict[str, Any] | None = None) -> dict[str, Any]:
    """Each field of `obj` as a leaf: labels in clear, texts and values as digests (or by `spec`)."""
    out: dict[str, Any] = {}
    for name, value in obj.items():
        handler = spec.get(name) if spec else None
        if handler is not None:
            out[name] = handler(value)
        elif type(value) is str:  # the common case, inlined: a label kept in clear, or a text
            out[name] = value if name in _CLEAR and len(value) <= _MAX_CLEAR else text_digest(value)
        else:
            out[name] = _leaf(value)
    return out


def _dicts(value: Any, each: Any) -> Any:
    if not isinstance(value, list):
        return _leaf(value)
    return [each(v) if isinstance(v, dict) else _leaf(v) for v in value]


def _tool(tool: dict[str, Any]) -> dict[str, Any]:
    return _fields(tool)


def _model(model: Any) -> Any:
    if not isinstance(model, dict):
        return _leaf(model)
    return _fields(
        model,
        {
            "class": lambda v: [_leaf(c, clear=True) for c in v] if isinstance(v, list) else _leaf(v),
            "system": lambda v: _leaf(v, clear=True),
            "profile": lambda v: _leaf(v, clear=True) if isinstance(v, str) and len(v) == 32 else _leaf(v),
        },
    )


def _settings(settings: Any) -> Any:
    if not isinstance(settings, dict):
        return _leaf(settings)
    # Names in clear (they are ModelSettings fields); numbers and booleans in clear; anything else a digest.
    return {str(name): _leaf(value) for name, value in settings.items()}


def _parameters(parameters: Any) -> Any:
    if not isinstance(parameters, dict):
        return _leaf(parameters)
    return _fields(
        parameters,
        {
            "function_tools": lambda v: _dicts(v, _tool),
            "output_tools": lambda v: _dicts(v, _tool),
            "native_tools": lambda v: [_leaf(t) for t in v] if isinstance(v, list) else _leaf(v),
            "instructions": lambda v: [_leaf(t) for t in v] if isinstance(v, list) else _leaf(v),
        },
    )


def _parts(parts: Any) -> Any:
    return _dicts(parts, _fields)


_MESSAGE_SPEC: Final = {"parts": _parts}


def _message(message: Any) -> Any:
    if not isinstance(message, dict):
        return _leaf(message)
    return _fields(message, _MESSAGE_SPEC)


def _header(header: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(header, dict):
        for name, value in header.items():
            if name == "model":
                out["model"] = _model(value)
            elif name == "settings":
                out["settings"] = _settings(value)
            elif name == "parameters":
                out["parameters"] = _parameters(value)
            else:
                out[name] = _leaf(value)
    elif header is not None:
        out["value"] = _leaf(header)
    return out


class Memo:
    """The previous request fingerprinted, to reuse what the next one repeats (see `fingerprint_json`).

    Misses of one agent repeat its header (model, settings, tools, instructions), and the turns of a conversation
    repeat its earlier messages: parts equal (`==`) to the previous request's reuse their fingerprint and its JSON.
    Python's equality holds `1 == 1.0 == True`: a header differing only so would reuse the other's fingerprint, and
    an explanation would then find no difference. A key is never affected; only the explanation of that rare miss.
    """

    __slots__ = ("header", "header_json", "message_fps", "message_jsons", "messages")

    def __init__(self) -> None:
        self.header: Any = None
        self.header_json: str | None = None
        self.messages: list[Any] = []
        self.message_fps: list[Any] = []
        self.message_jsons: list[str] = []


def _dump(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


def _collapsed(fps: list[Any]) -> dict[str, Any]:
    middle = fps[_HEAD_MESSAGES:-_TAIL_MESSAGES]
    return {"kind": "collapsed", "count": len(middle), "digest": value_digest(middle)}


def fingerprint(request: dict[str, Any]) -> dict[str, Any]:
    """The fingerprint of a canonical request given as JSON (`CanonicalRequest.to_json_obj()`, or an entry's
    `request`). Anything of an unexpected shape becomes a digest; this never raises for JSON data."""
    header, messages = _header(request.get("header")), request.get("messages", [])
    if not isinstance(messages, list):
        return {"header": header, "messages": _leaf(messages)}
    fps = [_message(m) for m in messages]
    if len(fps) > _HEAD_MESSAGES + _TAIL_MESSAGES:
        fps = [*fps[:_HEAD_MESSAGES], _collapsed(fps), *fps[-_TAIL_MESSAGES:]]
    return {"header": header, "messages": fps}


def fingerprint_json(request: dict[str, Any], memo: Memo) -> str:
    """`fingerprint(request)` as compact JSON, reusing what `memo` holds of the previous request (and updating it)."""
    header, messages = request.get("header"), request.get("messages", [])
    if memo.header_json is None or header != memo.header:
        memo.header, memo.header_json = header, _dump(_header(header))
    head = '{"header":' + memo.header_json + ',"messages":'
    if not isinstance(messages, list):
        return head + _dump(_leaf(messages)) + "}"
    fps: list[Any] = []
    jsons: list[str] = []
    earlier = memo.messages
    for i, message in enumerate(messages):
        if i < len(earlier) and message == earlier[i]:
            fps.append(memo.message_fps[i])
            jsons.append(memo.message_jsons[i])
        else:
            fp = _message(message)
            fps.append(fp)
            jsons.append(_dump(fp))
    memo.messages, memo.message_fps, memo.message_jsons = messages, fps, jsons
    if len(fps) > _HEAD_MESSAGES + _TAIL_MESSAGES:
        jsons = [*jsons[:_HEAD_MESSAGES], _dump(_collapsed(fps)), *jsons[-_TAIL_MESSAGES:]]
    return head + "[" + ",".join(jsons) + "]}"
