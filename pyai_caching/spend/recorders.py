"""Built-in recorders (`LoggingRecorder`), and the spend names as they were importable before the move.

A recorder that raises is logged (`pyai_caching` logger) and ignored: the caller still gets its result and the
cache entry is still written. Recorders are awaited before the call returns, so keep them quick. See
`pyai_caching.spend.expense` for the hooks' shapes, `ledger` for `RedisSpendLedger`, `task_budget` and `budget` for
the spend limits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from decimal import Decimal

from pyai_caching.spend.budget import Budget
from pyai_caching.spend.budget_usage import BudgetUsage, read_budget_usage, read_budget_usage_async
from pyai_caching.spend.expense import Expense, ExpenseHook, ExpenseRecorder, SimpleExpenseRecorder
from pyai_caching.spend.ledger import RedisSpendLedger, read_ledger, read_ledger_async
from pyai_caching.spend.ledger_schema import LEDGER_COUNTS, LEDGER_KEY_PREFIX, LedgerRow, LedgerStatus
from pyai_caching.spend.task_budget import TaskBudget

__all__ = [
    "LEDGER_COUNTS",
    "LEDGER_KEY_PREFIX",
    "Budget",
    "BudgetUsage",
    "Expense",
    "ExpenseHook",
    "ExpenseRecorder",
    "LedgerRow",
    "LedgerStatus",
    "LoggingRecorder",
    "RedisSpendLedger",
    "SimpleExpenseRecorder",
    "TaskBudget",
    "read_budget_usage",
    "read_budget_usage_async",
    "read_ledger",
    "read_ledger_async",
]


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
            _usd(expense.total_cost),
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
