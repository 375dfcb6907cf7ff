"""Reading and writing entries through a store, failing open.

The cache must never make a call less reliable than calling the model directly: a store that is down, slow,
full or read-only is logged (once per outage, not once per call), counted, and the call goes on without it,
unless the caller asked for `on_cache_error="raise"`.

A store that cannot be reached or times out costs the call that finds out about it at most one timeout: for the
next second every operation on that store is skipped at once (and counted as failed), then one operation probes
it, and the first success closes the outage. Errors of a single command (a full `maxmemory`, a read-only replica)
do not skip the other operations: reads keep working while writes fail. A key that holds a value of another type
(`WRONGTYPE`) is a miss, like a corrupt entry, and gets overwritten.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import weakref
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass
from typing import Any, Literal, TypeVar, cast

from pydantic_ai.messages import ModelResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from . import _observe
from ._context import CallRecord
from ._redact import redact_url_in_text
from ._serialization import (
    EntryDecodeError,
    EntryEncodeError,
    ResponseEntry,
    RunEntry,
    decode_response_entry,
    decode_run_entry,
    encode_entry,
)
from ._text import shorten
from .exceptions import CacheError
from .stores import Store

__all__ = ["OnCacheError", "StoreAccess"]

logger = logging.getLogger("pyai_caching")

OnCacheError = Literal["warn", "raise"]
"""What a failed cache operation does: `warn` (fail open, the default) or `raise` (`CacheError`)."""

T = TypeVar("T")

RETRY_AFTER = 1.0
"""Seconds during which operations on an unreachable (or timing out) store are skipped before it is probed again."""

_UNAVAILABLE = (OSError, RedisConnectionError, RedisTimeoutError)  # OSError covers TimeoutError and ConnectionError

_reads: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[tuple[int, str], asyncio.Future[object]]] = (
    weakref.WeakKeyDictionary()
)
_OWN_READ: Any = object()  # what a shared read hands its followers when it failed: read on your own

_health_lock = threading.Lock()
_failing: dict[str, set[str]] = {}
_failed_at: dict[str, float] = {}
_recovered_at: dict[str, float] = {}
_down_until: dict[str, float] = {}


class StoreSkipped(Exception):
    """Counted (in `pyai_caching.metrics`) for an operation skipped because the store was unreachable just before."""


def _report_failure(store: Store, operation: str, error: BaseException, started: float) -> None:
    name = store.description
    now = time.monotonic()
    with _health_lock:
        if started < _recovered_at.get(name, started):
            # It was under way before the store recovered: a late echo of the outage that ended, not a new one.
            logger.debug("pyai_caching: cache %s failed on %s: %s", operation, name, type(error).__name__)
            return
        failing = _failing.setdefault(name, set())
        first = not failing
        failing.add(operation)
        _failed_at[name] = now
        if isinstance(error, _UNAVAILABLE):
            _down_until[name] = now + RETRY_AFTER
    if first:
        logger.warning(
            "pyai_caching: cache %s failed on %s (%s: %s); calls go on without the cache until it recovers",
            operation,
            name,
            type(error).__name__,
            _safe_message(error),
        )
    else:
        logger.debug("pyai_caching: cache %s failed on %s: %s", operation, name, type(error).__name__)


def _report_success(store: Store, operation: str, started: float) -> None:
    name = store.description
    if name not in _failing and name not in _down_until:
        return
    with _health_lock:
        if started < _failed_at.get(name, started):
            return  # it was already under way when the last failure happened: it proves nothing about now
        _down_until.pop(name, None)
        failing = _failing.get(name)
        if failing is None:
            return
        # One outage ends when every kind of operation that failed in it works again (a read that works on a
        # read-only replica does not end an outage of writes, so the warning is not repeated on every call).
        failing.discard(operation)
        if failing:
            return
        del _failing[name]
        _recovered_at[name] = time.monotonic()
    logger.warning("pyai_caching: cache on %s recovered; caching resumed", name)


def _skip(store: Store) -> bool:
    """Whether to skip an operation because the store was unreachable a moment ago (one probe gets through)."""
    name = store.description
    until = _down_until.get(name)
    if until is None:
        return False
    now = time.monotonic()
    with _health_lock:
        until = _down_until.get(name)
        if until is None:
            return False
        if now < until:
            return True
        _down_until[name] = now + RETRY_AFTER  # this operation probes; the others keep skipping meanwhile
    return False


def _wrong_type(error: BaseException) -> bool:
    """A key that holds a value of another type (a Redis hash where an entry belongs): a bad entry, not an outage."""
    return str(error).startswith("WRONGTYPE")


def _safe_message(error: BaseException) -> str:
    """The error's message with anything URL-like that could hold a password redacted, in at most 300 characters."""
    return shorten(redact_url_in_text(str(error)))


