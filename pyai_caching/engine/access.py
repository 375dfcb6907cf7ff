"""Reading and writing entries through a store, failing open.

The cache must never make a call less reliable than calling the model directly: a store that is down, slow,
full or read-only is logged (once per outage, not once per call), counted, and the call goes on without it,
unless the caller asked for `on_cache_error="raise"` (then the `CacheError` is the one report: nothing is logged
as a warning).

A store is treated as down (every operation on it skipped at once, and counted as failed, for a second; then one
operation probes it, and the first success closes the outage) only after 2 failures in a row that say it cannot
be reached (refused or reset connections, timeouts) with no success in between. One timeout does not do it: the
other keys keep being served while one big entry crawls over a slow link. Nor does a timeout that fired while this
process's event loop was stalled for most of the wait (see `stores._lag`): a busy process says nothing about the
server. Errors of a single command (a full `maxmemory`, a read-only replica) never make the store down: reads keep
working while writes fail. A key that holds a value of another type (`WRONGTYPE`) is a miss, like a corrupt
entry, and gets overwritten.

Entries larger than `max_entry_bytes` (8 MiB by default, or the store's own limit) are not written, and are never
downloaded by the stores that check the size on their side (`RedisStore`, `LocalStore`): a miss. One warning per
store for writes and one for reads; the others are logged at DEBUG level and counted.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar, cast

from pydantic_ai.messages import ModelResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyai_caching._util.redact import redact_url_in_text
from pyai_caching._util.text import shorten
from pyai_caching.engine import ports
from pyai_caching.engine.context import CallRecord
from pyai_caching.engine.entries import (
    EntryDecodeError,
    EntryEncodeError,
    ResponseEntry,
    RunEntry,
    decode_response_entry,
    decode_run_entry,
    encode_entry,
)
from pyai_caching.engine.single_flight import SingleFlight
from pyai_caching.exceptions import CacheError
from pyai_caching.stores import Store
from pyai_caching.stores.base import (
    DEFAULT_MAX_ENTRY_BYTES,
    EntryTooLargeError,
    SlowTransferError,
    check_max_entry_bytes,
)
from pyai_caching.stores.lag import loop_lag, wait_responsive

__all__ = ["STORE_LIMIT", "OnCacheError", "Outcome", "StoreAccess", "reset_health"]

logger = logging.getLogger("pyai_caching")

OnCacheError = Literal["warn", "raise"]
"""What a failed cache operation does: `warn` (fail open, the default) or `raise` (`CacheError`)."""

T = TypeVar("T")

RETRY_AFTER = 1.0
"""Seconds during which operations on an unreachable (or timing out) store are skipped before it is probed again."""

DOWN_AFTER: Final = 2
"""Failures in a row (refused, reset, timed out; no success in between) after which a store is treated as down."""

STORE_LIMIT: Final = "store"
"""`StoreAccess.max_entry_bytes` default: the store's own `max_entry_bytes` (8 MiB for a store that has none)."""

_UNAVAILABLE = (OSError, RedisConnectionError, RedisTimeoutError)  # OSError covers TimeoutError and ConnectionError

_reads: SingleFlight[object] = SingleFlight()
"""Reads under way, by (store, key): the bytes their leader read (`None`: a miss), or `_OWN_READ`."""
_OWN_READ: Any = object()  # what a shared read hands its followers when it failed: read on your own

_health_lock = threading.Lock()
_failing: dict[str, set[str]] = {}
_failed_at: dict[str, float] = {}
_recovered_at: dict[str, float] = {}
_down_until: dict[str, float] = {}
_streak: dict[str, int] = {}
_last_error: dict[str, str] = {}
_warned: OrderedDict[tuple[str, str, str], None] = OrderedDict()
_WARNED_KEPT: Final = 1024


class Outcome(enum.Enum):
    """How one guarded store operation went."""

    OK = "ok"
    """It worked."""
    TRANSIENT = "transient"
    """The store could not be reached or timed out, but is not (yet) treated as down: trying again may work."""
    SKIPPED = "skipped"
    """Not attempted: the store is treated as down."""
    FAILED = "failed"
    """Any other failure (a refused command, a slow transfer of one big value): trying again at once will not help."""
    BAD_ENTRY = "bad entry"
    """The key holds something that is not a usable entry (another type, too large): a miss."""


class StoreSkipped(Exception):
    """Counted (in `pyai_caching.metrics`) for an operation skipped because the store was unreachable just before."""


def reset_health() -> None:
    """Forget everything learned about failing stores (for tests: a later server may reuse a port, hence a name)."""
    with _health_lock:
        for state in (_failing, _failed_at, _recovered_at, _down_until, _streak, _last_error, _warned):
            state.clear()


