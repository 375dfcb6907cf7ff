"""Read what a store holds without knowing the agents that wrote it (for the CLI).

Entries are read as plain JSON envelopes (see `_serialization`): the CLI has no output types to decode run entries
into, and does not need them to count, filter, show or delete entries. Signatures are not checked here (the CLI
holds no secret); a signed entry is shown as signed.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any, Final

from redis.exceptions import ResponseError

from ._serialization import _SIG_LEN, _SIG_PREFIX, ENTRY_FORMAT_VERSION, ENTRY_VERSIONS
from .keys import KEY_PREFIX
from .stores import Store

__all__ = [
    "EntryInfo",
    "KeyParts",
    "ScanCounts",
    "Selection",
    "delete_keys",
    "entry_keys",
    "parse_entry",
    "parse_key",
    "read_entries",
]

ENTRY_KINDS: Final = {"r": "response", "run": "run"}
"""Key kind segment -> envelope kind, for the keys that hold entries."""

_KEY_RE: Final = re.compile(
    r"^" + re.escape(KEY_PREFIX) + r"(?P<namespace>[^:]+):(?P<kind>[^:]+):\{(?P<digest>[0-9a-f]{64})\}$"
)
_BATCH: Final = 64
_WRONG_TYPE: Final = b"\x00wrong-type"


@dataclass(frozen=True, slots=True)
class KeyParts:
    """The parts of an entry key `pyai_caching:<namespace>:<kind>:{<digest>}`."""

    namespace: str
    """The namespace segment."""
    kind: str
    """`r` (one model response) or `run` (a whole run)."""
    digest: str
    """The SHA-256 hex digest of the request."""


def parse_key(key: str) -> KeyParts | None:
    """The parts of an entry key, or `None` for any other key under the prefix (locks, ledgers, ...)."""
    match = _KEY_RE.match(key)
    if match is None or match["kind"] not in ENTRY_KINDS:
        return None
    return KeyParts(namespace=match["namespace"], kind=match["kind"], digest=match["digest"])


@dataclass(kw_only=True, slots=True)
class EntryInfo:
    """One entry as the CLI sees it: where it is, how big, and what its envelope says."""

    key: str
    """The store key."""
    parts: KeyParts
    """The key's parts."""
    size: int
    """Bytes stored (the value, signature line included)."""
    signed: bool
    """The value carries an HMAC signature line."""
    error: str | None = None
    """Why the value cannot be read as an entry of this library (`None` when it can)."""
    kind: str | None = None
    """`response` or `run` (from the envelope)."""
    created_at: float | None = None
    """Unix time the entry was written."""
    namespace: str | None = None
    """The namespace recorded in the entry."""
    model: str | None = None
    """`<system>:<model name>` that produced the entry."""
    task: str | None = None
    """The task name recorded with the entry."""
    cost: Decimal | None = None
    """What producing the entry cost in USD (`None`: unknown)."""
    requests: int = 1
    """Model requests it took to produce the entry."""
    document: dict[str, Any] | None = field(default=None, repr=False)
    """The whole envelope (only kept when asked for)."""

    @property
    def readable(self) -> bool:
        """Whether the value is a valid entry envelope."""
        return self.error is None


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def parse_entry(key: str, parts: KeyParts, raw: bytes, *, keep_document: bool = False) -> EntryInfo:
    """Read an entry's envelope; a value that is not one is returned with `error` set, never raised."""
    signed = raw.startswith(_SIG_PREFIX)
    info = EntryInfo(key=key, parts=parts, size=len(raw), signed=signed)
    if raw == _WRONG_TYPE:
        info.size = 0
        info.error = "the key holds a Redis type other than a string"
        return info
    payload = raw[len(_SIG_PREFIX) + _SIG_LEN + 1 :] if signed else raw
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        info.error = "not JSON (corrupt, truncated or written by another application)"
        return info
    if not isinstance(doc, dict) or doc.get("format") != "pyai_caching":
        info.error = "not an entry of this library"
        return info
    expected = ENTRY_VERSIONS.get(doc.get("kind"), ENTRY_FORMAT_VERSION)  # type: ignore[arg-type]
    if doc.get("version") != expected:
        info.error = f"envelope version {doc.get('version')!r} (this library reads {expected})"
        return info
    meta = doc.get("meta")
    if doc.get("kind") not in ("response", "run") or not isinstance(meta, dict):
        info.error = "malformed envelope (no kind or meta)"
        return info
    created = meta.get("created_at")
    info.kind = doc["kind"]
    info.created_at = float(created) if isinstance(created, int | float) else None
    info.namespace = meta.get("namespace") if isinstance(meta.get("namespace"), str) else None
    info.model = meta.get("model") if isinstance(meta.get("model"), str) else None
    info.task = meta.get("task") if isinstance(meta.get("task"), str) else None
    info.cost = _decimal(meta.get("cost"))
    requests = meta.get("requests")
    info.requests = requests if isinstance(requests, int) and not isinstance(requests, bool) else 1
    if keep_document:
        info.document = doc
    return info


