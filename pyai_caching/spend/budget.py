"""`Budget`: a spend limit per UTC day or month and per tenant, in USD or tokens, shared by every process.

```python
daily = Budget("support-daily", usd=20, period="day", tenant="namespace", redis_url="redis://localhost:6379/0")
await cached_agent_run(agent, prompt, "triage", namespace="acme", budget=daily)
```

Before a cache miss calls the model, one Lua script checks every `Budget` of the call and, when none is spent,
reserves an amount in each; after the model answered, the real cost (or tokens) replaces the reservation. A
request is refused (`BudgetExceededError`, the model is not called) when what was spent plus what requests in
flight hold has reached the limit, so two processes cannot both spend the last dollar. Hits are free: they neither
check nor charge. See `budget_counters` for the Redis schema and the rules.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Final, Literal

from pyai_caching.exceptions import ConfigurationError
from pyai_caching.spend.budget_counters import Ask, Counters, counters_for
from pyai_caching.spend.costs import to_decimal
from pyai_caching.spend.ledger_schema import NANO
from pyai_caching.spend.periods import PERIODS, Period, period_id, resets_at
from pyai_caching.spend.redis_stores import spend_store
from pyai_caching.stores.local import LocalStore
from pyai_caching.stores.memory import MemoryStore
from pyai_caching.stores.redis import RedisStore

__all__ = ["DEFAULT_LEASE", "Budget", "StoreHealth", "TenantKey"]

TenantKey = Literal["namespace", "task"] | Callable[[Any], str] | None
"""Whose use a budget counts: `None` (every call together), `"namespace"`, `"task"`, or a function of the run's
deps returning a tenant key (`lambda deps: deps.customer_id`)."""

DEFAULT_LEASE: Final = 900.0
"""Seconds a reservation holds when its request never settles (the process died mid-request)."""
_MAX_UNITS: Final = 2**53
"""Counters are compared in the Lua script as doubles: limits stay below 2**53 units (about $9M, or 9e15 tokens)."""
_RETENTION: Final = {"day": timedelta(days=8), "month": timedelta(days=92)}
"""How long a period's use is kept after it ends (for `read_budget_usage` of earlier periods)."""
_NAME: Final = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")


