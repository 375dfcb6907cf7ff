"""`pyai-caching spend`: spend, savings, requests, hits and misses per task, model, day or namespace over a period,
from the Redis spend ledger, and the use of each `Budget` per tenant in its current period."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Final

import typer
from rich.console import Console
from rich.table import Table

from pyai_caching.cli.common import (
    CliError,
    DirOption,
    ExitCode,
    JsonOption,
    NamespaceOption,
    RedisUrlOption,
    TaskOption,
    execute,
    fail,
    parse_since,
    prefix_or_exit,
    store_or_exit,
)
from pyai_caching.cli.ledger import ledger_of, ledger_sums, sum_rows
from pyai_caching.cli.render import Column, fitted_table, make_console, print_json, safe, usd
from pyai_caching.engine.registry import REDIS_URL_ENV
from pyai_caching.stores import RedisStore

__all__ = ["By", "spend"]


class By(StrEnum):
    """What `spend --by` groups by."""

    task = "task"
    model = "model"
    day = "day"
    namespace = "namespace"


_LEDGER_NEEDS_REDIS: Final = (
    f"the spend ledger lives in Redis; pass --redis-url or set {REDIS_URL_ENV} (the embedded store keeps no ledger)"
)


def spend(
    since: Annotated[
        str, typer.Option("--since", "-s", help="First day: a duration back from now (7d, 2w) or a date (2026-11-01).")
    ] = "30d",
    until: Annotated[
        str | None, typer.Option("--until", help="Last day, a date (default: today, UTC).", show_default=False)
    ] = None,
    by: Annotated[
        list[By] | None,
        typer.Option(
            "--by",
            "-b",
            help="Group by task, model, day or namespace (repeat for several tables).",
            show_default="task, model",
        ),
    ] = None,
    task: TaskOption = None,
    namespace: NamespaceOption = None,
    all_time: Annotated[bool, typer.Option("--all-time", help="All-time totals instead of a period of days.")] = False,
    redis_url: RedisUrlOption = None,
    directory: DirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Spend, savings, requests, hits and misses per task and model over a period, from the Redis spend ledger; and
    each Budget's use per tenant in its current period."""
    first, last = _period(since, until, as_json)
    prefix_or_exit(namespace, as_json)
    store = _ledger_store(redis_url, directory, as_json)

    async def work() -> tuple[Any, str, Any]:
        from pyai_caching.spend.budget_usage import read_budget_usage_async

        ledger = ledger_of(store)
        found = await ledger.read(first, last, namespace=namespace, task=task, total=all_time)
        elsewhere = "" if found else await _recorded_elsewhere(ledger, first, last, all_time, namespace, task)
        return found, elsewhere, await read_budget_usage_async(store=store)

    rows, elsewhere, budgets = execute(as_json, store, work)
    report = _Report(
        store=store.description,
        rows=rows,
        elsewhere=elsewhere,
        first=first,
        last=last,
        all_time=all_time,
        namespace=namespace,
        task=task,
        groups=by or [By.task, By.model],
        budgets=budgets,
    )
    if as_json:
        print_json(report.to_dict())
    else:
        report.show()


def _period(since: str, until: str | None, as_json: bool) -> tuple[date, date]:
    """The first and last day of `--since` and `--until` (UTC)."""
    now = datetime.now(UTC)
    try:
        first = parse_since(since, now)
        last = date.fromisoformat(until.strip()) if until is not None else now.date()
    except CliError as e:
        fail(str(e), e.code, as_json)
    except ValueError:
        fail(f"--until must be a date such as 2026-11-30, got {until!r}", ExitCode.USAGE, as_json)
    return first, last


def _ledger_store(redis_url: str | None, directory: str | None, as_json: bool) -> RedisStore:
    """The Redis store whose ledger to read; the embedded store keeps no ledger (a usage error)."""
    if directory is not None:
        fail(_LEDGER_NEEDS_REDIS, ExitCode.USAGE, as_json)
    store = store_or_exit(redis_url, None, as_json)
    if not isinstance(store, RedisStore):
        fail(_LEDGER_NEEDS_REDIS, ExitCode.USAGE, as_json)
    return store


