"""Recording what each call spent (and what the cache saved), and per-task spend limits.

Two ways to hear about spend, both optional, on `cached_agent_run` / `cached_agent_run_sync`:

* `expense_recorder=`: the simple form, `(model: str, task_name: str, cost: float) -> None` (sync or async),
  called once per call with the USD cost of the model requests actually made (0.0 on a full hit);
* `expense_hook=`: the rich form, called once per call with an `Expense` (cost, saved cost, usage, hits, misses,
  retries, time, ...): a callable `(Expense) -> None` (sync or async), a recorder object with a
  `record(expense)` method (`LoggingRecorder`, `RedisSpendLedger`), or a list of them.

A recorder that raises is logged (`pyai_caching` logger) and ignored: the caller still gets its result and the
cache entry is still written. Recorders are awaited before the call returns, so keep them quick.

`RedisSpendLedger` (in `pyai_caching.spend.ledger`, re-exported here) adds every expense to per-day Redis hashes exactly
once, so any number of processes can share one, across Redis outages and restarts; `read_ledger` reads it back
(the `pyai-caching spend` command uses it) and `TaskBudget` turns it into a per-task spend limit that is checked
before a cache miss calls the model (hits stay free).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Literal, Protocol

from pydantic_ai.usage import RunUsage

from pyai_caching.exceptions import BudgetExceededError, ConfigurationError
from pyai_caching.spend.ledger import (
    LEDGER_COUNTS,
    LEDGER_KEY_PREFIX,
    LedgerRow,
    LedgerStatus,
    RedisSpendLedger,
    _error_text,
    read_ledger,
    read_ledger_async,
)

if TYPE_CHECKING:
    from pyai_caching.engine.context import SemanticMatch

__all__ = [
    "LEDGER_COUNTS",
    "LEDGER_KEY_PREFIX",
    "Expense",
    "ExpenseHook",
    "ExpenseRecorder",
    "LedgerRow",
    "LedgerStatus",
    "LoggingRecorder",
    "RedisSpendLedger",
    "SimpleExpenseRecorder",
    "TaskBudget",
    "read_ledger",
    "read_ledger_async",
]

logger = logging.getLogger("pyai_caching")


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
        from pyai_caching.spend.costs import _to_decimal

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
        ledger = self.ledger
        try:
            spent = await ledger.spent(task_name, namespace=namespace, period=self.period)
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
            log = logger.debug if ledger._read_failing else logger.warning  # once per outage, not once per call
            ledger._read_failing = True
            log(
                "the spend ledger (%s) could not be read (%s); calling the model without checking "
                "the budget of task %r (and of any task, until it can be read again)",
                ledger.store.description,
                _error_text(exc),
                task_name,
            )
            return
        if ledger._read_failing:
            ledger._read_failing = False
            logger.warning("the spend ledger (%s) can be read again; budgets apply", ledger.store.description)
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
