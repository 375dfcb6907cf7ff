"""pyai_caching: response caching, rate-limit retries and spend tracking for PydanticAI agents.

Names are imported lazily (on first attribute access), so `import pyai_caching` — and the pytest plugin and CLI
that load it — stay cheap until something is actually used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from pyai_caching._version import __version__

if TYPE_CHECKING:
    from pyai_caching.api import cached_agent_run, cached_agent_run_sync, clear_cache, clear_cache_async
    from pyai_caching.capability import DEFAULT_TTL, ResponseCache
    from pyai_caching.exceptions import (
        BudgetExceededError,
        CacheError,
        CacheMissError,
        ConfigurationError,
        PyAICachingError,
        RateLimitError,
    )
    from pyai_caching.retry import RetryingModel, RetryPolicy
    from pyai_caching.semantic import SemanticCache, SemanticMatch
    from pyai_caching.spend.budget import Budget
    from pyai_caching.spend.budget_usage import BudgetUsage, read_budget_usage, read_budget_usage_async
    from pyai_caching.spend.costs import ModelCosts
    from pyai_caching.spend.recorders import (
        Expense,
        LedgerRow,
        LoggingRecorder,
        RedisSpendLedger,
        TaskBudget,
        read_ledger,
        read_ledger_async,
    )
    from pyai_caching.stores import LocalStore, MemoryStore, RedisStore, Store
    from pyai_caching.types import CacheMode

_EXPORTS: dict[str, str] = {
    "cached_agent_run": "api",
    "cached_agent_run_sync": "api",
    "clear_cache": "api",
    "clear_cache_async": "api",
    "DEFAULT_TTL": "capability",
    "ResponseCache": "capability",
    "ModelCosts": "spend.costs",
    "BudgetExceededError": "exceptions",
    "CacheError": "exceptions",
    "CacheMissError": "exceptions",
    "ConfigurationError": "exceptions",
    "PyAICachingError": "exceptions",
    "RateLimitError": "exceptions",
    "Expense": "spend.recorders",
    "LedgerRow": "spend.recorders",
    "LoggingRecorder": "spend.recorders",
    "RedisSpendLedger": "spend.recorders",
    "TaskBudget": "spend.recorders",
    "Budget": "spend.budget",
    "BudgetUsage": "spend.budget_usage",
    "read_budget_usage": "spend.budget_usage",
    "read_budget_usage_async": "spend.budget_usage",
    "read_ledger": "spend.recorders",
    "read_ledger_async": "spend.recorders",
    "RetryingModel": "retry",
    "RetryPolicy": "retry",
    "SemanticCache": "semantic",
    "SemanticMatch": "semantic",
    "LocalStore": "stores",
    "MemoryStore": "stores",
    "RedisStore": "stores",
    "Store": "stores",
    "CacheMode": "types",
}

__all__ = [
    "__version__",
    "cached_agent_run",
    "cached_agent_run_sync",
    "clear_cache",
    "clear_cache_async",
    "DEFAULT_TTL",
    "ResponseCache",
    "ModelCosts",
    "BudgetExceededError",
    "CacheError",
    "CacheMissError",
    "ConfigurationError",
    "PyAICachingError",
    "RateLimitError",
    "Expense",
    "LedgerRow",
    "LoggingRecorder",
    "RedisSpendLedger",
    "TaskBudget",
    "Budget",
    "BudgetUsage",
    "read_budget_usage",
    "read_budget_usage_async",
    "read_ledger",
    "read_ledger_async",
    "RetryingModel",
    "RetryPolicy",
    "SemanticCache",
    "SemanticMatch",
    "LocalStore",
    "MemoryStore",
    "RedisStore",
    "Store",
    "CacheMode",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'pyai_caching' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
