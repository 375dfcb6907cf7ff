"""The exceptions pyai_caching raises, all rooted in one base class.

```
PyAICachingError
├── ConfigurationError   (also a ValueError) bad URL, bad option, bad argument: raised before any model call
├── CacheError           a cache operation failed and the caller asked for errors to raise (on_cache_error="raise")
├── CacheMissError       a read-only (or replay-only) call found no entry: the model was not called
├── RateLimitError       the retry budget (max_wait) ran out; `__cause__` is the provider's last error
└── BudgetExceededError  a spend limit (per task, or per period and tenant) was reached before a model call
```

pydantic-ai's own exceptions (`ModelHTTPError`, `UsageLimitExceeded`, `UnexpectedModelBehavior`, ...) are
re-raised unchanged.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

__all__ = [
    "BudgetExceededError",
    "CacheError",
    "CacheMissError",
    "ConfigurationError",
    "PyAICachingError",
    "RateLimitError",
]


class PyAICachingError(Exception):
    """Base class of every exception raised by pyai_caching.

    Every one of them survives pickling (`pickle.loads(pickle.dumps(error))`: same class, message and fields), as
    worker pools (`ProcessPoolExecutor`, multiprocessing, Celery) send a worker's exception back to the parent.
    """

    def __reduce__(self) -> tuple[Any, ...]:
        # The default rebuilds an exception by calling `cls(*args)`, which fails for the keyword-only fields of the
        # subclasses: rebuild it from its arguments without `__init__`, then restore every attribute.
        return (_rebuild, (type(self), self.args), self.__dict__)


class ConfigurationError(PyAICachingError, ValueError):
    """A configuration value (URL, option, argument) is invalid.

    Raised before the model is called. The message names the offending argument and how to fix it, and never
    contains a password or API key.
    """


class CacheError(PyAICachingError):
    """A cache operation (read, write, lock, clear) failed.

    Only raised when the caller chose `on_cache_error="raise"`; by default the cache fails open and the call
    returns the model's answer.
    """

    def __init__(self, message: str, *, operation: str | None = None, store: str | None = None) -> None:
        super().__init__(message)
        self.operation = operation
        """The operation that failed (`get`, `set`, `delete`, `clear`, `lock`), if known."""
        self.store = store
        """A description of the store (never with a password), if known."""


class CacheMissError(PyAICachingError):
    """No cached response matched and the cache mode forbids calling the model (`read_only`, replay)."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key
        """The cache key that was looked up."""


class RateLimitError(PyAICachingError):
    """The provider kept rate-limiting (or was unavailable) until the retry budget ran out.

    The provider's last error is chained as `__cause__`.
    """

    def __init__(self, message: str, *, attempts: int, waited: float) -> None:
        super().__init__(message)
        self.attempts = attempts
        """How many attempts were made, the first one included."""
        self.waited = waited
        """Seconds spent waiting between attempts."""


class BudgetExceededError(PyAICachingError):
    """A spend limit was reached: the model was not called. Cache hits stay free and keep working.

    Raised by a `TaskBudget` (per task) or a `Budget` (per period and tenant); the fields say which limit, what was
    spent and when it resets.
    """

    def __init__(
        self,
        message: str,
        *,
        task_name: str,
        spent: float,
        limit: float,
        budget: str = "TaskBudget",
        unit: Literal["usd", "tokens"] = "usd",
        period: Literal["day", "month", "total"] | None = None,
        tenant: str | None = None,
        resets_at: datetime | None = None,
        reserved: float = 0.0,
    ) -> None:
        super().__init__(message)
        self.task_name = task_name
        """The task of the call that was refused."""
        self.spent = spent
        """What was spent in the limit's period, in its unit (USD, or tokens for a tokens budget); `nan` when it
        could not be read."""
        self.limit = limit
        """The configured limit, in the same unit."""
        self.budget = budget
        """Which limit was reached: a `Budget`'s name, or `"TaskBudget"`."""
        self.unit = unit
        """`"usd"` or `"tokens"`."""
        self.period = period
        """`"day"` or `"month"` (UTC calendar periods) or `"total"` (never resets)."""
        self.tenant = tenant
        """The tenant whose limit was reached (a namespace, a task, or the key computed from the deps); `None` for a
        limit shared by every call."""
        self.resets_at = resets_at
        """When the period ends and the limit starts again from zero (UTC midnight, or the first of the next
        month); `None` when it never resets."""
        self.reserved = reserved
        """Of the limit, the amount held by model requests in flight (reserved before they were sent, settled with
        their real cost when they answer), in the limit's unit."""


def _rebuild(cls: type[PyAICachingError], args: tuple[Any, ...]) -> PyAICachingError:
    """An exception of class `cls` with `args`, made without its `__init__` (its fields are restored after)."""
    error = cls.__new__(cls, *args)
    error.args = args
    return error