async def _recorded_elsewhere(
    ledger: Any, first: date, last: date, all_time: bool, namespace: str | None, task: str | None
) -> str:
    """When a filtered `spend` finds nothing: the namespaces (or the tasks) that do have spend in the period."""
    if namespace is None and task is None:
        return ""
    rows = await ledger.read(first, last, total=all_time)
    if namespace is not None and all(r.namespace != namespace for r in rows):
        names, what = {r.namespace for r in rows}, "Namespaces"
    else:
        names = {r.task for r in rows if namespace is None or r.namespace == namespace}
        what = "Tasks" if namespace is None else f"Tasks of namespace {namespace!r}"
    if not names:
        return " Nothing at all is recorded for that period."
    shown = ", ".join(sorted(names)[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    return f" {what} with spend in that period: {shown}."


def _group_rows(rows: Any, by: By) -> list[tuple[str, dict[str, Any]]]:
    groups: dict[str, list[Any]] = {}
    for row in rows:
        value = row.day.isoformat() if by is By.day and row.day is not None else getattr(row, by.value)
        groups.setdefault(str(value), []).append(row)
    summed = [(name, sum_rows(group)) for name, group in groups.items()]
    if by is By.day:
        return sorted(summed)
    return sorted(summed, key=lambda kv: (-Decimal(kv[1]["cost"]), -kv[1]["requests"], kv[0]))


@dataclass(frozen=True, kw_only=True)
class _Report:
    """What `spend` found, to print as tables or JSON."""

    store: str
    rows: Any
    elsewhere: str
    first: date
    last: date
    all_time: bool
    namespace: str | None
    task: str | None
    groups: list[By]
    budgets: Any
    """`BudgetUsage` rows: each budget's use per tenant in its current period."""

    def to_dict(self) -> dict[str, Any]:
        return {
            "store": self.store,
            "note": self.elsewhere.strip() or None,
            "since": None if self.all_time else self.first.isoformat(),
            "until": None if self.all_time else self.last.isoformat(),
            "total": sum_rows(self.rows),
            **{f"by_{g.value}": [{g.value: k, **v} for k, v in _group_rows(self.rows, g)] for g in self.groups},
            "rows": [
                {
                    "day": None if r.day is None else r.day.isoformat(),
                    "namespace": r.namespace,
                    "task": r.task,
                    "model": r.model,
                    **{name: getattr(r, name) for name in ledger_sums()},
                    "cost": str(r.cost),
                    "saved": str(r.saved),
                    "embedding_cost": str(r.embedding_cost),
                }
                for r in self.rows
            ],
            "budgets": [_budget_dict(b) for b in self.budgets],
        }

    def show(self) -> None:
        period = "all time" if self.all_time else f"{self.first.isoformat()} to {self.last.isoformat()} (UTC)"
        console = make_console()
        if not self.rows:
            console.print(safe(_nothing_spent(self.store, period, self.namespace, self.task) + self.elsewhere))
        else:
            total = sum_rows(self.rows)
            for g in self.groups:
                title = f"Spend by {g.value}, {period}"
                console.print(_spend_table(console, title, g.value.capitalize(), _group_rows(self.rows, g), total))
        if self.budgets:
            console.print(_budget_table(console, self.budgets))


# --- rendering ---------------------------------------------------------------------------------------------------


def _nothing_spent(where: str, period: str, namespace: str | None, task: str | None) -> str:
    filters = " and ".join(
        f"{label} {value!r}" for label, value in (("namespace", namespace), ("task", task)) if value is not None
    )
    if filters:
        return f"No spend recorded in {where} for {filters} in {period}."
    return (
        f"No spend recorded in {where} for {period}. Calls record it with expense_hook=RedisSpendLedger(url) "
        "(or a TaskBudget)."
    )


def _spend_cells(sums: dict[str, Any]) -> list[str]:
    ratio = sums["hit_ratio"]
    spent = usd(Decimal(sums["cost"]) + Decimal(sums["embedding_cost"])) + (
        f" + {sums['unpriced_requests']:,} unpriced" if sums["unpriced_requests"] else ""
    )
    saved = usd(Decimal(sums["saved"])) + (f" + {sums['unpriced_hits']:,} unpriced" if sums["unpriced_hits"] else "")
    return [
        f"{sums['calls']:,}",
        f"{sums['requests']:,}",
        f"{sums['hits']:,}",
        f"{sums['misses']:,}",
        "-" if ratio is None else f"{ratio:.0%}",
        spent,
        saved,
    ]


_SPEND_COLUMNS: Final = tuple(
    Column(header=header, drop_order=order)
    for header, order in (
        ("Calls", 0),
        ("Requests", 2),
        ("Hits", 3),
        ("Misses", 1),
        ("Hit rate", 4),
        ("Spent", 6),
        ("Saved", 5),
    )
)


def _spend_table(
    console: Console, title: str, column: str, groups: list[tuple[str, dict[str, Any]]], total: dict[str, Any]
) -> Table:
    return fitted_table(
        console,
        title,
        [Column(header=column), *_SPEND_COLUMNS],
        [[safe(name), *_spend_cells(sums)] for name, sums in groups],
        footer=["Total", *_spend_cells(total)] if len(groups) > 1 else None,
    )


def _amount(unit: str, value: Decimal) -> str:
    return usd(value) if unit == "usd" else f"{int(value):,} tokens"


def _budget_dict(row: Any) -> dict[str, Any]:
    return {
        "budget": row.budget,
        "tenant": row.tenant,
        "unit": row.unit,
        "period": row.period,
        "period_start": None if row.period_start is None else row.period_start.isoformat(),
        "resets_at": None if row.resets_at is None else row.resets_at.isoformat(),
        "limit": str(row.limit),
        "spent": str(row.spent),
        "reserved": str(row.reserved),
        "remaining": str(row.remaining),
        "in_flight": row.in_flight,
        "admitted": row.admitted,
        "denied": row.denied,
    }


_BUDGET_COLUMNS: Final = tuple(
    Column(header=header, drop_order=order)
    for header, order in (
        ("Period", 1),
        ("Spent", 7),
        ("Limit", 6),
        ("Used", 5),
        ("Held", 2),
        ("Denied", 4),
        ("Resets (UTC)", 3),
    )
)


def _budget_table(console: Console, rows: Any) -> Table:
    """Each budget's use per tenant in its current period (UTC days and months)."""
    cells = []
    for r in rows:
        name = r.budget if r.tenant is None else f"{r.budget} / {r.tenant}"
        used = "-" if r.used is None else f"{r.used:.0%}"
        held = _amount(r.unit, r.reserved) + (f" ({r.in_flight:,} in flight)" if r.in_flight else "")
        resets = "never" if r.resets_at is None else r.resets_at.strftime("%Y-%m-%d %H:%M")
        period = r.period if r.period_start is None else f"{r.period} of {r.period_start.isoformat()}"
        cells.append(
            [
                safe(name),
                period,
                _amount(r.unit, r.spent),
                _amount(r.unit, r.limit),
                used,
                held,
                f"{r.denied:,}",
                resets,
            ]
        )
    return fitted_table(
        console, "Budgets, current periods", [Column(header="Budget / tenant"), *_BUDGET_COLUMNS], cells
    )
