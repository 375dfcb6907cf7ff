"""Per-call spend tracking for `cached_agent_run`: builds one `Expense` from the `CallRecord` and delivers it.

Kept out of the way of calls that record nothing: `SpendTracker.create` returns `None` when no recorder, hook or
budget was given, and the call then does no pricing or delivery work at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from pyai_caching.engine.context import CallRecord
from pyai_caching.engine.entries import RunEntry
from pyai_caching.exceptions import ConfigurationError
from pyai_caching.spend.budget_gate import BudgetGate
from pyai_caching.spend.costs import ModelCosts
from pyai_caching.spend.expense import Expense, ExpenseHook, SimpleExpenseRecorder, call_maybe_async

__all__ = ["SpendTracker", "check_hooks", "split_model_label"]

logger = logging.getLogger("pyai_caching")


def split_model_label(label: str) -> tuple[str | None, str]:
    """`"openai:gpt-4o"` -> `("openai", "gpt-4o")`; a label without a provider -> `(None, label)`."""
    system, sep, name = label.partition(":")
    return (system, name) if sep and name else (None, label)


def check_hooks(expense_hook: Any) -> tuple[ExpenseHook, ...]:
    """Validate `expense_hook=`: one hook or a sequence of them; each a callable or has a `record` method."""
    if expense_hook is None:
        return ()
    hooks = (
        tuple(expense_hook)
        if isinstance(expense_hook, Sequence) and not isinstance(expense_hook, str | bytes)
        else (expense_hook,)
    )
    for hook in hooks:
        if not callable(getattr(hook, "record", None)) and not callable(hook):
            raise ConfigurationError(
                f"expense_hook must be a callable taking an Expense, an object with a record(expense) method "
                f"(LoggingRecorder(), RedisSpendLedger(url)) or a list of them, got {type(hook).__name__}"
            )
    return hooks


def _hook_function(hook: ExpenseHook) -> Callable[[Expense], Any]:
    record = getattr(hook, "record", None)
    if callable(record):
        return record  # type: ignore[no-any-return]
    return hook  # type: ignore[return-value]


@dataclass(kw_only=True)
class SpendTracker:
    """Turns one call's `CallRecord` into an `Expense` and hands it to the call's recorders."""

    task_name: str
    """The call's task name."""
    namespace: str
    """The call's namespace."""
    custom_costs: Mapping[str, ModelCosts] | None
    """The call's own prices."""
    recorder: SimpleExpenseRecorder | None
    """`expense_recorder=`."""
    hooks: tuple[ExpenseHook, ...]
    """`expense_hook=` (plus the ledgers of the `TaskBudget`s)."""
    gate: BudgetGate | None = None
    """The call's budgets, charged at the end with what no request was charged with (embedding calls)."""
    deps: Any = None
    """The run's deps (for budgets per tenant computed from them)."""
    started: float = field(default_factory=time.monotonic)
    """`time.monotonic()` when the call started."""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    """Wall-clock start of the call."""

    @classmethod
    def create(
        cls,
        *,
        task_name: str,
        namespace: str,
        custom_costs: Mapping[str, ModelCosts] | None,
        expense_recorder: Any,
        expense_hook: Any,
        gate: BudgetGate | None,
        deps: Any = None,
    ) -> SpendTracker | None:
        """A tracker, or `None` when the call records nothing and has no budget (then no pricing work is done)."""
        if expense_recorder is not None and not callable(expense_recorder):
            raise ConfigurationError(
                f"expense_recorder must be a callable (model: str, task_name: str, cost: float) -> None, sync or "
                f"async, got {type(expense_recorder).__name__}"
            )
        hooks = check_hooks(expense_hook)
        for budget in gate.task_budgets if gate is not None else ():
            if not any(hook is budget.ledger for hook in hooks):
                hooks = (*hooks, budget.ledger)
        if expense_recorder is None and not hooks and (gate is None or not gate.shared):
            return None
        return cls(
            task_name=task_name,
            namespace=namespace,
            custom_costs=custom_costs,
            recorder=expense_recorder,
            hooks=hooks,
            gate=gate,
            deps=deps,
        )

    def note_run_hit(self, record: CallRecord, entry: RunEntry, saved: Decimal | None) -> None:
        """Fill `record` for a call answered by a whole-run entry, which saved `saved` USD (priced by the
        capability's one rule, `ResponseCache.saved_cost`; `None`: unknown)."""
        record.run_level_hit = True
        record.hits += max(entry.meta.requests, 1)
        record.saved_usage.incr(entry.usage)
        record.models.append(entry.meta.model)
        if saved is None:
            record.unpriced_hits += max(entry.meta.requests, 1)
        else:
            record.saved_cost += saved

    def expense(self, record: CallRecord, error: BaseException | None = None) -> Expense:
        """The `Expense` of the call described by `record`."""
        models = tuple(dict.fromkeys(record.models))
        cost: Decimal | None = record.cost
        if record.misses and record.unpriced_requests >= record.misses:
            cost = None
        saved: Decimal | None = record.saved_cost
        if record.hits and record.unpriced_hits >= record.hits:
            saved = None
        return Expense(
            task_name=self.task_name,
            model=models[0] if models else "unknown",
            models=models,
            namespace=self.namespace,
            cost=cost,
            cost_saved=saved,
            usage=record.usage,
            saved_usage=record.saved_usage,
            requests=record.hits + record.misses,
            hits=record.hits,
            misses=record.misses,
            unpriced_requests=record.unpriced_requests,
            unpriced_hits=record.unpriced_hits,
            attempts=max(record.attempts, record.misses),
            retry_wait=record.retry_wait,
            run_level_hit=record.run_level_hit,
            embedding_calls=record.embedding_calls,
            embedding_tokens=record.embedding_tokens,
            embedding_cost=record.embedding_cost,
            unpriced_embedding_calls=record.unpriced_embedding_calls,
            semantic_matches=tuple(record.semantic_matches),
            started_at=self.started_at,
            duration=time.monotonic() - self.started,
            error=type(error).__name__ if error is not None else None,
        )

    async def deliver(self, record: CallRecord, error: BaseException | None = None) -> None:
        """Charge the budgets with what is left, then hand the call's expense to every recorder; a recorder that
        raises is logged and skipped (its errors are the caller's code, not the call's)."""
        if self.gate is not None:
            await self.gate.charge_leftovers(record, self.deps)
        expense = self.expense(record, error)
        if self.recorder is not None:
            try:
                await call_maybe_async(self.recorder, expense.model, expense.task_name, float(expense.total_cost or 0))
            except Exception:
                logger.warning(
                    "expense_recorder %r failed for task %r; the call's result is returned anyway",
                    self.recorder,
                    self.task_name,
                    exc_info=True,
                )
        for hook in self.hooks:
            try:
                await call_maybe_async(_hook_function(hook), expense)
            except Exception:
                logger.warning(
                    "expense hook %r failed for task %r; the call's result is returned anyway",
                    hook,
                    self.task_name,
                    exc_info=True,
                )
