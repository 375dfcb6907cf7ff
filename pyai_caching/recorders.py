"""Spend records, ledgers and budgets (moved to `pyai_caching.spend`; kept importable)."""

from pyai_caching.spend.recorders import (
    LEDGER_COUNTS,
    LEDGER_KEY_PREFIX,
    Expense,
    ExpenseHook,
    ExpenseRecorder,
    LedgerRow,
    LedgerStatus,
    LoggingRecorder,
    RedisSpendLedger,
    SimpleExpenseRecorder,
    TaskBudget,
    read_ledger,
    read_ledger_async,
)

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
