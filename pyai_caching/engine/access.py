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

What is known of a store's failures belongs to the store object (see `engine.health`): two `MemoryStore`s, or two
`RedisStore`s of one URL, have outages of their own.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar, cast

from pydantic_ai.messages import ModelResponse
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyai_caching.engine import health, ports
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
from pyai_caching.engine.health import reset_health
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

STORE_LIMIT: Final = "store"
"""`StoreAccess.max_entry_bytes` default: the store's own `max_entry_bytes` (8 MiB for a store that has none)."""

_UNAVAILABLE = (OSError, RedisConnectionError, RedisTimeoutError)  # OSError covers TimeoutError and ConnectionError

_reads: SingleFlight[object] = SingleFlight()
"""Reads under way, by (store, key): the bytes their leader read (`None`: a miss), or `_OWN_READ`."""
_OWN_READ: Any = object()  # what a shared read hands its followers when it failed: read on your own


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


def _wrong_type(error: BaseException) -> bool:
    """A key that holds a value of another type (a Redis hash where an entry belongs): a bad entry, not an outage."""
    return str(error).startswith("WRONGTYPE")


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

    def fits(self, size: int) -> bool:
        """Whether an entry of `size` bytes is within `max_entry_bytes` (it would be stored)."""
        return self._limit is None or size <= self._limit

    def store_down(self) -> bool:
        """Whether operations on the store are being skipped (it failed repeatedly a moment ago)."""
        return health.is_down(self.store)

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
        if not raising and health.should_skip(self.store):
            if isinstance(awaitable, Coroutine):
                awaitable.close()
            ports.observer().cache_error(operation, StoreSkipped(), record)
            health.announce_skipping(self.store, operation)
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
        health.report_success(self.store, operation, started)
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
                health.safe_message(error),
            )
            return Outcome.BAD_ENTRY, None
        if isinstance(error, EntryTooLargeError):
            self._too_large(operation, error, record)
            return Outcome.BAD_ENTRY, None
        ports.observer().cache_error(operation, error, record)
        unreachable = isinstance(error, _UNAVAILABLE) and not isinstance(error, SlowTransferError)
        if isinstance(error, SlowTransferError):
            if not raising:
                level = logging.WARNING if health.first_warning(self.store, "slow", operation) else logging.DEBUG
                message = health.safe_message(error)
                logger.log(level, "cache %s: %s; other keys are not affected", operation, message)
        else:
            # A timeout while this process was too busy to read the reply says nothing about the store.
            health.report_failure(
                self.store, operation, error, started, announce=not raising, outage=unreachable and not stalled
            )
        if raising:
            raise CacheError(
                f"cache {operation} failed on {self.store.description}: "
                f"{type(error).__name__}: {health.safe_message(error)}",
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
        first = health.first_warning(self.store, "too large", operation)
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
