"""Versioned JSON envelopes around pydantic TypeAdapters. Never pickle.

An entry is one JSON object:

```json
{"format": "pyai_caching", "version": 1, "kind": "response" | "run", "meta": {...}, "request": {...}, "response": {...}}
```

`kind="response"` holds one `ModelResponse` (request-level caching), and for a response that was streamed, the
events the model streamed it in (`stream`, version 2; see `pyai_caching.engine.stream_replay`); `kind="run"` holds the
messages of a whole run (run-level caching), never its validated output (run entries are version 2). With a
signing secret the JSON is preceded by an HMAC-SHA256 line over the entry's key and its JSON, and an entry whose
signature does not match is rejected (so a signed entry copied under another key is rejected too). Anything that
fails to decode (corrupt, truncated, foreign, future version, bad signature) raises `EntryDecodeError`; the engine
treats that as a miss and overwrites it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter, ValidationError
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.usage import RunUsage
from pydantic_core import PydanticSerializationError

__all__ = [
    "ENTRY_FORMAT_VERSION",
    "ENTRY_READ_VERSIONS",
    "ENTRY_VERSIONS",
    "RUN_ENTRY_VERSION",
    "EntryDecodeError",
    "EntryEncodeError",
    "EntryMeta",
    "ResponseEntry",
    "RunEntry",
    "decode_response_entry",
    "decode_run_entry",
    "encode_entry",
]

ENTRY_FORMAT_VERSION = 2
"""Newest version of response entries: 2 carries the events of a streamed response (`stream`), 1 has none and is
written when there are none, so earlier releases read it. An entry of another version is a miss (and is
overwritten)."""

RUN_ENTRY_VERSION = 2
"""Version of run entries (version 1 held the validated output; such entries are misses)."""

ENTRY_VERSIONS = {"response": ENTRY_FORMAT_VERSION, "run": RUN_ENTRY_VERSION}
"""The newest version this library writes, per entry kind."""

ENTRY_READ_VERSIONS: dict[str, tuple[int, ...]] = {"response": (1, 2), "run": (RUN_ENTRY_VERSION,)}
"""The versions this library reads, per entry kind."""

_SIG_PREFIX = b"pyai_caching-hmac-sha256:"
_SIG_LEN = 64


class EntryEncodeError(ValueError):
    """An entry cannot be written as UTF-8 JSON (a lone surrogate in a prompt or an answer): it is not cached."""


class EntryDecodeError(ValueError):
    """A stored value is not a valid entry of this library (corrupt, foreign, future version or bad signature)."""


@dataclass(kw_only=True)
class EntryMeta:
    """What is known about how an entry was made."""

    created_at: float = field(default_factory=time.time)
    """Unix time when the entry was written."""
    namespace: str
    """The namespace the entry belongs to."""
    model: str
    """`<system>:<model name>` of the model that produced the response."""
    task: str | None = None
    """The task name of the call that wrote the entry, if any."""
    cost: Decimal | None = None
    """What producing the entry cost in USD, or `None` when unknown (unknown stays distinct from zero)."""
    requests: int = 1
    """How many model requests producing the entry took."""


@dataclass(kw_only=True)
class ResponseEntry:
    """One cached model response, with the canonical request that produced it."""

    format: Literal["pyai_caching"] = "pyai_caching"
    """Marks the value as ours."""
    version: Literal[1, 2] = 1
    """Envelope version: 2 when the entry carries `stream`, else 1 (set on construction)."""
    kind: Literal["response"] = "response"
    """Entry kind."""
    meta: EntryMeta
    """How the entry was made."""
    request: dict[str, Any] | None = None
    """The canonical request (`header` + `messages`), kept so a person can read what was asked."""
    response: ModelResponse
    """The model's response, with its original usage."""
    stream: Annotated[dict[str, Any] | None, Field(exclude_if=lambda v: v is None)] = None
    """The events the model streamed the response in, with their timing, or `None` (not streamed, or recorded
    before events were). Validated when a streamed hit replays them (`pyai_caching.engine.stream_replay`)."""

    def __post_init__(self) -> None:
        if self.stream is not None:
            self.version = 2


@dataclass(kw_only=True)
class RunEntry:
    """A whole cached agent run (run-level caching): the messages the model sent back, never the validated output.

    On a hit the caller's output type validates the final response again (see `pyai_caching.engine.fastpath`), so
    output code (validators, serializers, secrets, excluded fields) runs exactly as on a miss.
    """

    format: Literal["pyai_caching"] = "pyai_caching"
    """Marks the value as ours."""
    version: Literal[2] = 2
    """Envelope version of run entries (version 1 held the validated output, and is a miss)."""
    kind: Literal["run"] = "run"
    """Entry kind."""
    meta: EntryMeta
    """How the entry was made."""
    usage: RunUsage = field(default_factory=RunUsage)
    """What the original run consumed (what a hit saves)."""
    final: dict[str, Any]
    """What the output is made from: the final response's text (as pydantic-ai gathers it), its tool calls and
    the kinds of its parts (see `pyai_caching.engine.pai_compat.final_projection`)."""
    output_tool_name: str | None = None
    """The output tool the model called, if the output came through a tool."""
    new_messages: list[ModelMessage]
    """The messages the run added after the history it was given, as the model sent them."""


