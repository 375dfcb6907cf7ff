"""`RedisSpendLedger`: every expense added to per-day Redis hashes exactly once, across Redis outages and restarts.

## Schema (version 1)

```
pyai_caching_ledger:{v1}:day:<YYYY-MM-DD>   hash, one per UTC day (the day the call started)
pyai_caching_ledger:{v1}:total              hash, all-time totals (same fields)
    field  <namespace>|<task>|<model>|<metric>        value  integer (HINCRBY)
pyai_caching_ledger:{v1}:applied:<id>       string "1": expense <id> has been added (expires after 7 days)
```

`<model>` is `system:model_name` of the call's first request. `|` and `%` inside a name are written as `%7C` and
`%25`. Metrics: `cost_nusd` and `saved_nusd` (cost and savings in nano-USD, 1e-9 USD, so that sums are exact
integers), `calls`, `requests` (hits + misses), `hits`, `misses`, `unpriced_requests`, `unpriced_hits`, `errors`
(calls that raised). The `{v1}` hash tag keeps every ledger key on one Redis Cluster slot; the keys are outside the
cache's `pyai_caching:` prefix, so clearing the cache never clears the ledger.

## Exactly once

Each expense gets a random id and is added by one Lua script (`_APPLY`) that first sets its `applied:<id>` marker
with `SET NX` and adds the increments only if the marker was not there: atomic, so an expense is either wholly in
the ledger or not at all, and a write sent again after its reply was lost is recognized and skipped. A write that
fails or times out is kept in memory (`_ledger_outbox.Outbox`, bounded by `max_pending`) and sent again, with
backoff, until Redis confirms it; while Redis is down, new expenses go straight to that buffer without waiting for
a timeout. Markers are only needed while a reply is unknown: each write also deletes the markers of up to 32 writes
already confirmed, so the ledger does not keep one key per call; the markers of the last writes of a process
expire after 7 days. One warning is logged when an outage starts and one when the buffer has been written.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any, Final, Literal
from urllib.parse import unquote

from redis.exceptions import RedisError, ResponseError

from ._ledger_outbox import LedgerWrite, Outage, Outbox
from ._redact import redact_url_in_text
from ._scrub import scrub_text
from ._sync import run_sync
from .exceptions import ConfigurationError
from .stores.redis import RedisStore

if TYPE_CHECKING:
    from .recorders import Expense

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

LEDGER_KEY_PREFIX: Final = "pyai_caching_ledger:{v1}:"
"""Every ledger key starts with this (outside the cache's `pyai_caching:` prefix)."""

_NANO: Final = Decimal(10) ** 9
LEDGER_COUNTS: Final = (
    "calls",
    "requests",
    "hits",
    "misses",
    "unpriced_requests",
    "unpriced_hits",
    "errors",
)
"""The whole-number sums the ledger keeps per field (besides cost and savings, kept in nano-USD)."""
_METRICS: Final = ("cost_nusd", "saved_nusd", *LEDGER_COUNTS)
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

# KEYS: the day hash, the total hash, this expense's marker, then markers of confirmed writes to forget.
# ARGV: marker TTL (s), day TTL (s, 0: none), the field prefix, then (metric, increment) pairs.
# Every command is in the documented minimal ACL rule; every key shares the {v1} hash tag (one Cluster slot).
_APPLY: Final = """
if redis.acl_check_cmd then
  -- Redis does not undo a script's writes when a later command fails: refuse before writing anything
  local needed = {{'SET', KEYS[3], '1', 'NX', 'EX', '1'}, {'HINCRBY', KEYS[1], 'f', '1'},
    {'HINCRBY', KEYS[2], 'f', '1'}}
  if ARGV[2] ~= '0' then needed[#needed + 1] = {'EXPIRE', KEYS[1], ARGV[2]} end
  for _, command in ipairs(needed) do
    if not redis.acl_check_cmd(unpack(command)) then
      return redis.error_reply('NOPERM this user may not run ' .. command[1] .. ' on ' .. command[2])
    end
  end
end
for i = 4, #KEYS do redis.call('DEL', KEYS[i]) end
for i = 1, 2 do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind ~= 'hash' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. kind .. ', not a ledger hash')
  end
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 4, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[3] .. ARGV[i], ARGV[i + 1])
  redis.call('HINCRBY', KEYS[2], ARGV[3] .. ARGV[i], ARGV[i + 1])
end
if ARGV[2] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


def _redis_store(redis_url: str | None, store: RedisStore | None, what: str) -> RedisStore:
    if store is not None:
        if redis_url is not None:
            raise ConfigurationError(f"{what}: pass either redis_url= or store=, not both")
        if not isinstance(store, RedisStore):
            raise ConfigurationError(f"{what}: store must be a RedisStore, got {type(store).__name__}")
        return store
    from ._registry import REDIS_URL_ENV, resolve_store

    url = redis_url or os.environ.get(REDIS_URL_ENV)
    if not url:
        raise ConfigurationError(
            f"{what} needs Redis: pass redis_url='redis://...' or set {REDIS_URL_ENV} (the embedded store cannot "
            f"hold a ledger shared by several processes)"
        )
    resolve_store(url)  # validates the URL (ConfigurationError without the password)
    with _ledger_stores_lock:
        found = _ledger_stores.get(url)
        if found is None:
            # The ledger is bookkeeping, not the hot path: it waits longer than the cache's fail-fast 0.5 s before it
            # gives up on an increment (a lost increment is a wrong total; a slow one only delays the caller).
            found = _ledger_stores[url] = RedisStore(url, socket_timeout=5.0, connect_timeout=2.0)
    return found


_ledger_stores_lock = threading.Lock()
_ledger_stores: dict[str, RedisStore] = {}


def _escape(name: str) -> str:
    return name.replace("%", "%25").replace("|", "%7C")


def _nano(value: Decimal | None) -> int:
    if value is None:
        return 0
    return int((value * _NANO).to_integral_value(rounding=ROUND_HALF_EVEN))


def _day_key(day: date) -> str:
    return f"{LEDGER_KEY_PREFIX}day:{day.isoformat()}"


_TOTAL_KEY: Final = f"{LEDGER_KEY_PREFIX}total"


def _applied_key(write_id: str) -> str:
    return f"{LEDGER_KEY_PREFIX}applied:{write_id}"


def _ledger_write(expense: Expense) -> LedgerWrite:
    """The write of one expense (pure): its increments, keyed by namespace, task and model."""
    values = {
        "cost_nusd": _nano(expense.cost),
        "saved_nusd": _nano(expense.cost_saved),
        "calls": 1,
        "requests": expense.requests,
        "hits": expense.hits,
        "misses": expense.misses,
        "unpriced_requests": expense.unpriced_requests,
        "unpriced_hits": expense.unpriced_hits,
        "errors": 1 if expense.error else 0,
    }
    return LedgerWrite(
        id=uuid.uuid4().hex,
        day=expense.started_at.astimezone(UTC).date(),
        namespace=expense.namespace,
        task=expense.task_name,
        field_prefix=f"{_escape(expense.namespace)}|{_escape(expense.task_name)}|{_escape(expense.model)}|",
        values=tuple(values[metric] for metric in _METRICS),
        cost=expense.cost or Decimal(0),
    )


_foreign_keys: set[str] = set()
"""Ledger keys found holding something else (warned about once)."""


def _wrong_type(error: Exception) -> bool:
    return isinstance(error, ResponseError) and "WRONGTYPE" in str(error)


def _error_text(error: BaseException) -> str:
    return scrub_text(redact_url_in_text(f"{type(error).__name__}: {error}"))[:300]


@dataclass(frozen=True, kw_only=True)
class LedgerStatus:
    """What one `RedisSpendLedger` object has written, and what it still holds in memory."""

    pending: int
    """Expenses Redis has not confirmed yet: being written, or buffered during an outage."""
    written: int
    """Expenses Redis confirmed it added."""
    buffered: int
    """Expenses that had to wait in the buffer (a failed or timed-out write, or an outage)."""
    duplicates: int
    """Buffered expenses Redis had already added (their reply was lost): skipped, not counted twice."""
    dropped: int
    """Expenses lost because the buffer was full (`max_pending`)."""
    dropped_cost: Decimal
    """Their known cost in USD."""
    down_since: float | None
    """`time.monotonic()` when the current outage started, or `None` while Redis answers."""


@dataclass(frozen=True, kw_only=True)
class LedgerRow:
    """The ledger's sums for one namespace, task and model on one day (or all time)."""

    day: date | None
    """The UTC day, or `None` for all-time totals."""
    namespace: str
    """The cache namespace."""
    task: str
    """The task name."""
    model: str
    """`system:model_name`."""
    cost: Decimal = Decimal(0)
    """USD spent on model requests (known prices only; see `unpriced_requests`)."""
    saved: Decimal = Decimal(0)
    """USD the cache saved (known prices only; see `unpriced_hits`)."""
    calls: int = 0
    """`cached_agent_run` calls."""
    requests: int = 0
    """Model requests (hits + misses)."""
    hits: int = 0
    """Requests answered from the cache."""
    misses: int = 0
    """Requests sent to the model."""
    unpriced_requests: int = 0
    """Requests sent whose cost was unknown."""
    unpriced_hits: int = 0
    """Hits whose saved cost was unknown."""
    errors: int = 0
    """Calls that raised."""


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
        self.store = _redis_store(redis_url, store, "RedisSpendLedger")
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
        write = _ledger_write(expense)
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
        """Run `_APPLY` for `write`: `True` if it was added now, `False` if an earlier attempt had added it."""
        forget = self._outbox.confirmed_to_forget()
        keys = [_day_key(write.day), _TOTAL_KEY, _applied_key(write.id), *map(_applied_key, forget)]
        day_ttl = self.retention_days * 86400 if self.retention_days is not None else 0
        args: list[str | int] = [APPLIED_TTL, day_ttl, write.field_prefix]
        for metric, value in zip(_METRICS, write.values, strict=True):
            if value:
                args += [metric, value]
        try:
            client = await self.store._client()
            return bool(await client.register_script(_APPLY)(keys=keys, args=args))
        except BaseException:
            self._outbox.forget_later(forget)  # deleting a marker twice is harmless; never deleting it is not
            raise

    def _failed(self, writes: list[LedgerWrite], error: BaseException) -> None:
        if self._outbox.failed(writes):
            logger.warning(
                "the spend ledger at %s cannot be written (%s); expenses wait in memory (at most %d) "
                "and are written, each once, when Redis is back",
                self.store.description,
                _error_text(error),
                self.max_pending,
            )
        else:
            logger.debug("spend ledger write failed on %s: %s", self.store.description, _error_text(error))
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
        client = await self.store._client()
        if total:
            keys: list[tuple[date | None, str]] = [(None, _TOTAL_KEY)]
        else:
            keys = [(day, _day_key(day)) for day in _days(since, until)]
        async with client.pipeline(transaction=bool(markers)) as pipe:
            for _, key in keys:
                pipe.hgetall(key)
            for write_id in markers:
                pipe.get(_applied_key(write_id))
            results = await pipe.execute(raise_on_error=False)
        for result in results:
            if isinstance(result, Exception) and not _wrong_type(result):
                raise result
        rows: list[LedgerRow] = []
        for (day, key), raw in zip(keys, results[: len(keys)], strict=True):
            if isinstance(raw, Exception):  # not a hash: not ours (written by something else), skipped
                log = logger.debug if key in _foreign_keys else logger.warning
                _foreign_keys.add(key)
                log("the spend ledger key %s is not a hash; it is skipped", key)
                continue
            rows.extend(_rows(day, raw, namespace=namespace, task=task))
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
        in_redis = sum((row.cost for row in rows), Decimal(0))
        not_yet = [w.cost for w, found in zip(checked, present, strict=True) if not found]
        not_yet += [w.cost for w in waiting[_SPENT_CHECKS:]]
        return in_redis + sum(not_yet, Decimal(0))


def _days(since: date | None, until: date | None) -> list[date]:
    last = until or datetime.now(UTC).date()
    first = since or last - timedelta(days=_DEFAULT_DAYS - 1)
    if first > last:
        raise ConfigurationError(f"since ({first}) is after until ({last})")
    return [first + timedelta(days=n) for n in range((last - first).days + 1)]


def _rows(day: date | None, raw: Mapping[Any, Any], *, namespace: str | None, task: str | None) -> list[LedgerRow]:
    grouped: dict[tuple[str, str, str], dict[str, int]] = {}
    for raw_field, raw_value in raw.items():
        name = raw_field.decode("utf-8", "replace") if isinstance(raw_field, bytes) else str(raw_field)
        parts = name.split("|")
        if len(parts) != 4 or parts[3] not in _METRICS:
            continue  # a field of a newer schema, or not ours
        ns, task_name, model = (unquote(p) for p in parts[:3])
        if (namespace is not None and ns != namespace) or (task is not None and task_name != task):
            continue
        try:
            value = int(raw_value)
        except (TypeError, ValueError):
            continue
        grouped.setdefault((ns, task_name, model), {})[parts[3]] = value
    rows = []
    for (ns, task_name, model), metrics in grouped.items():
        rows.append(
            LedgerRow(
                day=day,
                namespace=ns,
                task=task_name,
                model=model,
                cost=Decimal(metrics.get("cost_nusd", 0)) / _NANO,
                saved=Decimal(metrics.get("saved_nusd", 0)) / _NANO,
                calls=metrics.get("calls", 0),
                requests=metrics.get("requests", 0),
                hits=metrics.get("hits", 0),
                misses=metrics.get("misses", 0),
                unpriced_requests=metrics.get("unpriced_requests", 0),
                unpriced_hits=metrics.get("unpriced_hits", 0),
                errors=metrics.get("errors", 0),
            )
        )
    return rows


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
            with contextlib.suppress(Exception):
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