@dataclass
class StoreAccess:
    """A store seen through one call's configuration (namespace, TTL, secret, error policy)."""

    store: Store
    """Where entries live."""
    ttl: float | None
    """Seconds an entry lives; `None` = forever."""
    on_cache_error: OnCacheError = "warn"
    """`warn` fails open; `raise` turns store errors into `CacheError`."""
    secret: bytes | None = None
    """HMAC secret: entries are signed, and entries with a bad signature are misses."""
    timeout: float | None = None
    """Upper bound in seconds for one cache operation (`None`: the store's own timeouts apply)."""

    async def _guard(
        self, operation: str, awaitable: Awaitable[T], record: CallRecord | None, *, quiet: bool = False
    ) -> tuple[bool, T | None]:
        """Run one store operation under the timeout and error policy: `(worked, result)`.

        `quiet` operations (lock releases, clean-ups) never raise, whatever `on_cache_error` says.
        """
        raising = self.on_cache_error == "raise" and not quiet
        if not raising and _skip(self.store):
            if isinstance(awaitable, Coroutine):
                awaitable.close()
            if record is not None:
                record.cache_errors += 1
            _observe.cache_error(operation, StoreSkipped(), record)
            return False, None
        started = time.monotonic()
        try:
            if self.timeout is not None:
                result = await asyncio.wait_for(awaitable, self.timeout)
            else:
                result = await awaitable
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if _wrong_type(error):
                logger.warning(
                    "pyai_caching: cache %s on %s found a key holding another type (%s); treated as a miss, "
                    "it will be overwritten",
                    operation,
                    self.store.description,
                    _safe_message(error),
                )
                return False, None
            if record is not None:
                record.cache_errors += 1
            _observe.cache_error(operation, error, record)
            _report_failure(self.store, operation, error, started)
            if raising:
                raise CacheError(
                    f"cache {operation} failed on {self.store.description}: {type(error).__name__}: "
                    f"{_safe_message(error)}",
                    operation=operation,
                    store=self.store.description,
                ) from None
            return False, None
        _report_success(self.store, operation, started)
        return True, result

    async def get_raw(self, key: str, record: CallRecord | None = None) -> bytes | None:
        """The stored bytes, or `None` on a miss or a (reported) store failure.

        Reads of one key that overlap in one event loop share a single store round trip, so a burst of identical
        calls costs the store one `GET` (and one connection), not one per call.
        """
        loop = asyncio.get_running_loop()
        reads = _reads.get(loop)
        if reads is None:
            reads = _reads[loop] = {}
        shared_key = (id(self.store), key)
        shared = reads.get(shared_key)
        if shared is not None:
            found = await asyncio.shield(shared)  # shielded: a caller that gives up must not cancel the others
            if found is not _OWN_READ:
                return cast("bytes | None", found)
            _, raw = await self._guard("get", self.store.get(key), record)
            return raw
        future: asyncio.Future[object] = loop.create_future()
        reads[shared_key] = future
        result: object = _OWN_READ
        try:
            _, result = await self._guard("get", self.store.get(key), record)
        finally:
            del reads[shared_key]
            future.set_result(result)
        return cast("bytes | None", result)

    async def put_raw(self, key: str, value: bytes, record: CallRecord | None = None) -> bool:
        """Store bytes; return whether it worked."""
        ok, _ = await self._guard("set", self.store.set(key, value, ttl=self.ttl), record)
        return ok

    async def delete(self, key: str, record: CallRecord | None = None) -> bool:
        """Delete one entry; never raises (a clean-up that fails is only reported)."""
        ok, existed = await self._guard("delete", self.store.delete(key), record, quiet=True)
        return ok and bool(existed)

    async def get_response(self, key: str, record: CallRecord | None = None) -> ResponseEntry | None:
        """The request-level entry under `key`, or `None` (a corrupt entry is logged and is a miss)."""
        raw = await self.get_raw(key, record)
        if raw is None:
            return None
        try:
            return decode_response_entry(raw, secret=self.secret, key=key)
        except EntryDecodeError as e:
            _observe.cache_error("decode", e, record)
            logger.warning("pyai_caching: ignoring unreadable entry %s (%s); it will be overwritten", key, e)
            return None

    async def get_run(self, key: str, record: CallRecord | None = None, *, messages: bool = True) -> RunEntry | None:
        """The run-level entry under `key`, or `None`.

        `messages=False` skips decoding the stored messages (`new_messages` is then empty), for a hit that
        returns only the output.
        """
        raw = await self.get_raw(key, record)
        if raw is None:
            return None
        try:
            return decode_run_entry(raw, secret=self.secret, messages=messages, key=key)
        except EntryDecodeError as e:
            _observe.cache_error("decode", e, record)
            logger.warning("pyai_caching: ignoring unreadable entry %s (%s); it will be overwritten", key, e)
            return None

    async def put_entry(self, key: str, entry: ResponseEntry | RunEntry, record: CallRecord | None = None) -> bool:
        """Encode and store an entry (one that cannot be encoded is not stored: a warning, and `False`)."""
        try:
            value = encode_entry(entry, secret=self.secret, key=key)
        except EntryEncodeError as e:
            logger.warning("not caching %s: %s", key, e)
            return False
        return await self.put_raw(key, value, record)


def fresh_response(entry: ResponseEntry) -> ModelResponse:
    """The response to hand to pydantic-ai on a hit: a fresh object (decoded per hit) that bills nothing."""
    from pydantic_ai.usage import RequestUsage

    response = entry.response
    response.usage = RequestUsage()
    return response