@dataclass(kw_only=True)
class _RunEntryHead:
    """A run entry read without its messages (the hit path of a call that returns only the output)."""

    format: Literal["pyai_caching"]
    version: Literal[2]
    kind: Literal["run"]
    meta: EntryMeta
    usage: RunUsage = field(default_factory=RunUsage)
    final: dict[str, Any]
    output_tool_name: str | None = None


_RESPONSE_ADAPTER: TypeAdapter[ResponseEntry] = TypeAdapter(ResponseEntry)


@lru_cache(maxsize=1)
def _run_adapter() -> TypeAdapter[RunEntry]:
    return TypeAdapter(RunEntry)


@lru_cache(maxsize=1)
def _run_head_adapter() -> TypeAdapter[_RunEntryHead]:
    return TypeAdapter(_RunEntryHead)


def _sign(payload: bytes, secret: bytes, key: str | None) -> bytes:
    mac = hmac.new(secret, digestmod=hashlib.sha256)
    if key is not None:
        # The key is signed too: a signed entry copied under another key (another request) does not verify.
        mac.update(key.encode())
        mac.update(b"\x00")
    mac.update(payload)
    return mac.hexdigest().encode()


def _wrap(payload: bytes, secret: bytes | None, key: str | None) -> bytes:
    if secret is None:
        return payload
    return _SIG_PREFIX + _sign(payload, secret, key) + b"\n" + payload


def _unwrap(raw: bytes, secret: bytes | None, key: str | None) -> bytes:
    if raw.startswith(_SIG_PREFIX):
        start = len(_SIG_PREFIX)
        sig, sep, payload = (
            raw[start : start + _SIG_LEN],
            raw[start + _SIG_LEN : start + _SIG_LEN + 1],
            raw[start + _SIG_LEN + 1 :],
        )
        if sep != b"\n":
            raise EntryDecodeError("malformed signature line")
        if secret is not None and not hmac.compare_digest(sig, _sign(payload, secret, key)):
            raise EntryDecodeError(
                "signature does not match (written without the secret, tampered with, or copied from another key)"
            )
        return payload
    if secret is not None:
        raise EntryDecodeError("entry is not signed but a signing secret is configured")
    return raw


def encode_entry(entry: ResponseEntry | RunEntry, *, secret: bytes | None = None, key: str | None = None) -> bytes:
    """Serialize an entry to bytes (signed when `secret` is given; the signature also covers `key` when given)."""
    adapter: TypeAdapter[Any] = _RESPONSE_ADAPTER if isinstance(entry, ResponseEntry) else _run_adapter()
    try:
        payload = adapter.dump_json(entry)
    except PydanticSerializationError as e:
        raise EntryEncodeError(f"the entry cannot be written as UTF-8 JSON ({str(e)[:120]})") from None
    return _wrap(payload, secret, key)


def _validate(adapter: TypeAdapter[Any], raw: bytes, secret: bytes | None, key: str | None) -> Any:
    payload = _unwrap(raw, secret, key)
    try:
        return adapter.validate_json(payload)
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[:1]
        where = ".".join(str(p) for p in first[0]["loc"]) if first else "?"
        raise EntryDecodeError(f"not a valid entry ({e.error_count()} errors, first at {where!r})") from None


def decode_response_entry(raw: bytes, *, secret: bytes | None = None, key: str | None = None) -> ResponseEntry:
    """Decode a request-level entry; raise `EntryDecodeError` for anything that is not a valid one.

    With a `secret`, the signature must match the payload and `key` (the key the entry was read from).
    """
    entry: ResponseEntry = _validate(_RESPONSE_ADAPTER, raw, secret, key)
    return entry


def decode_run_entry(
    raw: bytes, *, secret: bytes | None = None, messages: bool = True, key: str | None = None
) -> RunEntry:
    """Decode a run-level entry; raise `EntryDecodeError` for anything else.

    With `messages=False` the stored messages are skipped (not validated) and `new_messages` is empty: for a
    caller that only returns the output, validating pydantic-ai messages is most of the cost of a hit. The
    envelope, the metadata, the usage and the final response's projection are checked as always.
    """
    if messages:
        entry: RunEntry = _validate(_run_adapter(), raw, secret, key)
        return entry
    head: _RunEntryHead = _validate(_run_head_adapter(), raw, secret, key)
    return RunEntry(
        meta=head.meta, usage=head.usage, final=head.final, output_tool_name=head.output_tool_name, new_messages=[]
    )