@dataclass(frozen=True, init=False)
class Budget:
    """A spend limit per UTC day or month (or all time), per tenant, in USD or tokens, shared by every process.

    ```python
    Budget("support-daily", usd=20, period="day", tenant="namespace", redis_url=url)   # $20 per namespace per day
    Budget("per-customer", tokens=2_000_000, period="month", tenant=lambda deps: deps.customer_id)
    ```

    Pass one or a list of them as `budget=` to `cached_agent_run` or `ResponseCache` (with `TaskBudget`s too). Before
    a miss calls the model, one Lua script refuses the request (`BudgetExceededError`, the model is not called) if
    any of the call's budgets has reached its limit, counting the reservations of requests in flight, and otherwise
    reserves `reserve` in each; after the answer, the reservation is replaced by the request's real cost (or
    tokens). Embedding calls of the semantic cache are charged too. Hits are free.

    Periods are UTC calendar days and months: a daily budget starts again at 00:00 UTC, a monthly one at 00:00 UTC
    on the first of the month, whatever the process's time zone. Two budgets with the same name share their
    counters (per tenant and period; a daily and a monthly budget of one name count apart): give each limit its own
    name.

    Counters live in Redis (`redis_url`, `store=RedisStore(...)`, or `LLM_CACHE_REDIS_URL`), shared by every
    process. `store=MemoryStore()` keeps them in this process instead, with the same rules (tests, one-process
    apps). A `LocalStore` is refused: its processes could not count atomically.
    """

    name: str
    """Names the counters in Redis and the limit in errors and `pyai-caching spend`."""
    unit: Literal["usd", "tokens"]
    """`"usd"` (cost of requests and embeddings, known prices only) or `"tokens"` (input + output tokens of the
    requests sent, plus embedding tokens)."""
    limit: Decimal
    """The limit in `unit` (`0` allows cache hits only)."""
    period: Period
    """`"day"` (UTC, default), `"month"` (UTC calendar month) or `"total"` (never resets)."""
    tenant: TenantKey
    """Whose use is counted: `None` (every call together), `"namespace"` (the cache namespace), `"task"` (the
    `task_name`) or a function of the run's deps returning the tenant's key (a non-empty string)."""
    reserve: Decimal | None
    """What a request holds, in `unit`, from the check until it settles: a request is admitted while `spent +
    reserved` is below the limit, and its reservation counts against the limit for the requests checked after it.

    `None` (default): the largest single request (its cost or tokens, with the embedding calls charged with it)
    charged to a budget of this name in the current period, by any tenant. Until one has been charged in the period
    (the first request of each day or month, or after every earlier one failed), that is not known: one request per
    tenant is admitted at a time, holding 0, and the others are refused (`BudgetExceededError` saying a first
    request is measuring the cost) until it settles. Give a `reserve` to admit concurrent requests from the start.

    The overshoot of the limit is bounded by what requests in flight cost beyond what they hold: the bigger
    `reserve`, the fewer concurrent requests are admitted near the limit and the less they can overshoot it."""
    lease: float
    """Seconds a reservation holds at most: one whose request never settles (a process killed mid-request) is given
    back after it. Default 900."""
    on_store_error: Literal["allow", "deny"]
    """When Redis cannot be reached (down, unreachable, timing out): `"allow"` (default: log a warning once per
    outage and call the model, unchecked and uncharged) or `"deny"` (raise `BudgetExceededError`). Any other error
    (a bug, a tenant function that raises) is raised: a budget never lets a call through because of one."""
    clock: Callable[[], datetime] | None
    """Returns the current time (an aware `datetime`), which decides the period; `None`: the system clock. For
    simulations and tests of a period's reset."""
    store: RedisStore | MemoryStore
    """Where the counters are kept."""
    _counters: Counters = field(repr=False, compare=False)
    _health: StoreHealth = field(repr=False, compare=False)

    def __init__(
        self,
        name: str,
        *,
        usd: float | int | str | Decimal | None = None,
        tokens: int | None = None,
        period: Period = "day",
        tenant: TenantKey = None,
        reserve: float | int | str | Decimal | None = None,
        redis_url: str | None = None,
        store: RedisStore | MemoryStore | None = None,
        lease: float = DEFAULT_LEASE,
        on_store_error: Literal["allow", "deny"] = "allow",
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        if not isinstance(name, str) or not _NAME.match(name) or not name.strip():
            raise ConfigurationError(
                f"Budget name must be a non-empty string of at most 200 printable characters, got {name!r}"
            )
        _set(self, "name", name)
        if (usd is None) == (tokens is None):
            raise ConfigurationError(
                f"Budget {name!r} needs exactly one limit: usd=20 (USD per period) or tokens=1_000_000 (tokens per "
                f"period), got usd={usd!r}, tokens={tokens!r}"
            )
        if usd is not None:
            _set(self, "unit", "usd")
            _set(self, "limit", to_decimal(usd, "usd", unit="USD").normalize())
        else:
            if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 0:
                raise ConfigurationError(f"tokens must be a whole number of tokens >= 0, got {tokens!r}")
            _set(self, "unit", "tokens")
            _set(self, "limit", Decimal(tokens))
        if self.units(self.limit) >= _MAX_UNITS:
            raise ConfigurationError(f"Budget {name!r}: the limit {self.limit} {self.unit} is too large")
        if period not in PERIODS:
            raise ConfigurationError(f"period must be 'day', 'month' or 'total', got {period!r}")
        _set(self, "period", period)
        if tenant is not None and tenant not in ("namespace", "task") and not callable(tenant):
            raise ConfigurationError(
                f"tenant must be None, 'namespace', 'task' or a function of the deps returning the tenant's key "
                f"(tenant=lambda deps: deps.customer_id), got {tenant!r}"
            )
        _set(self, "tenant", tenant)
        if reserve is None:
            _set(self, "reserve", None)
        elif self.unit == "tokens":
            if isinstance(reserve, bool) or not isinstance(reserve, int) or reserve < 0:
                raise ConfigurationError(f"reserve must be a whole number of tokens >= 0 or None, got {reserve!r}")
            _set(self, "reserve", Decimal(reserve))
        else:
            _set(self, "reserve", to_decimal(reserve, "reserve", unit="USD").normalize())
        if isinstance(lease, bool) or not isinstance(lease, int | float) or not math.isfinite(lease) or lease <= 0:
            raise ConfigurationError(f"lease must be a positive number of seconds, got {lease!r}")
        _set(self, "lease", float(lease))
        if on_store_error not in ("allow", "deny"):
            raise ConfigurationError(f"on_store_error must be 'allow' or 'deny', got {on_store_error!r}")
        _set(self, "on_store_error", on_store_error)
        if clock is not None and not callable(clock):
            raise ConfigurationError(f"clock must be a function returning an aware datetime, got {clock!r}")
        _set(self, "clock", clock)
        _set(self, "store", _counter_store(name, redis_url, store))
        _set(self, "_counters", counters_for(self.store))
        _set(self, "_health", StoreHealth())

    def __repr__(self) -> str:
        tenant = self.tenant if self.tenant is None or isinstance(self.tenant, str) else "<function>"
        return (
            f"Budget({self.name!r}, {self.unit}={self.limit}, period={self.period!r}, tenant={tenant!r}, "
            f"store={self.store.description!r})"
        )

    @property
    def health(self) -> StoreHealth:
        """Whether the counters' store is failing (to warn once per outage)."""
        return self._health

    @property
    def counters(self) -> Counters:
        """Where the counters are kept (Redis or this process)."""
        return self._counters

    def now(self) -> datetime:
        """The current time by the budget's clock (UTC)."""
        if self.clock is None:
            return datetime.now(UTC)
        now = self.clock()
        if not isinstance(now, datetime) or now.tzinfo is None or now.utcoffset() is None:
            raise ConfigurationError(f"Budget {self.name!r}: clock() must return an aware datetime, got {now!r}")
        return now.astimezone(UTC)

    def units(self, amount: Decimal) -> int:
        """`amount` (in `unit`) as the whole number the counters keep: nano-USD, or tokens."""
        return int(amount * NANO) if self.unit == "usd" else int(amount)

    def amount(self, units: int) -> Decimal:
        """Counter units back in `unit`."""
        return Decimal(units) / NANO if self.unit == "usd" else Decimal(units)

    def tenant_of(self, *, namespace: str, task_name: str | None, deps: Any) -> str:
        """The tenant a call counts for (`""` when the budget is shared by every call)."""
        if self.tenant is None:
            return ""
        if self.tenant == "namespace":
            return namespace
        if self.tenant == "task":
            if not task_name:
                raise ConfigurationError(f"Budget {self.name!r} is per task (tenant='task'): give the call a task_name")
            return task_name
        key = self.tenant(deps)
        if not isinstance(key, str) or not key:
            raise ConfigurationError(
                f"the tenant function of Budget {self.name!r} must return a non-empty string, got {key!r} "
                f"(for deps of type {type(deps).__name__})"
            )
        return key

    def ask(self, tenant: str, now: datetime) -> Ask:
        """This budget's part of the check of one request by `tenant` at `now`."""
        ends = resets_at(self.period, now)
        ttl = 0 if ends is None else math.ceil((ends - now + _RETENTION[self.period]).total_seconds())
        return Ask(
            name=self.name,
            tenant=tenant,
            period=period_id(self.period, now),
            limit=self.units(self.limit),
            amount=None if self.reserve is None else self.units(self.reserve),
            ttl=ttl,
            meta=self.meta(),
        )

    def meta(self) -> str:
        """The budget as readers of the registry see it (JSON)."""
        tenant = self.tenant if self.tenant is None or isinstance(self.tenant, str) else "function"
        return json.dumps(
            {"unit": self.unit, "period": self.period, "limit": str(self.limit), "tenant": tenant}, sort_keys=True
        )


class StoreHealth:
    """Whether a budget's store was failing at its last use."""

    def __init__(self) -> None:
        self.failing = False

    def note(self, *, failed: bool) -> bool:
        """Record the outcome of a use; `True` when it changes (the moment to log)."""
        changed, self.failing = failed != self.failing, failed
        return changed


def _set(budget: Budget, name: str, value: Any) -> None:
    object.__setattr__(budget, name, value)


def _counter_store(name: str, redis_url: str | None, store: Any) -> RedisStore | MemoryStore:
    if isinstance(store, MemoryStore):
        if redis_url is not None:
            raise ConfigurationError(f"Budget {name!r}: pass either redis_url= or store=, not both")
        return store
    if isinstance(store, LocalStore):
        raise ConfigurationError(
            f"Budget {name!r}: a LocalStore cannot hold budgets (its processes could not count atomically); pass "
            f"redis_url='redis://...' to share them between processes, or store=MemoryStore() for one process"
        )
    if store is not None and not isinstance(store, RedisStore):
        raise ConfigurationError(
            f"Budget {name!r}: store must be a RedisStore (shared by every process) or a MemoryStore (this process "
            f"only), got {type(store).__name__}"
        )
    return spend_store(
        redis_url,
        store,
        f"Budget {name!r}",
        why="to share its counters between processes; store=MemoryStore() keeps them in this process only",
    )
