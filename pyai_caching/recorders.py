"""Recording what each call spent (and what the cache saved), and per-task spend limits.

Two ways to hear about spend, both optional, on `cached_agent_run` / `cached_agent_run_sync`:

* `expense_recorder=`: the simple form, `(model: str, task_name: str, cost: float) -> None` (sync or async),
  called once per call with the USD cost of the model requests actually made (0.0 on a full hit);
* `expense_hook=`: the rich form, called once per call with an `Expense` (cost, saved cost, usage, hits, misses,
  retries, time, ...): a callable `(Expense) -> None` (sync or async), a recorder object with a
  `record(expense)` method (`LoggingRecorder`, `RedisSpendLedger`), or a list of them.

A recorder that raises is logged (`pyai_caching` logger) and ignored: the caller still gets its result and the
cache entry is still written. Recorders are awaited before the call returns, so keep them quick.

`RedisSpendLedger` adds every expense to per-day Redis hashes atomically, so any number of processes can share one;
`read_ledger` reads it back (the `pyai-caching spend` command uses it) and `TaskBudget` turns it into a per-task
spend limit that is checked before a cache miss calls the model (hits stay free).

## Ledger schema (version 1)

```
pyai_caching_ledger:{v1}:day:<YYYY-MM-DD>   hash, one per UTC day (the day the call started)
pyai_caching_ledger:{v1}:total              hash, all-time totals (same fields)
    field  <namespace>|<task>|<model>|<metric>        value  integer (HINCRBY)
```

`<model>` is `system:model_name` of the call's first request. `|` and `%` inside a name are written as `%7C` and
`%25`. Metrics: `cost_nusd` and `saved_nusd` (cost and savings in nano-USD, 1e-9 USD, so that sums are exact
integers), `calls`, `requests` (hits + misses), `hits`, `misses`, `unpriced_requests`, `unpriced_hits`, `errors`
(calls that raised). One expense is written with a single MULTI/EXEC transaction. The `{v1}` hash tag keeps every
ledger key on one Redis Cluster slot; the keys are outside the cache's `pyai_caching:` prefix, so clearing the cache
never clears the ledger.
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any, Final, Literal, Protocol
from urllib.parse import unquote

from pydantic_ai.usage import RunUsage

from ._sync import run_sync
from .exceptions import BudgetExceededError, ConfigurationError
from .stores.redis import RedisStore

if TYPE_CHECKING:
    from .semantic import SemanticMatch

__all__ = [
    "LEDGER_KEY_PREFIX",
    "Expense",
    "ExpenseHook",
    "ExpenseRecorder",
    "LedgerRow",
    "LoggingRecorder",
    "RedisSpendLedger",
    "SimpleExpenseRecorder",
    "TaskBudget",
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


@dataclass(frozen=True, kw_only=True)
class Expense:
    """What one `cached_agent_run` call spent, and what the cache saved it."""

    task_name: str
    """The call's `task_name`."""
    model: str
    """`system:model_name` of the call's first model request (made or served from the cache); `"unknown"` if the
    call failed before any request."""
    models: tuple[str, ...]
    """Every distinct model of the call, in order of first use."""
    namespace: str
    """The cache namespace of the call."""
    cost: Decimal | None
    """USD cost of the model requests actually sent: `0` on a full hit, `None` when requests were sent and none
    could be priced. When some but not all could, it is the known part (see `unpriced_requests`)."""
    cost_saved: Decimal | None
    """USD the cache hits saved, priced from the stored usage (custom prices win): `0` without hits, `None` when
    no hit could be priced. When some but not all could, it is the known part (see `unpriced_hits`)."""
    usage: RunUsage
    """Token usage of the requests actually sent."""
    saved_usage: RunUsage
    """Token usage the hits would have cost (from the stored responses)."""
    requests: int
    """Model requests of the call: `hits + misses`."""
    hits: int
    """Requests answered from the cache (for a whole-run hit: the requests the stored run took)."""
    misses: int
    """Requests sent to the model (and billed)."""
    unpriced_requests: int = 0
    """Requests sent whose cost is unknown."""
    unpriced_hits: int = 0
    """Hits whose saved cost is unknown."""
    attempts: int = 0
    """Attempts made at the requests sent, retries after rate limits included."""
    retry_wait: float = 0.0
    """Seconds spent waiting between retries."""
    run_level_hit: bool = False
    """The whole run was answered from one cache entry (the model and the agent graph were not involved)."""
    semantic_matches: tuple[SemanticMatch, ...] = ()
    """Of `hits`, those answered by a similar recorded prompt (`SemanticCache`): each with its similarity and
    the matched prompt. `to_dict()` leaves the prompts out (they may be personal data)."""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    """When the call started (UTC)."""
    duration: float = 0.0
    """Seconds the call took, recorders excluded."""
    error: str | None = None
    """The name of the exception the call raised (`"RateLimitError"`, ...), or `None` when it succeeded."""

    @property
    def cost_usd(self) -> float:
        """`cost` as a float (0.0 when unknown)."""
        return float(self.cost) if self.cost is not None else 0.0

    @property
    def cost_saved_usd(self) -> float:
        """`cost_saved` as a float (0.0 when unknown)."""
        return float(self.cost_saved) if self.cost_saved is not None else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (costs as floats or `None`, times as ISO 8601 / seconds)."""
        return {
            "task_name": self.task_name,
            "model": self.model,
            "models": list(self.models),
            "namespace": self.namespace,
            "cost": float(self.cost) if self.cost is not None else None,
            "cost_saved": float(self.cost_saved) if self.cost_saved is not None else None,
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "saved_input_tokens": self.saved_usage.input_tokens,
            "saved_output_tokens": self.saved_usage.output_tokens,
            "requests": self.requests,
            "hits": self.hits,
            "misses": self.misses,
            "unpriced_requests": self.unpriced_requests,
            "unpriced_hits": self.unpriced_hits,
            "attempts": self.attempts,
            "retry_wait": self.retry_wait,
            "run_level_hit": self.run_level_hit,
            "semantic_hits": len(self.semantic_matches),
            "semantic_similarities": [m.similarity for m in self.semantic_matches],
            "started_at": self.started_at.isoformat(),
            "duration": self.duration,
            "error": self.error,
        }


SimpleExpenseRecorder = Callable[[str, str, float], Awaitable[None] | None]
"""`expense_recorder=`: `(model, task_name, cost_usd) -> None`, sync or async."""


class ExpenseRecorder(Protocol):
    """A recorder object: anything with a `record(expense)` method, sync or async."""

    def record(self, expense: Expense) -> Awaitable[None] | None:
        """Record one expense."""
        ...


ExpenseHook = Callable[[Expense], Awaitable[None] | None] | ExpenseRecorder
"""`expense_hook=`: a callable taking an `Expense` (sync or async) or an `ExpenseRecorder`."""


async def call_maybe_async(function: Callable[..., Any], *args: Any) -> None:
    """Call a sync or async callable and await its result if it is awaitable."""
    result = function(*args)
    if inspect.isawaitable(result):
        await result


# --- built-in recorders --------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class LoggingRecorder:
    """Logs one line per call: task, model, cost, savings, hits and misses.

    The `Expense` is attached to the log record as `record.expense` (a JSON-ready dict) for structured logging.
    """

    logger: logging.Logger | str = "pyai_caching.spend"
    """The logger (or its name) to log to."""
    level: int = logging.INFO
    """The level of the lines."""

    def record(self, expense: Expense) -> None:
        """Log `expense`."""
        target = logging.getLogger(self.logger) if isinstance(self.logger, str) else self.logger
        if not target.isEnabledFor(self.level):
            return
        target.log(
            self.level,
            "task %s on %s: cost %s, saved %s, %d request(s) (%d hit(s), %d miss(es)) in %.3fs%s",
            expense.task_name,
            expense.model,
            _usd(expense.cost),
            _usd(expense.cost_saved),
            expense.requests,
            expense.hits,
            expense.misses,
            expense.duration,
            f", failed with {expense.error}" if expense.error else "",
            extra={"expense": expense.to_dict()},
        )


def _usd(value: Decimal | None) -> str:
    return "unknown" if value is None else f"${value:.6f}"


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
    """Adds every expense to per-day (and all-time) Redis hashes, atomically; see the module docstring for the schema.

    ```python
    ledger = RedisSpendLedger("redis://localhost:6379/0")
    await cached_agent_run(agent, prompt, "triage", expense_hook=ledger)
    rows = await ledger.read(since=date.today())
    ```

    Any number of processes may write to one ledger at once: each expense is one MULTI/EXEC of HINCRBY on integer
    fields (costs in nano-USD), so no increment is ever lost and sums are exact.
    """

    store: RedisStore
    """The Redis store whose connection pools are used (shared with the cache when the URL is the same)."""
    retention_days: int | None
    """Day hashes expire this many days after their last write; `None` keeps them (the default)."""

    def __init__(
        self, redis_url: str | None = None, *, store: RedisStore | None = None, retention_days: int | None = None
    ) -> None:
        """Args:
        redis_url: Redis URL; default `LLM_CACHE_REDIS_URL`.
        store: A `RedisStore` instead of a URL.
        retention_days: Expire day hashes after this many days (all-time totals never expire).
        """
        self.store = _redis_store(redis_url, store, "RedisSpendLedger")
        if retention_days is not None and (
            isinstance(retention_days, bool) or not isinstance(retention_days, int) or retention_days < 1
        ):
            raise ConfigurationError(
                f"retention_days must be a positive number of days or None, got {retention_days!r}"
            )
        self.retention_days = retention_days

    def __repr__(self) -> str:
        return f"RedisSpendLedger({self.store.description!r})"

    async def record(self, expense: Expense) -> None:
        """Add one expense to its day and to the all-time totals, in one transaction."""
        field_prefix = f"{_escape(expense.namespace)}|{_escape(expense.task_name)}|{_escape(expense.model)}|"
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
        day_key = _day_key(expense.started_at.astimezone(UTC).date())
        client = await self.store._client()
        async with client.pipeline(transaction=True) as pipe:
            for key in (day_key, _TOTAL_KEY):
                for metric, value in values.items():
                    if value:
                        pipe.hincrby(key, field_prefix + metric, value)
            if self.retention_days is not None:
                pipe.expire(day_key, self.retention_days * 86400)
            await pipe.execute()

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
        client = await self.store._client()
        if total:
            keys: list[tuple[date | None, str]] = [(None, _TOTAL_KEY)]
        else:
            days = _days(since, until)
            keys = [(day, _day_key(day)) for day in days]
        async with client.pipeline(transaction=False) as pipe:
            for _, key in keys:
                pipe.hgetall(key)
            results = await pipe.execute()
        rows: list[LedgerRow] = []
        for (day, _), raw in zip(keys, results, strict=True):
            rows.extend(_rows(day, raw, namespace=namespace, task=task))
        rows.sort(key=lambda r: (r.day or date.min, r.namespace, r.task, r.model))
        return rows

    async def spent(
        self,
        task: str,
        *,
        namespace: str = "default",
        period: Literal["day", "month", "total"] = "day",
        today: date | None = None,
    ) -> Decimal:
        """USD the task has spent in the namespace: today, this calendar month (UTC), or all time."""
        if period == "total":
            rows = await self.read(namespace=namespace, task=task, total=True)
        else:
            until = today or datetime.now(UTC).date()
            since = until if period == "day" else until.replace(day=1)
            rows = await self.read(since, until, namespace=namespace, task=task)
        return sum((row.cost for row in rows), Decimal(0))


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


# --- budgets -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, init=False)
class TaskBudget:
    """A spend limit for the call's task, checked against a `RedisSpendLedger` before a cache miss calls the model.

    ```python
    budget = TaskBudget(5.00, RedisSpendLedger("redis://localhost:6379/0"))  # $5 per task per UTC day
    await cached_agent_run(agent, prompt, "triage", budget=budget)
    ```

    When what the task has spent in the period (the ledger plus this call's own requests so far) has reached
    `limit_usd`, the model is not called and `BudgetExceededError` is raised. Hits stay free and keep working.
    Calls with a budget record their expenses in its ledger (it is added to the call's hooks if missing). The limit
    is soft: calls already past the check may overshoot it, and a request's cost is only known once it is made.
    """

    limit_usd: Decimal
    """The limit in USD (`0` allows cache hits only)."""
    ledger: RedisSpendLedger
    """Where spend is read from (and recorded to)."""
    period: Literal["day", "month", "total"]
    """`day` (UTC, default), `month` (UTC calendar month) or `total` (all time)."""
    on_ledger_error: Literal["allow", "deny"]
    """When the ledger cannot be read: `allow` (default: log a warning and call the model) or `deny` (raise
    `BudgetExceededError`)."""

    def __init__(
        self,
        limit_usd: float | int | str | Decimal,
        ledger: RedisSpendLedger,
        *,
        period: Literal["day", "month", "total"] = "day",
        on_ledger_error: Literal["allow", "deny"] = "allow",
    ) -> None:
        from .costs import _to_decimal

        object.__setattr__(self, "limit_usd", _to_decimal(limit_usd, "limit_usd").normalize())
        if not isinstance(ledger, RedisSpendLedger):
            raise ConfigurationError(f"ledger must be a RedisSpendLedger, got {type(ledger).__name__}")
        if period not in ("day", "month", "total"):
            raise ConfigurationError(f"period must be 'day', 'month' or 'total', got {period!r}")
        if on_ledger_error not in ("allow", "deny"):
            raise ConfigurationError(f"on_ledger_error must be 'allow' or 'deny', got {on_ledger_error!r}")
        object.__setattr__(self, "ledger", ledger)
        object.__setattr__(self, "period", period)
        object.__setattr__(self, "on_ledger_error", on_ledger_error)

    async def check(self, task_name: str, *, namespace: str, pending: Decimal = Decimal(0)) -> None:
        """Raise `BudgetExceededError` if the task's spend (ledger + `pending`) has reached the limit."""
        try:
            spent = await self.ledger.spent(task_name, namespace=namespace, period=self.period)
        except Exception as exc:
            if self.on_ledger_error == "deny":
                raise BudgetExceededError(
                    f"the spend ledger ({self.ledger.store.description}) could not be read "
                    f"({type(exc).__name__}) and the budget of task {task_name!r} denies calls then "
                    f"(on_ledger_error='deny')",
                    task_name=task_name,
                    spent=float("nan"),
                    limit=float(self.limit_usd),
                ) from exc
            logger.warning(
                "pyai_caching: the spend ledger (%s) could not be read (%s: %s); calling the model without "
                "checking the budget of task %r",
                self.ledger.store.description,
                type(exc).__name__,
                exc,
                task_name,
            )
            return
        total = spent + pending
        if total >= self.limit_usd:
            raise BudgetExceededError(
                f"task {task_name!r} (namespace {namespace!r}) has spent ${total:.6f} this {self._period_word()}, "
                f"reaching its budget of ${self.limit_usd}: the model was not called (cache hits still work). "
                f"Raise limit_usd or wait for the next period.",
                task_name=task_name,
                spent=float(total),
                limit=float(self.limit_usd),
            )

    def _period_word(self) -> str:
        return {"day": "day (UTC)", "month": "month (UTC)", "total": "period (all time)"}[self.period]
