"""`TaskBudget`: a spend limit per task, read from a `RedisSpendLedger` before a cache miss calls the model."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from pyai_caching.exceptions import BudgetExceededError, ConfigurationError
from pyai_caching.spend.costs import to_decimal
from pyai_caching.spend.ledger import RedisSpendLedger
from pyai_caching.spend.ledger_schema import error_text
from pyai_caching.spend.outages import MAYBE_OUTAGE, is_outage
from pyai_caching.spend.periods import resets_at

__all__ = ["TaskBudget"]

logger = logging.getLogger("pyai_caching")


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
    For a hard limit shared atomically by every process, per day or month and per tenant, use `Budget`.
    """

    limit_usd: Decimal
    """The limit in USD (`0` allows cache hits only)."""
    ledger: RedisSpendLedger
    """Where spend is read from (and recorded to)."""
    period: Literal["day", "month", "total"]
    """`day` (UTC, default), `month` (UTC calendar month) or `total` (all time)."""
    on_ledger_error: Literal["allow", "deny"]
    """When the ledger cannot be read (Redis down, unreachable or timing out): `allow` (default: log a warning once
    per outage and call the model) or `deny` (raise `BudgetExceededError`). Any other error (a bug) is raised: a
    budget never lets a call through because of one."""

    def __init__(
        self,
        limit_usd: float | int | str | Decimal,
        ledger: RedisSpendLedger,
        *,
        period: Literal["day", "month", "total"] = "day",
        on_ledger_error: Literal["allow", "deny"] = "allow",
    ) -> None:
        object.__setattr__(self, "limit_usd", to_decimal(limit_usd, "limit_usd", unit="USD").normalize())
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
        now = datetime.now(UTC)
        try:
            spent = await ledger.spent(task_name, namespace=namespace, period=self.period, today=now.date())
        except MAYBE_OUTAGE as exc:
            if not is_outage(exc):
                raise
            if self.on_ledger_error == "deny":
                raise BudgetExceededError(
                    f"the spend ledger ({ledger.store.description}) could not be read ({type(exc).__name__}) and "
                    f"the budget of task {task_name!r} denies calls then (on_ledger_error='deny')",
                    task_name=task_name,
                    spent=float("nan"),
                    limit=float(self.limit_usd),
                    period=self.period,
                    tenant=task_name,
                    resets_at=resets_at(self.period, now),
                ) from exc
            log = logger.warning if ledger.note_read(failed=True) else logger.debug  # once per outage
            log(
                "the spend ledger (%s) could not be read (%s); calling the model without checking "
                "the budget of task %r (and of any task, until it can be read again)",
                ledger.store.description,
                error_text(exc),
                task_name,
            )
            return
        if ledger.note_read(failed=False):
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
                period=self.period,
                tenant=task_name,
                resets_at=resets_at(self.period, now),
            )

    def _period_word(self) -> str:
        return {"day": "day (UTC)", "month": "month (UTC)", "total": "period (all time)"}[self.period]
