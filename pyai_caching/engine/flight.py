"""Stampede protection: of identical concurrent misses, one calls the model and the others wait for its entry.

```python
async with Fill(access, key, record, wait=True, lock_ttl=5.0) as fill:
    if fill.entry is not None:        # an identical call filled the entry while this one waited
        return fresh_response(fill.entry)
    response = await handler(request_context)
    await fill.put_entry(ResponseEntry(...))
```

Two levels:

* **In one process** (per event loop): a single-flight per key. The first miss leads; identical misses that
  arrive while it runs wait on it and receive the encoded entry, which each decodes into its own fresh objects
  (nothing mutable is shared). This needs no store at all, so it keeps working while the store is down.
* **Across processes**, when the store implements `LockingStore` (`RedisStore`): the leader takes a lock key next
  to the entry (`<entry key>:lock`, same `{digest}` hash tag, so it lands on the entry's Redis Cluster node): a
  random token set with `SET NX PX`, renewed every third of its lifetime while the model call runs, released with
  a compare-and-delete. A process that finds the lock taken polls for the entry with a short exponential backoff
  (2 ms doubling to 25 ms) and tries the lock on each round, so it returns within one poll interval of the entry
  landing, and takes over within the lock's lifetime if the holder dies.

When the leader fails (the model raised, the run was cancelled, the response was incomplete), nothing is stored
and the waiters are released at once: one of them becomes the new leader and calls the model itself, the others
wait on it.

A store that is down (see `_access`: several failures in a row) is treated like no lock at all (fail-open): the
call goes to the model. One failed or timed-out lock or poll command is not enough for that: a waiter keeps
waiting and tries again (for at most the lock's lifetime without a single answer from the store), and a new
holder whose check for the entry fails checks again before it calls the model. Under load, when event loops lag
and single commands time out, a waiter never becomes a model caller because of one timeout.

What the lock does not guarantee: it is advisory and it expires. A holder that stalls longer than the lock's
lifetime without renewing it (a blocked event loop, a paused process) loses it, and another process may call the
model for the same request too; both then write the same key and the last write wins. The model may be called
twice in that case, never a wrong answer served.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import math
import secrets
import time
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final

import anyio

from pyai_caching.engine.access import Outcome, StoreAccess
from pyai_caching.engine.context import CallRecord
from pyai_caching.engine.entries import (
    EntryDecodeError,
    EntryEncodeError,
    ResponseEntry,
    decode_response_entry,
    encode_entry,
)
from pyai_caching.engine.single_flight import Flight, SingleFlight
from pyai_caching.engine.stream_replay import without_stream
from pyai_caching.exceptions import ConfigurationError
from pyai_caching.stores import LockingStore, Store
from pyai_caching.stores.lag import wait_responsive

__all__ = [
    "CLEANUP_LIMIT",
    "DEFAULT_LOCK_TTL",
    "Fill",
    "check_lock_ttl",
    "forget_entries_of_failed_run",
    "lock_key",
    "to_the_end",
]

logger = logging.getLogger("pyai_caching")

DEFAULT_LOCK_TTL: Final = 5.0
"""Seconds a fill lock lives unless renewed: how long waiters wait for a holder that died before taking over."""

POLL_FIRST: Final = 0.002
"""First wait (seconds) of a process polling for an entry another process is filling."""

POLL_MAX: Final = 0.025
"""Longest wait between two polls: a waiter returns within about this long of the entry landing."""

READ_ATTEMPTS: Final = 4
"""How many times a new lock holder tries to read the entry (a store that answers again after a failed read may
have it: the previous holder stored it) before it calls the model."""

CLEANUP_LIMIT: Final = 5.0
"""Longest a clean-up (a lock release, deleting a failed run's entries) may hold up a call that is ending."""

_fills: SingleFlight[bytes] = SingleFlight()
"""Fills under way in this process, by (store, key): the encoded entry their leader stored or found."""
_locking_types: dict[type, bool] = {}

_filling: contextvars.ContextVar[frozenset[tuple[int, str]]] = contextvars.ContextVar(
    "pyai_caching_filling", default=frozenset()
)
"""The fills (store, key) the current call is inside of: a nested lookup of the same key must not wait for them."""

_run_writes: contextvars.ContextVar[list[tuple[StoreAccess, str]] | None] = contextvars.ContextVar(
    "pyai_caching_run_writes", default=None
)


def check_lock_ttl(value: Any) -> None:
    """`lock_ttl` must be a positive, finite number of seconds."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigurationError(
            f"lock_ttl must be a positive number of seconds (how long a fill lock lives unless renewed), got {value!r}"
        )


def lock_key(key: str) -> str:
    """The lock key of an entry key: the same `{digest}` hash tag, so both live on one Redis Cluster node."""
    return f"{key}:lock"


def _is_locking(store: Store) -> bool:
    kind = type(store)
    found = _locking_types.get(kind)
    if found is None:
        found = _locking_types[kind] = isinstance(store, LockingStore)
    return found


@dataclass(eq=False)
class Fill:
    """The fill of one missing entry: wait for an identical call that is already filling it, or fill it.

    Use as `async with`: entering waits (when `wait` is true) and sets `entry` if another caller produced it;
    otherwise this call is the leader and must call the model, then `put_entry`. Leaving wakes the waiters
    (with the entry, or with nothing if none was put, so that one of them takes over) and releases the lock.
    """

    __slots__ = (
        "_access",
        "_filling_token",
        "_fkey",
        "_flight",
        "_key",
        "_lock_token",
        "_lock_ttl",
        "_record",
        "_renewer",
        "_wait",
        "_wait_started",
        "entry",
        "waited",
    )

    def __init__(
        self, access: StoreAccess, key: str, record: CallRecord | None, *, wait: bool, lock_ttl: float
    ) -> None:
        self._access = access
        self._key = key
        self._record = record
        self._wait = wait
        self._lock_ttl = lock_ttl
        self._fkey = (id(access.store), key)
        self._flight: Flight[bytes] | None = None
        self._lock_token: str | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._wait_started: float | None = None
        self._filling_token: contextvars.Token[frozenset[tuple[int, str]]] | None = None
        self.entry: ResponseEntry | None = None
        """The entry another caller produced while this one waited (`None`: this call fills the entry)."""
        self.waited: float | None = None
        """Seconds spent waiting for another caller, or `None` if this call did not wait."""

    async def __aenter__(self) -> Fill:
        filling = _filling.get()
        if self._wait and self._fkey not in filling:
            try:
                self.entry = await self._claim()
            except BaseException:
                await self._finish(None)
                raise
            if self._wait_started is not None:
                self.waited = time.monotonic() - self._wait_started
            if self.entry is not None:
                await self._finish(None)
                return self
        # This call fills the entry (or is nested inside the call that does: a second cache on the same store, say,
        # which must not wait for its own caller). Code it runs knows, so that it does not wait for it either.
        self._filling_token = _filling.set(filling | {self._fkey})
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        token, self._filling_token = self._filling_token, None
        if token is not None:
            try:
                _filling.reset(token)
            except ValueError:  # left in another context (a streamed request ends in the task that consumed it)
                _filling.set(_filling.get() - {self._fkey})
        await self._finish(None)

    async def put_entry(self, entry: ResponseEntry) -> bool:
        """Store the entry this call produced, hand it to the callers waiting in this process, release the lock.

        Returns whether the store accepted it (the waiters of this process get it either way).
        """
        try:
            raw = encode_entry(entry, secret=self._access.secret, key=self._key)
            if entry.stream is not None and not self._access.fits(len(raw)):
                # The recorded stream events made it too large: keep the response (a streamed hit gets one chunk).
                raw = encode_entry(without_stream(entry), secret=self._access.secret, key=self._key)
        except EntryEncodeError as e:  # the waiters call the model themselves; the caller keeps its answer
            logger.warning("not caching %s: %s", self._key, e)
            await self._finish(None)
            return False
        self._publish(raw)
        stored = await self._access.put_raw(self._key, raw, self._record)
        if stored:
            writes = _run_writes.get()
            if writes is not None:
                writes.append((self._access, self._key))
        await self._finish(raw)
        return stored

    # -- waiting and leading ------------------------------------------------------------------------------------

    async def _claim(self) -> ResponseEntry | None:
        """Wait for an identical fill in this process, then (as its leader) across processes; `None`: fill it."""
        takeover = False
        while (flight := _fills.under_way(self._fkey)) is not None:
            self._started_waiting()
            raw = await flight.wait()
            if raw is not None and (entry := self._decode(raw)) is not None:
                return entry
            takeover = True  # the leader stored nothing: this call (or another waiter) leads now
        self._flight = _fills.take_off(self._fkey)
        if not _is_locking(self._access.store):
            # Without locks, only a takeover looks again: the entry may have come from another process meanwhile.
            return await self._read() if takeover else None
        return await self._claim_lock()

    async def _claim_lock(self) -> ResponseEntry | None:
        store = self._access.store
        assert isinstance(store, LockingStore)
        name, token = lock_key(self._key), secrets.token_hex(16)
        delay = POLL_FIRST
        answered = time.monotonic()  # when the store last answered a lock command
        while True:
            try:
                outcome, taken = await self._access.attempt(
                    "lock", store.acquire_lock(name, token, ttl=self._lock_ttl), self._record
                )
            except asyncio.CancelledError:
                # The script may have taken the lock before the cancellation arrived: release it by its token on the
                # way out (a no-op if it was not taken), rather than leave other processes waiting for it to expire.
                self._lock_token = token
                raise
            if outcome is Outcome.OK:
                answered = time.monotonic()
                if taken:
                    self._lock_token = token
                    self._renewer = asyncio.create_task(self._renew(store, name, token))
                    # The previous holder may have stored the entry just before releasing the lock.
                    return await self._read_as_holder()
                self._started_waiting()
            elif not self._keep_trying(outcome, answered):
                return None  # the store is down or refuses locks: fill without a lock (the failure is reported)
            await asyncio.sleep(delay)
            delay = min(delay * 2, POLL_MAX)
            entry = await self._read()
            if entry is not None:
                return entry

    def _keep_trying(self, outcome: Outcome, answered: float) -> bool:
        """After a failed lock command: whether to try again rather than fill without a lock.

        Only a store that could not be reached (or timed out) for a moment deserves another try, and only while
        it is not treated as down and has answered within the lock's lifetime (a holder it answered for is still
        alive, or its lock has expired by then).
        """
        return (
            outcome is Outcome.TRANSIENT
            and not self._access.store_down()
            and time.monotonic() - answered < self._lock_ttl
        )

    async def _read_as_holder(self) -> ResponseEntry | None:
        """The entry, read by the new lock holder; a failed read is tried again before the model is called."""
        delay = POLL_FIRST
        for attempt in range(READ_ATTEMPTS):
            outcome, raw = await self._access.read_raw(self._key, self._record)
            if outcome is Outcome.OK:
                return None if raw is None else self._accept(raw)
            if outcome is not Outcome.TRANSIENT or self._access.store_down() or attempt == READ_ATTEMPTS - 1:
                return None
            await asyncio.sleep(delay)
            delay = min(delay * 4, POLL_MAX)
        return None

    async def _renew(self, store: LockingStore, name: str, token: str) -> None:
        """Keep the lock while the model call runs: extend it every third of its lifetime until it is lost."""
        interval = self._lock_ttl / 3
        while True:
            await asyncio.sleep(interval)
            try:
                renewed = await wait_responsive(store.renew_lock(name, token, ttl=self._lock_ttl), interval)
            except Exception as error:  # the store is failing: keep trying until the call ends
                logger.debug("could not renew lock %s: %s", name, type(error).__name__)
                continue
            if not renewed:
                logger.debug("lost lock %s (it expired); another caller may fill it too", name)
                return

    async def _read(self) -> ResponseEntry | None:
        raw = await self._access.get_raw(self._key, self._record)
        return None if raw is None else self._accept(raw)

    def _accept(self, raw: bytes) -> ResponseEntry | None:
        entry = self._decode(raw)
        if entry is None:  # the lookup before the fill has already warned about it
            logger.debug("ignoring unreadable entry %s; it will be overwritten", self._key)
        else:
            self._publish(raw)
        return entry

    def _decode(self, raw: bytes) -> ResponseEntry | None:
        try:
            return decode_response_entry(raw, secret=self._access.secret, key=self._key)
        except EntryDecodeError:
            return None

    def _started_waiting(self) -> None:
        if self._wait_started is None:
            self._wait_started = time.monotonic()

    # -- finishing ----------------------------------------------------------------------------------------------

    def _publish(self, raw: bytes | None) -> None:
        """Wake the callers of this process waiting on this fill (with the entry, or with nothing)."""
        flight, self._flight = self._flight, None
        if flight is not None:
            _fills.land(self._fkey, flight, raw)

    async def _finish(self, raw: bytes | None) -> None:
        self._publish(raw)
        renewer, self._renewer = self._renewer, None
        if renewer is not None:
            renewer.cancel()  # not awaited: a renewal that still lands after the release finds no token and is a no-op
        token, self._lock_token = self._lock_token, None
        if token is not None:
            store = self._access.store
            assert isinstance(store, LockingStore)
            # Never raises: a lock that cannot be released expires by itself.
            release = self._access.guard("lock", store.release_lock(lock_key(self._key), token), None, quiet=True)
            await to_the_end(release, min(self._lock_ttl, CLEANUP_LIMIT))


async def to_the_end(cleanup: Awaitable[Any], limit: float) -> None:
    """Await a clean-up to its end (or `limit` seconds), even when the call it belongs to is being cancelled.

    pydantic-ai runs an agent's graph in anyio cancel scopes: once a run is cancelled, every later await inside it is
    cancelled again, so an unshielded release would never reach the store and the lock would be left to expire.
    """
    with anyio.move_on_after(limit, shield=True):
        await cleanup


@contextlib.asynccontextmanager
async def forget_entries_of_failed_run() -> AsyncIterator[None]:
    """Around one agent run: if it fails or is cancelled, delete the request entries it stored.

    A response that was stored and then failed output validation (or led to any other error) would otherwise make
    every later identical run fail the same way without ever asking the model again.
    """
    writes: list[tuple[StoreAccess, str]] = []
    token = _run_writes.set(writes)
    try:
        yield
    except BaseException as error:
        if not _keeps_entries(error):
            for access, key in writes:
                await to_the_end(access.delete(key), CLEANUP_LIMIT)
        raise
    finally:
        _run_writes.reset(token)


def _keeps_entries(error: BaseException) -> bool:
    """Whether the responses a failed run stored are still good answers.

    A run that stopped because a later request could not be made (rate limit budget spent, provider error,
    spend or usage limit, a read-only miss) failed through no fault of the responses it already got: keeping them
    means a retry of the run does not pay for those requests again. Anything else (an output that never validated,
    a tool error, a cancellation) may have been caused by a stored response, so those are forgotten.
    """
    from pydantic_ai.exceptions import ModelAPIError, UsageLimitExceeded

    from pyai_caching.exceptions import BudgetExceededError, CacheMissError, RateLimitError

    return isinstance(error, ModelAPIError | UsageLimitExceeded | RateLimitError | BudgetExceededError | CacheMissError)
