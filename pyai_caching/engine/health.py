"""What is known of each store's recent failures: whether it is down, whether an outage was announced, what was
already warned about once (the rules are in `engine.access`).

It belongs to the store object, not to its description: two `MemoryStore`s (or two `RedisStore`s of one URL) have
outages of their own. It is kept for the stores that failed at least once, at most 1,024 of them: a store that was
garbage-collected is forgotten first, then the one noted longest ago (which then starts afresh: down again after
2 failures, and a warning of its own).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from pyai_caching._util.redact import redact_url_in_text
from pyai_caching._util.text import shorten
from pyai_caching.stores import Store

__all__ = [
    "DOWN_AFTER",
    "RETRY_AFTER",
    "announce_skipping",
    "first_warning",
    "is_down",
    "report_failure",
    "report_success",
    "reset_health",
    "safe_message",
    "should_skip",
]

logger = logging.getLogger("pyai_caching")

RETRY_AFTER = 1.0
"""Seconds during which operations on an unreachable (or timing out) store are skipped before it is probed again."""

DOWN_AFTER: Final = 2
"""Failures in a row (refused, reset, timed out; no success in between) after which a store is treated as down."""


@dataclass(slots=True)
class _Health:
    """What is known of one store's recent failures (changed under `_health_lock`)."""

    failing: set[str] | None = None
    """The operations that failed in the outage that was announced (logged as a warning), until each works again;
    `None`: no outage announced."""
    failed_at: float | None = None
    """`time.monotonic()` of the last announced failure."""
    recovered_at: float | None = None
    """`time.monotonic()` when the last announced outage ended."""
    down_until: float | None = None
    """Until when operations are skipped (the store is down); `None`: not down."""
    streak: int = 0
    """Failures in a row that say the store cannot be reached."""
    last_error: str | None = None
    """The last failure, as `<type>: <message>` (redacted)."""
    warned: set[tuple[str, str]] = field(default_factory=set)
    """`(kind, operation)` pairs already warned about once (see `first_warning`); kinds and operations are few."""

    def skips(self, now: float) -> bool:
        """Whether an operation starting `now` is skipped; the first one after `down_until` probes the store, and
        the others keep skipping meanwhile. Call under `_health_lock`."""
        until = self.down_until
        if until is None:
            return False
        if now < until:
            return True
        self.down_until = now + RETRY_AFTER
        return False


_health_lock = threading.Lock()
_healths: dict[int, tuple[Callable[[], object], _Health]] = {}
"""By `id()` of the store: a reference to the store (to tell a reused id from the same store), and its health."""
_STORES_KEPT: Final = 1024


def reset_health() -> None:
    """Forget everything learned about failing stores (for tests)."""
    with _health_lock:
        _healths.clear()


def _known(store: Store) -> _Health | None:
    """The health of `store` if any failure of it was ever noted (a read: no lock needed)."""
    found = _healths.get(id(store))
    return found[1] if found is not None and found[0]() is store else None


def _noted(store: Store) -> _Health:
    """The health of `store`, created on its first failure. Call under `_health_lock`."""
    health = _known(store)
    if health is None:
        if len(_healths) >= _STORES_KEPT:
            _make_room()
        health = _Health()
        _healths[id(store)] = (_reference(store), health)
    return health


def _reference(store: Store) -> Callable[[], object]:
    try:
        return weakref.ref(store)
    except TypeError:  # a store that takes no weak reference (`__slots__`) is held until it is forgotten
        return lambda: store


def _make_room() -> None:
    """Forget the stores that were garbage-collected, then the ones noted longest ago. Call under `_health_lock`."""
    for key in [key for key, (reference, _) in _healths.items() if reference() is None]:
        del _healths[key]
    while len(_healths) >= _STORES_KEPT:
        del _healths[next(iter(_healths))]


def report_failure(
    store: Store, operation: str, error: BaseException, started: float, *, announce: bool, outage: bool
) -> None:
    """Note a failed operation. `outage`: it counts towards treating the store as down. `announce`: log the first
    failure of an outage as a warning (not when the caller raises `CacheError`: that is the report)."""
    name = store.description
    now = time.monotonic()
    with _health_lock:
        health = _noted(store)
        if health.recovered_at is not None and started < health.recovered_at:
            # It was under way before the store recovered: a late echo of the outage that ended, not a new one.
            logger.debug("cache %s failed on %s: %s", operation, name, type(error).__name__)
            return
        health.last_error = f"{type(error).__name__}: {safe_message(error)}"
        if outage:
            health.streak += 1
            if health.streak >= DOWN_AFTER:
                health.down_until = now + RETRY_AFTER
        first = False
        if announce:
            if health.failing is None:
                health.failing = set()
            first = not health.failing
            health.failing.add(operation)
            health.failed_at = now
    if first:
        logger.warning(
            "cache %s failed on %s (%s: %s); calls go on without the cache until it recovers",
            operation,
            name,
            type(error).__name__,
            safe_message(error),
        )
    else:
        logger.debug("cache %s failed on %s: %s", operation, name, type(error).__name__)


def report_success(store: Store, operation: str, started: float) -> None:
    """Note an operation that worked: the store answers (a failure now starts a new count), and an outage ends
    once every kind of operation that failed in it works again."""
    health = _known(store)
    if health is None or (health.failing is None and health.down_until is None and not health.streak):
        return
    with _health_lock:
        health.streak = 0  # the store answers: a failure now starts a new count
        if health.failed_at is not None and started < health.failed_at:
            return  # it was already under way when the last failure happened: it proves nothing about now
        health.down_until = None
        failing = health.failing
        if failing is None:
            return
        # One outage ends when every kind of operation that failed in it works again (a read that works on a
        # read-only replica does not end an outage of writes, so the warning is not repeated on every call).
        failing.discard(operation)
        if failing:
            return
        health.failing = None
        health.recovered_at = time.monotonic()
    logger.warning("cache on %s recovered; caching resumed", store.description)


def announce_skipping(store: Store, operation: str) -> None:
    """Warn about an outage that only callers with `on_cache_error="raise"` have met so far (they got exceptions;
    this caller goes on without the cache, and is told once)."""
    known = _known(store)
    if known is not None and known.failing is not None:
        return
    with _health_lock:
        health = _noted(store)
        if health.failing is not None:
            return
        health.failing = {operation}
        health.failed_at = time.monotonic()
        cause = "it failed just before" if health.last_error is None else health.last_error
    logger.warning(
        "cache %s skipped on %s (%s); calls go on without the cache until it recovers",
        operation,
        store.description,
        cause,
    )


def should_skip(store: Store) -> bool:
    """Whether to skip an operation because the store was unreachable a moment ago (one probe gets through)."""
    known = _known(store)
    if known is None or known.down_until is None:
        return False
    now = time.monotonic()
    with _health_lock:
        return known.skips(now)


def is_down(store: Store) -> bool:
    """Whether operations on the store are being skipped (it failed repeatedly a moment ago)."""
    health = _known(store)
    until = None if health is None else health.down_until
    return until is not None and time.monotonic() < until


def first_warning(store: Store, kind: str, operation: str) -> bool:
    """Whether `kind` (`"slow"`, `"too large"`) is reported for `operation` of this store for the first time."""
    with _health_lock:
        warned = _noted(store).warned
        if (kind, operation) in warned:
            return False
        warned.add((kind, operation))
    return True


def safe_message(error: BaseException) -> str:
    """The error's message with anything URL-like that could hold a password redacted, in at most 300 characters."""
    return shorten(redact_url_in_text(str(error)))
