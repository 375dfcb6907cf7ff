"""Read what a store holds without knowing the agents that wrote it (for `stats`, `inspect` and `clear`).

Entries are read as plain JSON envelopes (see `pyai_caching.engine.entries`): the CLI has no output types to decode
run entries into, and does not need them to count, filter, show or delete entries. Signatures are not checked here
(the CLI holds no secret); a signed entry is shown as signed.
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

from pyai_caching.engine.entries import _SIG_LEN, _SIG_PREFIX, ENTRY_READ_VERSIONS
from pyai_caching.engine.keys import KEY_PREFIX, KeyKind
from pyai_caching.stores import Store

__all__ = [
    "MAX_DEPTH",
    "EntryInfo",
    "KeyParts",
    "ScanCounts",
    "Selection",
    "StoredValueError",
    "delete_keys",
    "entry_keys",
    "parse_entry",
    "parse_key",
    "read_entries",
    "read_value",
]

ENTRY_KINDS: Final = {KeyKind.REQUEST.value: "response", KeyKind.RUN.value: "run"}
"""Key kind segment -> envelope kind, for the keys that hold entries."""

_KEY_RE: Final = re.compile(
    r"^" + re.escape(KEY_PREFIX) + r"(?P<namespace>[^:]+):(?P<kind>[^:]+):\{(?P<digest>[0-9a-f]{64})\}$"
)
_MISS_LOG_RE: Final = re.compile(
    r"^" + re.escape(KEY_PREFIX) + r"[^:]+:" + KeyKind.MISSES + r":\{(?:[0-9a-f]{2}|head)\}$"
)
_BATCH: Final = 64


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


_MAX_COST: Final = Decimal(10) ** 9
"""A cost above this (USD, for one entry) is not a cost but planted data: it is shown as unknown."""
_MAX_TIME: Final = 253402300799.0
"""The last second of year 9999: a `created_at` outside 0 to this is shown as unknown."""
MAX_DEPTH: Final = 200
"""An envelope nested deeper than this is not one this library wrote: it is counted as unreadable, not shown."""


def _cost(value: Any) -> Decimal | None:
    """A finite cost from 0 to `_MAX_COST`, or `None` (unknown) for anything else."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        cost = Decimal(str(value)) if not isinstance(value, int) else Decimal(value)
    except (InvalidOperation, ValueError):
        return None
    return cost if cost.is_finite() and 0 <= cost <= _MAX_COST else None


def _time(value: Any) -> float | None:
    """A Unix time from 1970 to year 9999, or `None` (unknown) for anything else."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if 0 <= seconds <= _MAX_TIME else None  # NaN fails both comparisons


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _depth_exceeds(document: Any, limit: int) -> bool:
    """Whether `document` nests lists and objects deeper than `limit` (iterative: no recursion on planted data)."""
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))
    return False


def _shown(value: Any) -> str:
    """A short, safe rendering of a planted value for an error message."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**30 else "a huge number"
    return text if len(text) <= 40 else text[:39] + "…"


def _envelope(payload: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """The decoded envelope, or why the payload is not one."""
    try:
        doc = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        return None, "not JSON (corrupt, truncated or written by another application)"
    except RecursionError:
        return None, "JSON nested too deeply to read (not written by this library)"
    if not isinstance(doc, dict) or doc.get("format") != "pyai_caching":
        return None, "not an entry of this library"
    if doc.get("kind") not in ("response", "run") or not isinstance(doc.get("meta"), dict):
        return None, "malformed envelope (no kind or meta)"
    version, expected = doc.get("version"), ENTRY_READ_VERSIONS[doc["kind"]]
    if isinstance(version, bool) or version not in expected:
        readable = " or ".join(str(v) for v in expected)
        return None, f"envelope version {_shown(version)} (this library reads {readable} for {doc['kind']} entries)"
    return doc, None


def parse_entry(key: str, parts: KeyParts, raw: bytes | StoredValueError, *, keep_document: bool = False) -> EntryInfo:
    """Read an entry's envelope; a value that is not one is returned with `error` set, never raised.

    Meta fields of the wrong type or out of range (a `created_at` in year 10^300, a cost of `1e999999999`) are
    shown as unknown: the entry itself can still be served, and the rest of it is still shown.
    """
    if isinstance(raw, StoredValueError):
        return EntryInfo(key=key, parts=parts, size=raw.size, signed=False, error=raw.reason)
    signed = raw.startswith(_SIG_PREFIX)
    info = EntryInfo(key=key, parts=parts, size=len(raw), signed=signed)
    doc, info.error = _envelope(raw[len(_SIG_PREFIX) + _SIG_LEN + 1 :] if signed else raw)
    if doc is None:
        return info
    if _depth_exceeds(doc, MAX_DEPTH):
        info.error = f"nested deeper than {MAX_DEPTH} levels (not written by this library)"
        return info
    meta = doc["meta"]
    info.kind = doc["kind"]
    info.created_at = _time(meta.get("created_at"))
    info.namespace = _text(meta.get("namespace"))
    info.model = _text(meta.get("model"))
    info.task = _text(meta.get("task"))
    info.cost = _cost(meta.get("cost"))
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
    """Keys under the prefix that are not entries (locks, ledgers, ...), the miss log aside."""
    miss_log_keys: int = 0
    """Keys of the miss log of `pyai-caching explain` (`pyai_caching:<namespace>:miss:{..}`: pages and a head)."""


@dataclass(frozen=True, slots=True)
class StoredValueError:
    """A key whose value the store could not return as bytes (it holds another type)."""

    reason: str
    """What is wrong, for the user."""
    size: int = 0
    """Bytes, when known."""


_UNREADABLE_VALUE_ERRORS: Final = (TypeError, ValueError, OverflowError, MemoryError)
"""What a store raises for a value of another type than bytes (a planted SQLite TEXT or INTEGER value)."""


def _checked(value: object) -> bytes | StoredValueError | None:
    """A store's answer for one key: bytes, `None`, or a `StoredValueError` for a value of another type."""
    if isinstance(value, ResponseError) and "WRONGTYPE" in str(value):
        return StoredValueError("the key holds a Redis type other than a string")
    if isinstance(value, _UNREADABLE_VALUE_ERRORS):
        return StoredValueError(f"the store cannot return the value as bytes ({type(value).__name__})")
    if isinstance(value, BaseException):
        raise value  # the store is down, refuses us, ...: the command fails
    if value is None or isinstance(value, bytes):
        return value
    return StoredValueError(f"the store returned a {type(value).__name__}, not bytes")


async def read_value(store: Store, key: str) -> bytes | StoredValueError | None:
    """The value of `key`, a `StoredValueError` when it is not bytes, or `None` when there is none."""
    value: object
    try:
        value = await store.get(key)
    except Exception as e:
        value = e
    return _checked(value)


async def _get_many(store: Store, keys: Sequence[str]) -> list[bytes | StoredValueError | None]:
    values: list[object] = await asyncio.gather(*(store.get(k) for k in keys), return_exceptions=True)
    return [_checked(value) for value in values]


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
            if _MISS_LOG_RE.match(key):
                counts.miss_log_keys += 1
            else:
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
