"""pyai_caching: response caching, rate-limit retries and spend tracking for PydanticAI agents.

Names are imported lazily (on first attribute access), so `import pyai_caching` — and the pytest plugin and CLI
that load it — stay cheap until something is actually used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._version import __version__

if TYPE_CHECKING:
    from .api import cached_agent_run, cached_agent_run_sync, clear_cache, clear_cache_async
    from .capability import DEFAULT_TTL, ResponseCache
    from .costs import ModelCosts
    from .exceptions import (
        BudgetExceededError,
        CacheError,
        CacheMissError,
        ConfigurationError,
        PyAICachingError,
        RateLimitError,
    )
    from .recorders import (
        Expense,
        LedgerRow,
        LoggingRecorder,
        RedisSpendLedger,
        TaskBudget,
        read_ledger,
        read_ledger_async,
    )
    from .retry import RetryingModel, RetryPolicy
    from .semantic import SemanticCache, SemanticMatch
    from .stores import LocalStore, MemoryStore, RedisStore, Store
    from .types import CacheMode

_EXPORTS: dict[str, str] = {
    "cached_agent_run": "api",
    "cached_agent_run_sync": "api",
    "clear_cache": "api",
    "clear_cache_async": "api",
    "DEFAULT_TTL": "capability",
    "ResponseCache": "capability",
    "ModelCosts": "costs",
    "BudgetExceededError": "exceptions",
    "CacheError": "exceptions",
    "CacheMissError": "exceptions",
    "ConfigurationError": "exceptions",
    "PyAICachingError": "exceptions",
    "RateLimitError": "exceptions",
    "Expense": "recorders",
    "LedgerRow": "recorders",
    "LoggingRecorder": "recorders",
    "RedisSpendLedger": "recorders",
    "TaskBudget": "recorders",
    "read_ledger": "recorders",
    "read_ledger_async": "recorders",
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
