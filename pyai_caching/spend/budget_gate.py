"""The budgets of one `ResponseCache`: checked (and reserved) before a miss calls the model, settled after it.

`ResponseCache` builds a `BudgetGate` from its `budget=` argument; the request-level cache enters
`gate.request(record, deps)` around each request it sends, and calls `Charge.settle` with the response's cost and
usage. `cached_agent_run` (and `ResponseCache.wrap_run` for a run outside it) charges what is left at the end of
the call (embedding calls not followed by a request).

What a request holds is given back whatever ends it: an answer (settled with its cost), an error (settled with
nothing), a cancellation (a timeout, a client that went away: the settle runs shielded, `engine.flight.to_the_end`),
or a refusal of one of its budgets after others admitted it (on another store, or a store that could not be reached
with `on_store_error='deny'`). Only a process that dies leaves its reservations to their lease.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from pydantic_ai.usage import RequestUsage

from pyai_caching.engine.context import CallRecord
from pyai_caching.engine.flight import CLEANUP_LIMIT, to_the_end
from pyai_caching.exceptions import BudgetExceededError, ConfigurationError
from pyai_caching.spend.budget import Budget
from pyai_caching.spend.budget_counters import Ask, Counters, Held, Refusal, Settlement
from pyai_caching.spend.ledger_schema import error_text, to_nano
from pyai_caching.spend.outages import MAYBE_OUTAGE, is_outage
from pyai_caching.spend.periods import resets_at
from pyai_caching.spend.task_budget import TaskBudget

__all__ = ["BudgetGate", "Charge", "check_budgets"]

logger = logging.getLogger("pyai_caching")

Limit = TaskBudget | Budget


def check_budgets(value: Any, *, task_name: str | None) -> tuple[Limit, ...]:
    """Validate `budget=`: `None`, a `TaskBudget` or `Budget`, or a sequence of them."""
    if value is None:
        return ()
    items = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str | bytes) else (value,)
    for item in items:
        if not isinstance(item, TaskBudget | Budget):
            raise ConfigurationError(
                f"budget must be a TaskBudget, a Budget or a list of them, got {type(item).__name__}: "
                f"budget=Budget('daily', usd=20, period='day', redis_url=...)"
            )
        needs_task = isinstance(item, TaskBudget) or item.tenant == "task"
        if needs_task and not task_name:
            raise ConfigurationError("budget needs task_name: the budget is a spend limit per task")
    names = [b.name for b in items if isinstance(b, Budget)]
    if len(set(names)) != len(names):
        raise ConfigurationError(f"two budgets of one call have the same name ({names}): give each its own name")
    return items


@dataclass
class Charge:
    """What one request sent to the model cost, for its budgets."""

    cost: Decimal = Decimal(0)
    """USD (known prices only)."""
    tokens: int = 0
    """Input + output tokens."""
    settled: bool = False
    """The request got its answer and `settle` was given what it cost (it then measures the budgets' default
    reserve)."""

    def settle(self, cost: Decimal | None, usage: RequestUsage) -> None:
        """Record the request's cost (`None`: unknown, counted as 0 by USD budgets) and usage."""
        self.cost = cost or Decimal(0)
        self.tokens = usage.input_tokens + usage.output_tokens
        self.settled = True


@dataclass
class _Group:
    """The budgets of a call that share one store: checked by one script."""

    counters: Counters
    reservation: str
    """The id of this request's reservations."""
    budgets: list[Budget] = field(default_factory=list)
    asks: list[Ask] = field(default_factory=list)
    held: list[Held] | None = None
    lost: bool = False
    """The check was interrupted (cancelled) after it may have reached the store: a reservation may be held there,
    whose amount this request does not know."""
    unreachable: bool = False
    """The store could not be reached at the check (on_store_error='allow'): this request is not charged there."""