def _report_failure(
    store: Store, operation: str, error: BaseException, started: float, *, announce: bool, outage: bool
) -> None:
    """Note a failed operation. `outage`: it counts towards treating the store as down. `announce`: log the first
    failure of an outage as a warning (not when the caller raises `CacheError`: that is the report)."""
    name = store.description
    now = time.monotonic()
    with _health_lock:
        if started < _recovered_at.get(name, started):
            # It was under way before the store recovered: a late echo of the outage that ended, not a new one.
            logger.debug("cache %s failed on %s: %s", operation, name, type(error).__name__)
            return
        _last_error[name] = f"{type(error).__name__}: {_safe_message(error)}"
        if outage:
            streak = _streak[name] = _streak.get(name, 0) + 1
            if streak >= DOWN_AFTER:
                _down_until[name] = now + RETRY_AFTER
        first = False
        if announce:
            failing = _failing.setdefault(name, set())
            first = not failing
            failing.add(operation)
            _failed_at[name] = now
    if first:
        logger.warning(
            "cache %s failed on %s (%s: %s); calls go on without the cache until it recovers",
            operation,
            name,
            type(error).__name__,
            _safe_message(error),
        )
    else:
        logger.debug("cache %s failed on %s: %s", operation, name, type(error).__name__)


def _report_success(store: Store, operation: str, started: float) -> None:
    name = store.description
    if name not in _failing and name not in _down_until and name not in _streak:
        return
    with _health_lock:
        _streak.pop(name, None)  # the store answers: a failure now starts a new count
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
    logger.warning("cache on %s recovered; caching resumed", name)


def _announce_skipping(store: Store, operation: str) -> None:
    """Warn about an outage that only callers with `on_cache_error="raise"` have met so far (they got exceptions;
    this caller goes on without the cache, and is told once)."""
    name = store.description
    if name in _failing:
        return
    with _health_lock:
        if name in _failing:
            return
        _failing[name] = {operation}
        _failed_at[name] = time.monotonic()
        cause = _last_error.get(name, "it failed just before")
    logger.warning(
        "cache %s skipped on %s (%s); calls go on without the cache until it recovers",
        operation,
        name,
        cause,
    )


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


def _is_down(store: Store) -> bool:
    until = _down_until.get(store.description)
    return until is not None and time.monotonic() < until


