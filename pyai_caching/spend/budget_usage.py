"""What each `Budget` has used in its current period, per tenant: the rows `pyai-caching spend` shows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Literal

from pyai_caching.engine.sync import run_sync
from pyai_caching.exceptions import ConfigurationError
from pyai_caching.spend.budget_counters import counters_for
from pyai_caching.spend.ledger_schema import NANO
from pyai_caching.spend.periods import PERIODS, Period, period_id, period_start, resets_at
from pyai_caching.spend.redis_stores import spend_store
from pyai_caching.stores.memory import MemoryStore
from pyai_caching.stores.redis import RedisStore

__all__ = ["BudgetUsage", "read_budget_usage", "read_budget_usage_async"]


@dataclass(frozen=True, kw_only=True)
class BudgetUsage:
    """One budget's use by one tenant in one period."""

    budget: str
    """The budget's name."""
    tenant: str | None
    """The tenant, or `None` for a budget shared by every call."""
    unit: Literal["usd", "tokens"]
    """`"usd"` or `"tokens"`: the unit of `limit`, `spent`, `reserved` and `remaining`."""
    period: Period
    """`"day"`, `"month"` (UTC calendar periods) or `"total"`."""
    period_start: date | None
    """The UTC day the period started (`None` for `total`)."""
    resets_at: datetime | None
    """When the period ends and the use starts again from zero (`None` for `total`)."""
    limit: Decimal
    """The limit, as last configured by a process that used the budget."""
    spent: Decimal
    """What requests (and embedding calls) were charged in the period."""
    reserved: Decimal
    """What requests in flight hold (reserved before they were sent, replaced by their real cost when they end;
    the reservation of a process that died is held until its lease ends)."""
    in_flight: int
    """Requests holding a reservation."""
    admitted: int
    """Requests the budget let through in the period."""
    denied: int
    """Requests it refused (`BudgetExceededError`)."""

    @property
    def remaining(self) -> Decimal:
        """What is left: `limit - spent - reserved`, at least 0."""
        return max(self.limit - self.spent - self.reserved, Decimal(0))

    @property
    def used(self) -> float | None:
        """`spent / limit` (may exceed 1: requests in flight when it was reached), `None` for a zero limit."""
        return float(self.spent / self.limit) if self.limit else None


async def read_budget_usage_async(
    redis_url: str | None = None,
    *,
    store: RedisStore | MemoryStore | None = None,
    budget: str | None = None,
    tenant: str | None = None,
    at: datetime | None = None,
) -> list[BudgetUsage]:
    """The use of every budget (or of `budget`), per tenant (or only `tenant`), in the period containing `at`.

    Args:
        redis_url: Redis URL; default `LLM_CACHE_REDIS_URL`.
        store: The store the budgets keep their counters in instead of a URL (`Budget.store`; a `MemoryStore` for
            budgets kept in this process).
        budget: Only the budget of this name.
        tenant: Only this tenant (`""` for budgets shared by every call).
        at: A moment in the period to read (an aware `datetime`); default now. Periods are UTC days and months.

    Rows are sorted by budget and tenant. Budgets appear once a request has been checked against them.
    """
    if at is None:
        at = datetime.now(UTC)
    elif not isinstance(at, datetime) or at.utcoffset() is None:
        raise ConfigurationError(f"at must be an aware datetime (datetime.now(UTC)), got {at!r}")
    target: RedisStore | MemoryStore = (
        store if isinstance(store, MemoryStore) and redis_url is None else _redis(redis_url, store)
    )
    counters = counters_for(target)
    rows: list[BudgetUsage] = []
    for name, raw in sorted((await counters.registry()).items()):
        if budget is not None and name != budget:
            continue
        meta = json.loads(raw)
        period = meta.get("period")
        unit = meta.get("unit")
        if period not in PERIODS or unit not in ("usd", "tokens"):
            continue  # a newer schema's budget
        pid = period_id(period, at)
        tenants = await counters.tenants(name, pid)
        if tenant is not None:
            tenants = [t for t in tenants if t == tenant]
        uses = await counters.read([(name, t, pid) for t in tenants])
        scale = NANO if unit == "usd" else Decimal(1)
        for who, counts in zip(tenants, uses, strict=True):
            rows.append(
                BudgetUsage(
                    budget=name,
                    tenant=who or None,
                    unit=unit,
                    period=period,
                    period_start=period_start(period, at),
                    resets_at=resets_at(period, at),
                    limit=Decimal(meta.get("limit", "0")),
                    spent=Decimal(counts["spent"]) / scale,
                    reserved=Decimal(max(counts["reserved"], 0)) / scale,
                    in_flight=max(counts["in_flight"], 0),
                    admitted=counts["admitted"],
                    denied=counts["denied"],
                )
            )
    return rows


def read_budget_usage(
    redis_url: str | None = None,
    *,
    store: RedisStore | MemoryStore | None = None,
    budget: str | None = None,
    tenant: str | None = None,
    at: datetime | None = None,
) -> list[BudgetUsage]:
    """Synchronous `read_budget_usage_async`."""
    return run_sync(read_budget_usage_async(redis_url, store=store, budget=budget, tenant=tenant, at=at))


def _redis(redis_url: str | None, store: object) -> RedisStore:
    if store is not None and not isinstance(store, RedisStore):
        raise ConfigurationError(
            f"store must be the RedisStore or MemoryStore the budgets keep their counters in, got "
            f"{type(store).__name__}"
        )
    return spend_store(redis_url, store, "read_budget_usage", why="budgets shared by processes count in Redis")