@dataclass(frozen=True)
class BudgetGate:
    """Checks, reserves and settles the budgets of one `ResponseCache`."""

    budgets: tuple[Limit, ...]
    """Every budget of the cache."""
    task_name: str | None
    """The cache's task name."""
    namespace: str
    """The cache's namespace."""

    @property
    def task_budgets(self) -> tuple[TaskBudget, ...]:
        """The `TaskBudget`s (read from a ledger)."""
        return tuple(b for b in self.budgets if isinstance(b, TaskBudget))

    @property
    def shared(self) -> tuple[Budget, ...]:
        """The `Budget`s (counted atomically)."""
        return tuple(b for b in self.budgets if isinstance(b, Budget))

    @asynccontextmanager
    async def request(self, record: CallRecord | None, deps: Any) -> AsyncIterator[Charge]:
        """Check the budgets before a request is sent (raising `BudgetExceededError`), hold reservations while it
        runs, and charge what `Charge.settle` was given when it ends (nothing if it raised before)."""
        for budget in self.task_budgets:
            pending = record.cost + record.embedding_cost if record is not None else Decimal(0)
            await budget.check(self.task_name or "", namespace=self.namespace, pending=pending)
        groups = await self._reserve(deps)
        charge = Charge()
        try:
            yield charge
        finally:  # to the end even when the request is cancelled: its reservation is given back at once
            await to_the_end(self._settle(groups, charge, record), CLEANUP_LIMIT)

    async def charge_leftovers(self, record: CallRecord, deps: Any) -> None:
        """Charge the embedding calls no request has been charged with (a semantic hit, a call that failed)."""
        if not self.shared or (
            record.embedding_cost == record.charged_embedding_cost
            and record.embedding_tokens == record.charged_embedding_tokens
        ):
            return
        await self._settle(self._groups(deps), Charge(), record)

    def _groups(self, deps: Any) -> list[_Group]:
        groups: dict[int, _Group] = {}
        reservation = uuid.uuid4().hex
        for budget in self.shared:
            tenant = budget.tenant_of(namespace=self.namespace, task_name=self.task_name, deps=deps)
            group = groups.setdefault(id(budget.store), _Group(budget.counters, reservation))  # one script per store
            group.budgets.append(budget)
            group.asks.append(budget.ask(tenant, budget.now()))
        return list(groups.values())

    async def _reserve(self, deps: Any) -> list[_Group]:
        groups = self._groups(deps)
        try:
            for group in groups:
                await self._reserve_group(group)
        except BaseException:  # refused, denied, failed or cancelled: give back what earlier groups hold
            await to_the_end(_give_back(groups), CLEANUP_LIMIT)
            raise
        return groups

    async def _reserve_group(self, group: _Group) -> None:
        lease = max(b.lease for b in group.budgets)
        try:
            outcome = await group.counters.reserve(group.asks, group.reservation, lease)
        except MAYBE_OUTAGE as exc:
            if not is_outage(exc):
                raise
            self._store_failed(group, exc)
            group.unreachable = True
            return
        except BaseException:
            group.lost = True  # interrupted (cancelled) while the script ran: it may have held a reservation
            raise
        _recovered(group)
        if isinstance(outcome, Refusal):
            raise self._refused(group, outcome)
        group.held = outcome

    async def _settle(self, groups: list[_Group], charge: Charge, record: CallRecord | None) -> None:
        cost, tokens = charge.cost, charge.tokens
        if record is not None:
            cost += record.embedding_cost - record.charged_embedding_cost
            tokens += record.embedding_tokens - record.charged_embedding_tokens
            record.charged_embedding_cost = record.embedding_cost
            record.charged_embedding_tokens = record.embedding_tokens
        for group in groups:
            holds: list[Held | None] = list(group.held) if group.held is not None else [None] * len(group.asks)
            if group.unreachable or (group.held is None and not (cost or tokens)):
                continue
            items = [
                Settlement(
                    hold=hold,
                    ask=ask,
                    charge=to_nano(cost) if budget.unit == "usd" else tokens,
                    measured=hold is not None and charge.settled,
                )
                for hold, ask, budget in zip(holds, group.asks, group.budgets, strict=True)
            ]
            try:
                await group.counters.settle(items, group.reservation)
            except MAYBE_OUTAGE as exc:
                if not is_outage(exc):
                    raise
                first = any([b.health.note(failed=True) for b in group.budgets])  # noqa: C419 (note every budget)
                (logger.warning if first else logger.debug)(
                    "could not charge budget(s) %s on %s (%s): $%s / %d token(s) of this call are not counted; "
                    "their reservation is given back when its lease ends",
                    ", ".join(repr(b.name) for b in group.budgets),
                    group.counters.description,
                    error_text(exc),
                    cost,
                    tokens,
                )
            group.held = None

    def _store_failed(self, group: _Group, exc: BaseException) -> None:
        for budget, ask in zip(group.budgets, group.asks, strict=True):
            if budget.on_store_error == "deny":
                raise BudgetExceededError(
                    f"the counters of budget {budget.name!r} ({group.counters.description}) could not be reached "
                    f"({type(exc).__name__}) and it denies calls then (on_store_error='deny'): the model was not "
                    f"called",
                    task_name=self.task_name or "",
                    spent=float("nan"),
                    limit=float(budget.limit),
                    budget=budget.name,
                    unit=budget.unit,
                    period=budget.period,
                    tenant=ask.tenant or None,
                    resets_at=resets_at(budget.period, budget.now()),
                ) from exc
        for budget in group.budgets:
            log = logger.warning if budget.health.note(failed=True) else logger.debug
            log(
                "the counters of budget %r (%s) cannot be reached (%s); calling the model without checking or "
                "charging it until they can (on_store_error='allow')",
                budget.name,
                group.counters.description,
                error_text(exc),
            )

    def _refused(self, group: _Group, refusal: Refusal) -> BudgetExceededError:
        budget = group.budgets[group.asks.index(refusal.ask)]
        now = budget.now()
        spent, reserved, limit = budget.amount(refusal.spent), budget.amount(refusal.reserved), budget.limit
        ends = resets_at(budget.period, now)
        tenant = refusal.ask.tenant or None
        whose = f" for tenant {tenant!r}" if tenant is not None else ""
        period = {"day": "today (UTC)", "month": "this month (UTC)", "total": "in all"}[budget.period]
        held = f", and {refusal.in_flight} request(s) in flight hold {_show(budget, reserved)} more" if reserved else ""
        when = f" It resets at {_when(ends)}." if ends is not None else " It never resets (period='total')."
        if refusal.measuring:
            since = {"day": "today (UTC)", "month": "this month (UTC)", "total": "so far"}[budget.period]
            message = (
                f"no request has been charged to budget {budget.name!r}{whose} {since}, so what a request must hold "
                f"is not known yet: a first request, in flight, is measuring it, and until it ends one request at a "
                f"time is admitted. The model was not called (cache hits still work). Retry when that request ends, "
                f"or give the budget reserve= (what each request holds) to admit concurrent requests from the start."
            )
        else:
            message = (
                f"budget {budget.name!r}{whose} is spent: {_show(budget, spent)} of its {_show(budget, limit)} "
                f"{period}{held}. The model was not called (cache hits still work).{when} Raise "
                f"{'usd' if budget.unit == 'usd' else 'tokens'}= or wait for the reset."
            )
        return BudgetExceededError(
            message,
            task_name=self.task_name or "",
            spent=float(spent),
            limit=float(limit),
            budget=budget.name,
            unit=budget.unit,
            period=budget.period,
            tenant=tenant,
            resets_at=ends,
            reserved=float(reserved),
        )


async def _give_back(groups: list[_Group]) -> None:
    """Release what `groups` hold for a request that will not be sent; never raises (a reservation that cannot be
    given back is given back when its lease ends)."""
    for group in groups:
        held, group.held = group.held, None
        try:
            if held is not None:
                items = [Settlement(hold=hold, ask=hold.ask, charge=0, measured=False) for hold in held]
                await group.counters.settle(items, group.reservation)
            elif group.lost:
                await group.counters.release(group.asks, group.reservation)
        except Exception as exc:
            logger.warning(
                "could not give back the reservation of budget(s) %s on %s (%s); it is given back when its lease ends",
                ", ".join(repr(b.name) for b in group.budgets),
                group.counters.description,
                error_text(exc),
            )


def _recovered(group: _Group) -> None:
    for budget in group.budgets:
        if budget.health.failing and budget.health.note(failed=False):
            logger.warning("the counters of budget %r can be reached again; it applies", budget.name)


def _show(budget: Budget, amount: Decimal) -> str:
    return f"${amount:.6f}".rstrip("0").rstrip(".") if budget.unit == "usd" else f"{int(amount):,} tokens"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M UTC")
