"""`RedisSpendLedger`: every expense added to per-day Redis hashes exactly once, across Redis outages and restarts.

The schema, and the script that adds one expense atomically and at most once, are in `ledger_schema`.

## Exactly once

A write that fails or times out is kept in memory (`outbox.Outbox`, bounded by `max_pending`) and sent again, with
backoff, until Redis confirms it; while Redis is down, new expenses go straight to that buffer without waiting for
a timeout. Redis applies each write's id at most once, so a write sent again after its reply was lost is skipped.
Markers are only needed while a reply is unknown: each write also deletes the markers of up to 32 writes already
confirmed, so the ledger does not keep one key per call; the markers of the last writes of a process expire after 7
days. One warning is logged when an outage starts and one when the buffer has been written.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Final, Literal

from redis.exceptions import RedisError

from pyai_caching.engine.sync import run_sync
from pyai_caching.exceptions import ConfigurationError
from pyai_caching.spend.ledger_schema import (
    APPLY_SCRIPT,
    LEDGER_COUNTS,
    LEDGER_KEY_PREFIX,
    METRICS,
    TOTAL_KEY,
    LedgerRow,
    LedgerStatus,
    applied_key,
    day_key,
    error_text,
    ledger_write,
    note_foreign_key,
    parse_rows,
    wrong_type,
)
from pyai_caching.spend.outbox import LedgerWrite, Outage, Outbox
from pyai_caching.spend.redis_stores import spend_store
from pyai_caching.stores.redis import RedisStore

if TYPE_CHECKING:
    from pyai_caching.spend.expense import Expense

__all__ = [
    "LEDGER_COUNTS",
    "LEDGER_KEY_PREFIX",
    "LedgerRow",
    "LedgerStatus",
    "RedisSpendLedger",
    "read_ledger",
    "read_ledger_async",
]

logger = logging.getLogger("pyai_caching")

_DEFAULT_DAYS: Final = 30

APPLIED_TTL: Final = 7 * 86400
"""Seconds an `applied:<id>` marker lives: a write retried later than this after a lost reply could count twice."""
DEFAULT_MAX_PENDING: Final = 100_000
"""Expenses a ledger keeps in memory while Redis cannot be written (about 50 MB at most)."""
_FLUSH_BATCH: Final = 32
_SPENT_CHECKS: Final = 1_000
_RETRY_FIRST: Final = 0.05
_RETRY_MAX: Final = 1.0
_EXIT_FLUSH_SECONDS: Final = 3.0


@dataclass(init=False)
class RedisSpendLedger:
    """Adds every expense to per-day (and all-time) Redis hashes, exactly once; see the module docstring.

    ```python
    ledger = RedisSpendLedger("redis://localhost:6379/0")
    await cached_agent_run(agent, prompt, "triage", expense_hook=ledger)
    rows = await ledger.read(since=date.today())
    ```

    Any number of processes may write to one ledger at once (integer increments in nano-USD: sums are exact).
    When Redis cannot be written (down, restarting, paused, failing over), `record` keeps the expense in memory
    and returns; the buffer is written, each expense exactly once, as soon as Redis answers again (`await
    ledger.flush()` does it now; at exit the process waits up to 3 s). What a process holds when it is killed is
    lost, and so is what a Redis without persistence held when it restarted: see the docs, "Costs, spend
    and budgets", section "The spend ledger across Redis failures".
    """

    store: RedisStore
    """The Redis store whose connection pools are used (shared with the cache when the URL is the same)."""
    retention_days: int | None
    """Day hashes expire this many days after their last write; `None` keeps them (the default)."""
    max_pending: int
    """Expenses kept in memory while Redis cannot be written; past it, new ones are dropped and counted."""
    _outbox: Outbox = field(repr=False, compare=False)
    _flushers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = field(
        repr=False, compare=False
    )
    _read_failing: bool = field(repr=False, compare=False)

    def __init__(
        self,
        redis_url: str | None = None,
        *,
        store: RedisStore | None = None,
        retention_days: int | None = None,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        """Args:
        redis_url: Redis URL; default `LLM_CACHE_REDIS_URL`.
        store: A `RedisStore` instead of a URL.
        retention_days: Expire day hashes after this many days (all-time totals never expire).
        max_pending: Expenses kept in memory while Redis cannot be written (default 100,000).
        """
        self.store = spend_store(
            redis_url,
            store,
            "RedisSpendLedger",
            why="the embedded store cannot hold a ledger shared by several processes",
        )
        if retention_days is not None and (
            isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days < 1
        ):
            raise ConfigurationError(
                f"retention_days must be a positive number of days or None, got {retention_days!r}"
            )
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ConfigurationError(f"max_pending must be a positive number of expenses, got {max_pending!r}")
        self.retention_days = retention_days
        self.max_pending = max_pending
        self._outbox = Outbox(max_pending)
        self._flushers = weakref.WeakKeyDictionary()
        self._read_failing = False
        self._flushers_lock = threading.Lock()
        _ledgers[id(self)] = self

    def __repr__(self) -> str:
        return f"RedisSpendLedger({self.store.description!r})"

    def note_read(self, *, failed: bool) -> bool:
        """Budgets say whether they could read this ledger; `True` when that changes (the moment to log, once per
        outage rather than once per call)."""
        with self._flushers_lock:
            changed = failed != self._read_failing
            self._read_failing = failed
            return changed

    def status(self) -> LedgerStatus:
        """Counts of what this ledger object has written, buffered, skipped as duplicates and dropped."""
        box = self._outbox
        return LedgerStatus(
            pending=box.pending,
            written=box.written,
            buffered=box.buffered,
            duplicates=box.duplicates,
            dropped=box.dropped,
            dropped_cost=box.dropped_cost,
            down_since=box.down_since,
        )

    async def record(self, expense: Expense) -> None:
        """Add one expense to its day and to the all-time totals, exactly once.

        Never raises on a Redis failure: the expense is buffered and written when Redis answers again.
        """
        write = ledger_write(expense)
        if not self._outbox.admit(write):
            self._after_buffering()
            return
        try:
            applied = await self._apply(write)
        except (RedisError, OSError) as error:
            self._failed([write], error)
            return
        except BaseException:
            self._outbox.requeue([write])  # cancelled mid-write: it may or may not be in; its id settles that
            self._after_buffering()
            raise
        self._outbox.confirmed(write, applied)

    async def flush(self, *, max_wait: float | None = 10.0) -> int:
        """Write the buffered expenses now, retrying while Redis does not answer for at most `max_wait` seconds.

        Returns how many expenses are still waiting (0: every buffered expense is in the ledger).
        """
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max_wait):
                while self._outbox.unsettled:
                    await self._flush()
                    if self._outbox.unsettled:
                        await asyncio.sleep(0.01)  # another event loop's flusher is sending the rest
        return self._outbox.pending

    async def _apply(self, write: LedgerWrite) -> bool:
        """Run `APPLY_SCRIPT` for `write`: `True` if it was added now, `False` if an earlier attempt had added it."""
        forget = self._outbox.confirmed_to_forget()
        keys = [day_key(write.day), TOTAL_KEY, applied_key(write.id), *map(applied_key, forget)]
        day_ttl = self.retention_days * 86400 if self.retention_days is not None else 0
        args: list[str | int] = [APPLIED_TTL, day_ttl, write.field_prefix]
        for metric, value in zip(METRICS, write.values, strict=True):
            if value:
                args += [metric, value]
        try:
            client = await self.store.client()
            return bool(await client.register_script(APPLY_SCRIPT)(keys=keys, args=args))
        except BaseException:
            self._outbox.forget_later(forget)  # deleting a marker twice is harmless; never deleting it is not
            raise

    def _failed(self, writes: list[LedgerWrite], error: BaseException) -> None:
        if self._outbox.failed(writes):
            logger.warning(
                "the spend ledger at %s cannot be written (%s); expenses wait in memory (at most %d) "
                "and are written, each once, when Redis is back",
                self.store.description,
                error_text(error),
                self.max_pending,
            )
        else:
            logger.debug("spend ledger write failed on %s: %s", self.store.description, error_text(error))
        self._after_buffering()

    def _after_buffering(self) -> None:
        if self._outbox.take_drop_warning():
            logger.warning(
                "the spend ledger's buffer is full (%d expenses wait for %s): further expenses are "
                "dropped and counted (RedisSpendLedger.status().dropped) until it answers again; raise max_pending "
                "to keep more",
                self.max_pending,
                self.store.description,
            )
        self._start_flusher()

    def _start_flusher(self) -> None:
        """Make sure a flusher runs in this event loop while writes are queued."""
        if not self._outbox.queued:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        with self._flushers_lock:
            task = self._flushers.get(loop)
            if task is None or task.done():
                task = loop.create_task(self._flush(), name="pyai_caching spend ledger flush")
                task.add_done_callback(self._forget_flusher)
                self._flushers[loop] = task

    def _forget_flusher(self, task: asyncio.Task[None]) -> None:
        with self._flushers_lock:
            loop = task.get_loop()
            if self._flushers.get(loop) is task:
                del self._flushers[loop]

    async def _flush(self) -> None:
        """Send queued writes until the queue is empty, backing off while Redis does not answer."""
        delay = _RETRY_FIRST
        while batch := self._outbox.claim(_FLUSH_BATCH):
            try:
                results = await asyncio.gather(*(self._apply(w) for w in batch), return_exceptions=True)
            except BaseException:
                self._outbox.requeue(batch)
                raise
            failed: list[LedgerWrite] = []
            error: BaseException | None = None
            for write, result in zip(batch, results, strict=True):
                if isinstance(result, bool):
                    self._outbox.confirmed(write, result)
                else:
                    failed.append(write)
                    error = result
            if error is None:
                delay = _RETRY_FIRST
                continue
            if isinstance(error, asyncio.CancelledError):
                self._outbox.requeue(failed)
            else:
                self._failed(failed, error)
            await asyncio.sleep(delay)
            delay = min(delay * 2, _RETRY_MAX)
        self._report_recovery(self._outbox.settle())

    def _report_recovery(self, outage: Outage | None) -> None:
        if outage is None:
            return
        dropped = (
            f"; {outage.dropped} expense(s) (${outage.dropped_cost:.6f}) were dropped because the buffer was full"
            if outage.dropped
            else ""
        )
        logger.warning(
            "the spend ledger at %s is back: %.1f s after the first failure, %d buffered expense(s) "
            "written, %d already there (a lost reply) and not counted twice%s",
            self.store.description,
            outage.seconds,
            outage.written,
            outage.duplicates,
            dropped,
        )

    async def read(
        self,
        since: date | None = None,
        until: date | None = None,
        *,
        namespace: str | None = None,
        task: str | None = None,
        total: bool = False,
    ) -> list[LedgerRow]:
        """The ledger's rows, one per day, namespace, task and model, sorted by those.

        Args:
            since: First UTC day (inclusive); default 29 days before `until`.
            until: Last UTC day (inclusive); default today (UTC).
            namespace: Only this namespace.
            task: Only this task.
            total: Return the all-time totals (`day=None`) instead of days; `since`/`until` are then ignored.
        """
        rows, _ = await self._read(since, until, namespace=namespace, task=task, total=total)
        return rows

    async def _read(
        self,
        since: date | None,
        until: date | None,
        *,
        namespace: str | None,
        task: str | None,
        total: bool,
        markers: Sequence[str] = (),
    ) -> tuple[list[LedgerRow], list[bool]]:
        """The rows, and whether each of `markers` exists, read in one transaction (one consistent snapshot)."""
        self._start_flusher()
        client = await self.store.client()
        if total:
            keys: list[tuple[date | None, str]] = [(None, TOTAL_KEY)]
        else:
            keys = [(day, day_key(day)) for day in _days(since, until)]
        async with client.pipeline(transaction=bool(markers)) as pipe:
            for _, key in keys:
                pipe.hgetall(key)
            for write_id in markers:
                pipe.get(applied_key(write_id))
            results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception) and not wrong_type(result):
                raise result
        rows: list[LedgerRow] = []
        for (day, key), raw in zip(keys, results[: len(keys)], strict=True):
            if isinstance(raw, Exception):  # not a hash: not ours (written by something else), skipped
                note_foreign_key(key)
                continue
            rows.extend(parse_rows(day, raw, namespace=namespace, task=task))
        rows.sort(key=lambda r: (r.day or date.min, r.namespace, r.task, r.model))
        return rows, [found is not None for found in results[len(keys) :]]

    async def spent(
        self,
        task: str,
        *,
        namespace: str = "default",
        period: Literal["day", "month", "total"] = "day",
        today: date | None = None,
    ) -> Decimal:
        """USD the task has spent in the namespace: today, this calendar month (UTC), or all time.

        Counts the expenses this ledger object has not had confirmed yet (buffered during an outage, or being
        written) exactly once: with the sums, one transaction reads which of them Redis already holds.
        """
        until = today or datetime.now(UTC).date()
        since = None if period == "total" else until if period == "day" else until.replace(day=1)
        waiting = [
            w
            for w in self._outbox.pending_writes()
            if w.task == task and w.namespace == namespace and (since is None or since <= w.day <= until)
        ]
        checked = waiting[:_SPENT_CHECKS]  # past that, the rest count as not in Redis yet (never less than spent)
        ids = [w.id for w in checked]
        self._outbox.protect(ids)
        try:
            rows, present = await self._read(
                since, until, namespace=namespace, task=task, total=since is None, markers=ids
            )
        finally:
            self._outbox.unprotect(ids)
        in_redis = sum((row.total_cost for row in rows), Decimal(0))
        not_yet = [w.cost for w, found in zip(checked, present, strict=True) if not found]
        not_yet += [w.cost for w in waiting[_SPENT_CHECKS:]]
        return in_redis + sum(not_yet, Decimal(0))


def _days(since: date | None, until: date | None) -> list[date]:
    last = until or datetime.now(UTC).date()
    first = since or last - timedelta(days=_DEFAULT_DAYS - 1)
    if first > last:
        raise ConfigurationError(f"since ({first}) is after until ({last})")
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


async def read_ledger_async(
    redis_url: str | None = None,
    since: date | None = None,
    until: date | None = None,
    *,
    namespace: str | None = None,
    task: str | None = None,
    total: bool = False,
) -> list[LedgerRow]:
    """Read the spend ledger at `redis_url` (default `LLM_CACHE_REDIS_URL`); see `RedisSpendLedger.read`."""
    ledger = RedisSpendLedger(redis_url)
    return await ledger.read(since, until, namespace=namespace, task=task, total=total)


def read_ledger(
    redis_url: str | None = None,
    since: date | None = None,
    until: date | None = None,
    *,
    namespace: str | None = None,
    task: str | None = None,
    total: bool = False,
) -> list[LedgerRow]:
    """Synchronous `read_ledger_async`: rows per UTC day, namespace, task and model (all-time with `total=True`)."""
    return run_sync(read_ledger_async(redis_url, since, until, namespace=namespace, task=task, total=total))


_ledgers: weakref.WeakValueDictionary[int, RedisSpendLedger] = weakref.WeakValueDictionary()


def _flush_at_exit() -> None:
    """At exit, give buffered expenses a last chance (3 s in all), and say what could not be written."""
    deadline = time.monotonic() + _EXIT_FLUSH_SECONDS
    for ledger in list(_ledgers.values()):
        if not ledger._outbox.pending:
            continue
        remaining = deadline - time.monotonic()
        if remaining > 0:
            with contextlib.suppress(RedisError, OSError, RuntimeError, TimeoutError):  # the loop may be gone at exit
                run_sync(ledger.flush(max_wait=remaining))
        lost = ledger._outbox.pending_writes()
        if lost:
            logger.warning(
                "%d expense(s) ($%.6f) could not be written to the spend ledger at %s before the "
                "process exited, and are not in it",
                len(lost),
                sum((w.cost for w in lost), Decimal(0)),
                ledger.store.description,
            )


atexit.register(_flush_at_exit)  # registered after `_sync`'s, so it runs while the library's event loop still does
