"""The miss log: a capped, expiring record of recent misses per namespace, kept in the cache's own store.

`note_miss` is called by the engine on every request-level miss (through `engine.ports.miss_listeners`; the
capability registers it). It only queues the miss: the fingerprint (`pyai_caching.explain.fingerprint`) is
computed and written by one background task per event loop, which waits up to `LINGER` seconds (or until a page
is full) so that a burst of misses costs one write per page, not one per miss.

Layout, under the namespace's prefix (`pyai_caching.engine.keys.entry_key`, kind `KeyKind.MISSES`)::

    pyai_caching:<namespace>:miss:{00} ... pyai_caching:<namespace>:miss:{0f}    pages
    pyai_caching:<namespace>:miss:{head}                                         the next page to take

`PAGES` keys, each a JSON page of at most `PER_PAGE` misses, each expiring `MISS_TTL` seconds after its last
write: at most `MAX_MISSES` misses per namespace, whatever the traffic. A process fills one page at a time; when
it needs a page, it takes the one the head names and moves the head on, so processes (and successive event loops
of one process) take the pages in turn and the oldest page is the one overwritten. Taking a page is not atomic
(the `Store` protocol has no increment): two processes that take one at the same moment may share it, and the
later write wins. The log is a sample of recent misses, not an audit log. A process that records only a miss or
two fills a page of its own, so with many such processes the log holds fewer than `MAX_MISSES`.

When is a miss not recorded?

* a cache call under a test cassette (`pyai_caching.pytest_plugin`), or with `explain_misses=False`;
* while the store is failing (the engine reports the outage; the miss log logs its first failed write per store
  at INFO level, the others at DEBUG);
* more than `MAX_PENDING` misses waiting in one event loop: the oldest are dropped (they would be beyond the cap);
* on shutdown: `asyncio.run` and `asyncio.Runner` cancel the writer, which then writes what is queued before it
  stops (within `WRITE_TIMEOUT`); the background loop of `cached_agent_run_sync` is flushed at interpreter exit.
  What cannot be written then (a loop closed by hand without cancelling its tasks, a store that does not answer)
  is reported in one WARNING with the number of misses lost. A process that is killed loses what it queued in
  its last `LINGER` seconds. `await flush_misses()` writes everything queued, at once.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import contextvars
import json
import logging
import random
import threading
import time
import weakref
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

import pyai_caching.engine.sync  # noqa: F401  (its exit handler must be registered before ours, so ours runs first)
from pyai_caching.engine import overrides
from pyai_caching.engine.keys import KEY_PREFIX, KeyKind, entry_key, kind_prefix, validate_namespace
from pyai_caching.explain.fingerprint import FINGERPRINT_VERSION, Memo, fingerprint_json, value_digest

if TYPE_CHECKING:
    from pyai_caching.engine.access import StoreAccess
    from pyai_caching.engine.canonical import CanonicalRequest
    from pyai_caching.engine.ports import CacheView
    from pyai_caching.stores import Store

__all__ = [
    "LINGER",
    "MAX_MISSES",
    "MISS_KIND",
    "MISS_TTL",
    "PAGES",
    "PER_PAGE",
    "RECORD_VERSION",
    "flush_misses",
    "head_key",
    "miss_key",
    "miss_prefix",
    "note_miss",
]

logger = logging.getLogger("pyai_caching")

MISS_KIND: Final = KeyKind.MISSES
"""The kind segment of miss-log keys."""
PAGES: Final = 16
"""Keys of the miss log per namespace."""
PER_PAGE: Final = 16
"""Misses per key."""
MAX_MISSES: Final = PAGES * PER_PAGE
"""The most misses the log keeps per namespace (256)."""
MISS_TTL: Final = 7 * 24 * 3600.0
"""Seconds a page lives after its last write (7 days)."""
LINGER: Final = 1.0
"""Seconds the writer waits for more misses before writing a page that is not full."""
MAX_PENDING: Final = MAX_MISSES
"""Misses queued in one event loop at most; older ones are dropped first."""
WRITE_TIMEOUT: Final = 2.0
"""Upper bound in seconds for one page write (the cache's `cache_timeout` when shorter)."""
RECORD_VERSION: Final = 1
"""Version of a page's JSON; a page of another version is ignored by `pyai-caching explain`."""


def miss_key(namespace: str, page: int) -> str:
    """The store key of one page of a namespace's miss log."""
    return entry_key(namespace, KeyKind.MISSES, f"{page:02x}")


def miss_prefix(namespace: str | None = None) -> str:
    """The key prefix of a namespace's miss log (`None`: the prefix of every key of this library, to scan)."""
    return kind_prefix(validate_namespace(namespace), KeyKind.MISSES) if namespace is not None else KEY_PREFIX


@dataclass(slots=True)
class _Noted:
    """One miss, as queued on the miss path (the fingerprint is computed by the writer)."""

    at: float
    access: StoreAccess
    namespace: str
    key: str
    task: str | None
    model: str
    salt: str
    canonical: CanonicalRequest

    def encoded(self, memo: Memo) -> bytes:
        """The miss as it is stored: its fingerprint (computed here, off the miss path) in JSON."""
        head = {
            "at": round(self.at, 3),
            "key": self.key,
            "task": self.task,
            "model": self.model,
            "version": value_digest(self.salt) if self.salt else None,
        }
        fp = fingerprint_json(self.canonical.to_json_obj(), memo)
        return (json.dumps(head, separators=(",", ":"))[:-1] + ',"fp":' + fp + "}").encode()


@dataclass(slots=True)
class _Ring:
    """Where this process writes in one namespace's log: its page (`None`: none claimed yet), and the misses on it.

    Kept per process (not per event loop), so that the loops of successive `asyncio.run` calls share a page."""

    store: Store
    """Held, so that the `id` the ring is found by cannot be reused by another store."""
    page: int | None = None
    items: list[bytes] = field(default_factory=list)


_PAGE_HEAD: Final = (
    f'{{"format":"pyai_caching","kind":"misses","version":{RECORD_VERSION},"fp":{FINGERPRINT_VERSION},"misses":['
).encode()


def _encode(items: list[bytes]) -> bytes:
    """A page: each miss is encoded once, when it is written first, however often its page is written again."""
    return _PAGE_HEAD + b",".join(items) + b"]}"


class _LoopLog:
    """The misses queued in one event loop, and the task that writes them."""

    def __init__(self) -> None:
        self.pending: deque[_Noted] = deque()
        self.dropped = 0
        self.task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.lock = asyncio.Lock()
        self.memo = Memo()
        self.flushing = 0
        self.held = False
        """The last write found no full page to write (misses of several namespaces): wait for the linger."""

    def add(self, noted: _Noted) -> None:
        if len(self.pending) >= MAX_PENDING:
            self.pending.popleft()
            self.dropped += 1
        self.pending.append(noted)
        if len(self.pending) >= PER_PAGE:
            self.wake.set()
        if self.task is None:
            loop = asyncio.get_running_loop()
            # An empty context: the writer must not keep the call's context (its record, its span) alive.
            self.task = loop.create_task(self._run(), name="pyai_caching-miss-log", context=contextvars.Context())

    async def _run(self) -> None:
        try:
            while self.pending:
                lingered = False
                if (len(self.pending) < PER_PAGE or self.held) and not self.flushing:
                    self.wake.clear()
                    try:
                        async with asyncio.timeout(LINGER):
                            await self.wake.wait()
                    except TimeoutError:
                        lingered = True
                # Full pages as soon as they are full; a page that is not full once no more misses came for LINGER.
                self.held = await self.write(partial=lingered or self.flushing > 0) == 0
        except asyncio.CancelledError:
            # The event loop is shutting down (asyncio.run and asyncio.Runner cancel every task): write what is
            # queued, then stop.
            await self.write_or_report()
            raise
        finally:
            self.task = None

    async def write_or_report(self) -> None:
        with contextlib.suppress(Exception, asyncio.CancelledError):
            async with asyncio.timeout(WRITE_TIMEOUT):
                await self.write(partial=True)
        self.report_lost()

    def report_lost(self) -> None:
        if self.pending:
            logger.warning(
                "%d cache misses were not recorded for `pyai-caching explain`: the event loop ended before they "
                "were written (await pyai_caching.explain.flush_misses() before closing a loop by hand)",
                len(self.pending),
            )
            self.pending.clear()

    async def write(self, *, partial: bool) -> int:
        """Write the queued misses (`partial=False`: only those that fill pages); return how many were taken."""
        async with self.lock:
            batch = list(self.pending)
            if not batch:
                return 0
            if self.dropped:
                logger.debug("%d cache misses beyond the miss log's cap were not recorded", self.dropped)
                self.dropped = 0
            groups: dict[tuple[int, str], list[_Noted]] = {}
            for noted in batch:
                groups.setdefault((id(noted.access.store), noted.namespace), []).append(noted)
            taken: set[int] = set()
            for (_, namespace), misses in groups.items():
                ring = _ring(misses[0].access.store, namespace)
                if not partial:
                    room = PER_PAGE - len(ring.items)
                    if len(misses) < room:
                        continue
                    misses = misses[: room + (len(misses) - room) // PER_PAGE * PER_PAGE]
                taken.update(id(m) for m in misses)
                try:
                    items = [m.encoded(self.memo) for m in misses[-MAX_MISSES:]]  # older ones: beyond the cap
                except Exception:  # a bug here must not stop the writer (nor reach whoever flushes)
                    self.memo = Memo()
                    logger.warning("could not fingerprint %d cache misses; they are not recorded", len(misses),
                                   exc_info=True)  # fmt: skip
                    continue
                await _write_ring(ring, misses[0].access, namespace, items)
            if taken:
                self.pending = deque(n for n in self.pending if id(n) not in taken)
            return len(taken)

    async def flush(self) -> int:
        self.flushing += 1
        try:
            written = await self.write(partial=True)
            task = self.task
            if task is not None and task is not asyncio.current_task():
                self.wake.set()  # the writer writes what came meanwhile, finds nothing more queued, and ends
                await asyncio.wait([task])
        finally:
            self.flushing -= 1
        return written


_rings_lock = threading.Lock()
_rings: OrderedDict[tuple[int, str], _Ring] = OrderedDict()
_MAX_RINGS: Final = 64


def _ring(store: Store, namespace: str) -> _Ring:
    key = (id(store), namespace)
    with _rings_lock:
        ring = _rings.get(key)
        if ring is None or ring.store is not store:
            ring = _rings[key] = _Ring(store=store)
            if len(_rings) > _MAX_RINGS:
                _rings.popitem(last=False)
        else:
            _rings.move_to_end(key)
        return ring


def head_key(namespace: str) -> str:
    """The key that says which page of a namespace's log the next process should take (best effort, see `_claim`)."""
    return entry_key(namespace, KeyKind.MISSES, "head")


async def _claim(access: StoreAccess, namespace: str) -> int:
    """The next page of the namespace's log, for this process to fill: the one the head key names (a random one
    when it names none), and the head moved past it. Two processes claiming at the same moment may take the same
    page; the store has no atomic increment to prevent it, and the log is a sample of recent misses, not an audit."""
    page: int | None = None
    with contextlib.suppress(Exception):  # a failure here is a failure of the page write that follows
        async with asyncio.timeout(_limit(access)):
            raw = await access.store.get(head_key(namespace))
        if raw is not None and raw.isdigit() and int(raw) < PAGES:
            page = int(raw)
    if page is None:
        page = random.randrange(PAGES)
    with contextlib.suppress(Exception):
        async with asyncio.timeout(_limit(access)):
            await access.store.set(head_key(namespace), str((page + 1) % PAGES).encode(), ttl=MISS_TTL)
    return page


async def _write_ring(ring: _Ring, access: StoreAccess, namespace: str, items: list[bytes]) -> None:
    """Append `items` to the ring's page; a full page is written, and the next item claims the next page."""
    page, current = ring.page, list(ring.items)
    for item in items:
        if page is None:
            page, current = await _claim(access, namespace), []
        current.append(item)
        if len(current) == PER_PAGE:
            await _put(access, miss_key(namespace, page), current)
            page, current = None, []
    ring.page, ring.items = page, current
    if page is not None and current:
        await _put(access, miss_key(namespace, page), current)


def _limit(access: StoreAccess) -> float:
    return WRITE_TIMEOUT if access.timeout is None else min(access.timeout, WRITE_TIMEOUT)


_failed_stores: set[str] = set()


async def _put(access: StoreAccess, key: str, items: list[bytes]) -> None:
    store = access.store
    if access.store_down():  # the engine reports the outage; nothing to add
        return
    try:
        async with asyncio.timeout(_limit(access)):
            await store.set(key, _encode(items), ttl=MISS_TTL)
    except Exception as error:
        level = logging.INFO if store.description not in _failed_stores else logging.DEBUG
        _failed_stores.add(store.description)
        logger.log(level, "could not record a cache miss in %s (%s)", store.description, type(error).__name__)


_lock = threading.Lock()
_logs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopLog] = weakref.WeakKeyDictionary()


def note_miss(cache: CacheView, key: str, canonical: CanonicalRequest, model: str) -> None:
    """Queue a request-level miss for the miss log (a `MissListener`; cheap: no I/O, no hashing here)."""
    if overrides.active() is not None:  # a test cassette explains its own misses
        return
    loop = asyncio.get_running_loop()
    log = _logs.get(loop)
    if log is None:
        with _lock:
            log = _logs.get(loop)
            if log is None:
                log = _logs[loop] = _LoopLog()
    log.add(
        _Noted(
            at=time.time(),
            access=cache.access,
            namespace=cache.resolved_namespace,
            key=key,
            task=cache.task_name,
            model=model,
            salt=cache.key_salt,
            canonical=canonical,
        )
    )


async def flush_misses() -> int:
    """Write every miss queued in this process now (in every event loop); return how many were written.

    Not needed in normal use (the misses are written within `LINGER` seconds, and when `asyncio.run` ends); useful
    before reading the log right away (`pyai-caching explain` in a test) or before closing an event loop by hand.
    """
    current = asyncio.get_running_loop()
    with _lock:
        logs = list(_logs.items())
    written = 0
    for loop, log in logs:
        if loop is current:
            written += await log.flush()
        elif loop.is_running() and not loop.is_closed() and log.pending:
            future = asyncio.run_coroutine_threadsafe(log.flush(), loop)
            written += await asyncio.wrap_future(future)
    return written


def _at_exit() -> None:
    """Write what the loops still running in other threads (the sync entry points' loop) have queued."""
    with _lock:
        logs = list(_logs.items())
    for loop, log in logs:
        if not log.pending:
            continue
        if loop.is_running() and not loop.is_closed():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(log.flush(), loop).result(timeout=WRITE_TIMEOUT + 1)
        log.report_lost()


atexit.register(_at_exit)
