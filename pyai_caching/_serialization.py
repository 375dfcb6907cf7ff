"""Versioned JSON envelopes around pydantic TypeAdapters. Never pickle.

An entry is one JSON object:

```json
{"format": "pyai_caching", "version": 1, "kind": "response" | "run", "meta": {...}, "request": {...}, "response": {...}}
```

`kind="response"` holds one `ModelResponse` (request-level caching); `kind="run"` holds a whole
`AgentRunResult` (run-level caching). With a signing secret the JSON is preceded by an HMAC-SHA256 line, and an
entry whose signature does not match is rejected. Anything that fails to decode (corrupt, truncated, foreign,
future version, bad signature) raises `EntryDecodeError`; the engine treats that as a miss and overwrites it.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from typing import Any, Generic, Literal, TypeVar

from pydantic import TypeAdapter, ValidationError
from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.usage import RunUsage

__all__ = [
    "ENTRY_FORMAT_VERSION",
    "EntryDecodeError",
    "EntryMeta",
    "ResponseEntry",
    "RunEntry",
    "decode_response_entry",
    "decode_run_entry",
    "encode_entry",
]

ENTRY_FORMAT_VERSION = 1
"""Version of the envelope; an entry of another version is a miss (and is overwritten)."""

_SIG_PREFIX = b"pyai_caching-hmac-sha256:"
_SIG_LEN = 64

T = TypeVar("T")


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
    version: Literal[1] = 1
    """Envelope version."""
    kind: Literal["response"] = "response"
    """Entry kind."""
    meta: EntryMeta
    """How the entry was made."""
    request: dict[str, Any] | None = None
    """The canonical request (`header` + `messages`), kept so a person can read what was asked."""
    response: ModelResponse
    """The model's response, with its original usage."""


@dataclass(kw_only=True)
class RunEntry(Generic[T]):
    """A whole cached agent run (run-level caching): its output and the messages it added."""

    format: Literal["pyai_caching"] = "pyai_caching"
    """Marks the value as ours."""
    version: Literal[1] = 1
    """Envelope version."""
    kind: Literal["run"] = "run"
    """Entry kind."""
    meta: EntryMeta
    """How the entry was made."""
    usage: RunUsage = field(default_factory=RunUsage)
    """What the original run consumed (what a hit saves)."""
    output: T
    """The run's output, of the agent's output type."""
    output_tool_name: str | None = None
    """The output tool the model called, if the output came through a tool."""
    new_messages: list[ModelMessage]
    """The messages the run added after the history it was given."""


_RESPONSE_ADAPTER: TypeAdapter[ResponseEntry] = TypeAdapter(ResponseEntry)


@lru_cache(maxsize=256)
def run_entry_adapter(output_type: Any) -> TypeAdapter[RunEntry[Any]]:
    """The TypeAdapter for run entries of one output type, built once per output type."""
    return TypeAdapter(RunEntry[output_type])


def _sign(payload: bytes, secret: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).hexdigest().encode()


def _wrap(payload: bytes, secret: bytes | None) -> bytes:
    if secret is None:
        return payload
    return _SIG_PREFIX + _sign(payload, secret) + b"\n" + payload


def _unwrap(raw: bytes, secret: bytes | None) -> bytes:
    if raw.startswith(_SIG_PREFIX):
        start = len(_SIG_PREFIX)
        sig, sep, payload = (
            raw[start : start + _SIG_LEN],
            raw[start + _SIG_LEN : start + _SIG_LEN + 1],
            raw[start + _SIG_LEN + 1 :],
        )
        if sep != b"\n":
            raise EntryDecodeError("malformed signature line")
        if secret is not None and not hmac.compare_digest(sig, _sign(payload, secret)):
            raise EntryDecodeError("signature does not match (entry written without the secret, or tampered with)")
        return payload
    if secret is not None:
        raise EntryDecodeError("entry is not signed but a signing secret is configured")
    return raw


def encode_entry(
    entry: ResponseEntry | RunEntry[Any], *, secret: bytes | None = None, output_type: Any = None
) -> bytes:
    """Serialize an entry to bytes (signed when `secret` is given)."""
    if isinstance(entry, ResponseEntry):
        payload = _RESPONSE_ADAPTER.dump_json(entry)
    else:
        payload = run_entry_adapter(output_type).dump_json(entry)
    return _wrap(payload, secret)


def _validate(adapter: TypeAdapter[Any], raw: bytes, secret: bytes | None) -> Any:
    payload = _unwrap(raw, secret)
    try:
        return adapter.validate_json(payload)
    except ValidationError as e:
        first = e.errors(include_url=False, include_input=False)[:1]
        where = ".".join(str(p) for p in first[0]["loc"]) if first else "?"
        raise EntryDecodeError(f"not a valid entry ({e.error_count()} errors, first at {where!r})") from None


def decode_response_entry(raw: bytes, *, secret: bytes | None = None) -> ResponseEntry:
    """Decode a request-level entry; raise `EntryDecodeError` for anything that is not a valid one."""
    entry: ResponseEntry = _validate(_RESPONSE_ADAPTER, raw, secret)
    return entry


def decode_run_entry(raw: bytes, output_type: Any, *, secret: bytes | None = None) -> RunEntry[Any]:
    """Decode a run-level entry into `output_type`; raise `EntryDecodeError` for anything else."""
    entry: RunEntry[Any] = _validate(run_entry_adapter(output_type), raw, secret)
    return entry