@dataclass(frozen=True, kw_only=True)
class Selection:
    """Which entries a command works on."""

    prefix: str = KEY_PREFIX
    """Only keys under this prefix (a namespace's prefix, or the whole library's)."""
    task: str | None = None
    """Only entries recorded with this task name."""
    older_than: float | None = None
    """Only entries written more than this many seconds ago."""
    digest_prefix: str | None = None
    """Only entries whose digest starts with this (lowercase hex)."""

    @property
    def needs_values(self) -> bool:
        """Whether choosing entries requires reading them (task or age filters)."""
        return self.task is not None or self.older_than is not None

    def matches_key(self, parts: KeyParts) -> bool:
        """The filters that the key alone decides."""
        return self.digest_prefix is None or parts.digest.startswith(self.digest_prefix)

    def matches(self, info: EntryInfo, now: float) -> bool:
        """The filters that need the entry's meta (an unreadable entry matches only when no such filter is set)."""
        if self.task is not None and info.task != self.task:
            return False
        if self.older_than is not None:
            return info.created_at is not None and info.created_at < now - self.older_than
        return True


@dataclass(kw_only=True)
class ScanCounts:
    """What a scan saw besides the entries it yielded."""

    keys: int = 0
    """Keys scanned under the prefix."""
    other_keys: int = 0
    """Keys under the prefix that are not entries (locks, ledgers, ...)."""


async def _get_many(store: Store, keys: Sequence[str]) -> list[bytes | None]:
    values: list[bytes | BaseException | None] = await asyncio.gather(
        *(store.get(k) for k in keys), return_exceptions=True
    )
    out: list[bytes | None] = []
    for value in values:
        if isinstance(value, ResponseError) and "WRONGTYPE" in str(value):
            out.append(_WRONG_TYPE)  # a key of ours holding a hash, list, ...: an unreadable entry
        elif isinstance(value, BaseException):
            raise value
        else:
            out.append(value)
    return out


async def read_entries(
    store: Store,
    selection: Selection,
    *,
    keep_documents: bool = False,
    counts: ScanCounts | None = None,
    progress: Callable[[int], None] | None = None,
) -> AsyncIterator[EntryInfo]:
    """Yield the entries under `selection.prefix` that match it, reading values 64 at a time.

    Keys that are not entries are counted in `counts.other_keys`; an entry that expires between the scan and the
    read is skipped. `progress` is called with the number of keys scanned so far.
    """
    counts = counts if counts is not None else ScanCounts()
    now = time.time()
    batch: list[tuple[str, KeyParts]] = []

    async def flush() -> AsyncIterator[EntryInfo]:
        values = await _get_many(store, [k for k, _ in batch])
        for (key, parts), raw in zip(batch, values, strict=True):
            if raw is None:
                continue
            info = parse_entry(key, parts, raw, keep_document=keep_documents)
            if selection.matches(info, now):
                yield info
        batch.clear()

    async for key in store.scan(selection.prefix):
        counts.keys += 1
        if progress is not None:
            progress(counts.keys)
        parts = parse_key(key)
        if parts is None:
            counts.other_keys += 1
            continue
        if not selection.matches_key(parts):
            continue
        batch.append((key, parts))
        if len(batch) >= _BATCH:
            async for info in flush():
                yield info
    if batch:
        async for info in flush():
            yield info


async def entry_keys(store: Store, prefix: str, progress: Callable[[int], None] | None = None) -> AsyncIterator[str]:
    """The keys under `prefix` that hold entries (locks, ledgers and other keys are left out); values are not read."""
    scanned = 0
    async for key in store.scan(prefix):
        scanned += 1
        if progress is not None:
            progress(scanned)
        if parse_key(key) is not None:
            yield key


async def delete_keys(store: Store, keys: Sequence[str], progress: Callable[[int], None] | None = None) -> int:
    """Delete `keys` (64 at a time); return how many existed."""
    deleted = 0
    for start in range(0, len(keys), _BATCH):
        chunk = keys[start : start + _BATCH]
        results = await asyncio.gather(*(store.delete(k) for k in chunk))
        deleted += sum(results)
        if progress is not None:
            progress(start + len(chunk))
    return deleted