def _first_time(store: Store, kind: str, key: str) -> bool:
    """Whether `kind` is reported for `key` of this store for the first time (remembered for the last 1,024)."""
    marker = (store.description, kind, key)
    with _health_lock:
        if marker in _warned:
            return False
        _warned[marker] = None
        while len(_warned) > _WARNED_KEPT:
            _warned.popitem(last=False)
    return True


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
    """Upper bound in seconds for one cache operation (`None`: the store's own timeouts apply). Counted in
    responsive event-loop time: a stall of this process does not use it up (see `stores._lag`)."""
    max_entry_bytes: int | Literal["store"] | None = STORE_LIMIT
    """The largest entry written or accepted, in bytes; `None`: no limit; `"store"` (default): the store's own
    `max_entry_bytes`, or 8 MiB for a store that has none. A bigger answer is not stored (one warning)."""
    _limit: int | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.max_entry_bytes == STORE_LIMIT:
            own = getattr(self.store, "max_entry_bytes", DEFAULT_MAX_ENTRY_BYTES)
            self._limit = own if own is None or (isinstance(own, int) and own > 0) else DEFAULT_MAX_ENTRY_BYTES
        else:
            self._limit = check_max_entry_bytes(self.max_entry_bytes)

    def store_down(self) -> bool:
        """Whether operations on the store are being skipped (it failed repeatedly a moment ago)."""
        return _is_down(self.store)

    async def guard(
        self, operation: str, awaitable: Awaitable[T], record: CallRecord | None, *, quiet: bool = False
    ) -> tuple[bool, T | None]:
        """Run one store operation under the timeout and error policy: `(worked, result)`.

        `quiet` operations (lock releases, clean-ups) never raise, whatever `on_cache_error` says.
        """
        outcome, result = await self.attempt(operation, awaitable, record, quiet=quiet)
        return outcome is Outcome.OK, result

    async def attempt(
        self, operation: str, awaitable: Awaitable[T], record: CallRecord | None, *, quiet: bool = False
    ) -> tuple[Outcome, T | None]:
        """`guard`, telling how a failure failed (see `Outcome`)."""
        raising = self.on_cache_error == "raise" and not quiet
        if not raising and _skip(self.store):
            if isinstance(awaitable, Coroutine):
                awaitable.close()
            ports.observer().cache_error(operation, StoreSkipped(), record)
            _announce_skipping(self.store, operation)
            return Outcome.SKIPPED, None
        started = time.monotonic()
        lag = loop_lag()
        loop_started = lag.start()  # measures the event loop's stalls while the operation runs
        try:
            result = await (awaitable if self.timeout is None else wait_responsive(awaitable, self.timeout))
        except asyncio.CancelledError:
            raise
        except Exception as error:
            return self._failed(operation, error, record, raising, started, lag.mostly_stalled(loop_started))
        finally:
            lag.stop()
        _report_success(self.store, operation, started)
        return Outcome.OK, result

    def _failed(
        self,
        operation: str,
        error: Exception,
        record: CallRecord | None,
        raising: bool,
        started: float,
        stalled: bool,
    ) -> tuple[Outcome, None]:
        if _wrong_type(error):
            logger.warning(
                "cache %s on %s found a key holding another type (%s); treated as a miss, it will be overwritten",
                operation,
                self.store.description,
                _safe_message(error),
            )
            return Outcome.BAD_ENTRY, None
        if isinstance(error, EntryTooLargeError):
            self._too_large(operation, error, record)
            return Outcome.BAD_ENTRY, None
        ports.observer().cache_error(operation, error, record)
        unreachable = isinstance(error, _UNAVAILABLE) and not isinstance(error, SlowTransferError)
        if isinstance(error, SlowTransferError):
            if not raising:
                level = logging.WARNING if _first_time(self.store, "slow", operation) else logging.DEBUG
                message = _safe_message(error)
                logger.log(level, "cache %s: %s; other keys are not affected", operation, message)
        else:
            # A timeout while this process was too busy to read the reply says nothing about the store.
            _report_failure(
                self.store, operation, error, started, announce=not raising, outage=unreachable and not stalled
            )
        if raising:
            raise CacheError(
                f"cache {operation} failed on {self.store.description}: {type(error).__name__}: {_safe_message(error)}",
                operation=operation,
                store=self.store.description,
            ) from None
        return (Outcome.TRANSIENT if unreachable else Outcome.FAILED), None

    def _too_large(self, operation: str, error: EntryTooLargeError, record: CallRecord | None) -> None:
        ports.observer().cache_error(operation, error, record)
        if operation == "set":
            text = "not storing %s: %s bytes, more than max_entry_bytes=%s (the answer is returned)"
        else:
            text = "ignoring %s: %s bytes, more than max_entry_bytes=%s (not downloaded: a miss)"
        # One warning per store and direction; the others at DEBUG (all are counted as `<operation>:EntryTooLarge`).
        first = _first_time(self.store, "too large", operation)
        if first:
            text += "; further ones are logged at DEBUG level"
        logger.log(logging.WARNING if first else logging.DEBUG, text, error.key, f"{error.size:,}", f"{error.limit:,}")

    async def read_raw(self, key: str, record: CallRecord | None = None) -> tuple[Outcome, bytes | None]:
        """One read of `key` (not shared with other readers): how it went, and the bytes (`None`: a miss)."""
        outcome, raw = await self.attempt("get", self.store.get(key), record)
        if raw is not None and self._limit is not None and len(raw) > self._limit:
            self._too_large("get", EntryTooLargeError(key, len(raw), self._limit), record)
            return Outcome.BAD_ENTRY, None
        return outcome, raw

    async def get_raw(self, key: str, record: CallRecord | None = None) -> bytes | None:
        """The stored bytes, or `None` on a miss or a (reported) store failure.

        Reads of one key that overlap in one event loop share a single store round trip, so a burst of identical
        calls costs the store one `GET` (and one connection), not one per call.
        """
        shared_key = (id(self.store), key)
        shared = _reads.under_way(shared_key)
        if shared is not None:
            found = await shared.wait()
            if found is not _OWN_READ:
                return cast("bytes | None", found)
            return (await self.read_raw(key, record))[1]
        flight = _reads.take_off(shared_key)
        result: object = _OWN_READ
        try:
            _, result = await self.read_raw(key, record)
        finally:
            _reads.land(shared_key, flight, result)
        return result

    async def put_raw(self, key: str, value: bytes, record: CallRecord | None = None) -> bool:
        """Store bytes; return whether it worked (a value over `max_entry_bytes` is not stored)."""
        if self._limit is not None and len(value) > self._limit:
            self._too_large("set", EntryTooLargeError(key, len(value), self._limit), record)
            return False
        ok, _ = await self.guard("set", self.store.set(key, value, ttl=self.ttl), record)
        return ok

    async def delete(self, key: str, record: CallRecord | None = None) -> bool:
        """Delete one entry; never raises (a clean-up that fails is only reported)."""
        ok, existed = await self.guard("delete", self.store.delete(key), record, quiet=True)
        return ok and bool(existed)

    async def get_response(self, key: str, record: CallRecord | None = None) -> ResponseEntry | None:
        """The request-level entry under `key`, or `None` (a corrupt entry is logged and is a miss)."""
        raw = await self.get_raw(key, record)
        if raw is None:
            return None
        try:
            return decode_response_entry(raw, secret=self.secret, key=key)
        except EntryDecodeError as e:
            ports.observer().cache_error("decode", e, record)
            logger.warning("ignoring unreadable entry %s (%s); it will be overwritten", key, e)
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
            ports.observer().cache_error("decode", e, record)
            logger.warning("ignoring unreadable entry %s (%s); it will be overwritten", key, e)
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
