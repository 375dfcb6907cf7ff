"""`pyai-caching stats`: entries, size and cost of the cache by namespace, model and task; oldest and newest entry;
hits and misses from the spend ledger (on Redis)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table
from rich.text import Text

from pyai_caching._util.escape import escape_text
from pyai_caching.cli.browse import EntryInfo, ScanCounts, Selection, read_entries
from pyai_caching.cli.common import (
    DirOption,
    JsonOption,
    NamespaceOption,
    RedisUrlOption,
    execute,
    missing_file,
    prefix_or_exit,
    short,
    store_or_exit,
)
from pyai_caching.cli.ledger import ledger_of, sum_rows
from pyai_caching.cli.render import (
    Column,
    fitted_table,
    iso_time,
    make_console,
    print_json,
    safe,
    scan_progress,
    size_text,
    usd,
    when,
)
from pyai_caching.stores import RedisStore, Store

__all__ = ["stats"]

_NO_LEDGER_LOCAL: Final = "kept in the Redis spend ledger only (expense_hook=RedisSpendLedger(url))"


@dataclass
class _Group:
    entries: int = 0
    size: int = 0
    responses: int = 0
    cost: Decimal = field(default_factory=Decimal)
    unpriced: int = 0

    def add(self, info: EntryInfo) -> None:
        self.entries += 1
        self.size += info.size
        if info.kind != "response":
            return  # a run entry repeats the cost of the request entries it was made from
        self.responses += 1
        if info.cost is None:
            self.unpriced += 1
        else:
            self.cost += info.cost

    def to_dict(self) -> dict[str, Any]:
        return {
            "entries": self.entries,
            "size_bytes": self.size,
            "cost": str(self.cost),
            "unpriced": self.unpriced,
        }


@dataclass
class _Stats:
    store: str
    total: _Group = field(default_factory=_Group)
    request_entries: int = 0
    run_entries: int = 0
    unreadable: int = 0
    unreadable_size: int = 0
    other_keys: int = 0
    miss_log_keys: int = 0
    oldest: float | None = None
    newest: float | None = None
    by_namespace: dict[str, _Group] = field(default_factory=dict)
    by_model: dict[str, _Group] = field(default_factory=dict)
    by_task: dict[str | None, _Group] = field(default_factory=dict)
    counters: dict[str, Any] | None = None
    counters_note: str = ""
    no_file: bool = False

    def add(self, info: EntryInfo) -> None:
        if not info.readable:
            self.unreadable += 1
            self.unreadable_size += info.size
            return
        self.total.add(info)
        if info.kind == "run":
            self.run_entries += 1
        else:
            self.request_entries += 1
        if info.created_at is not None:
            self.oldest = info.created_at if self.oldest is None else min(self.oldest, info.created_at)
            self.newest = info.created_at if self.newest is None else max(self.newest, info.created_at)
        self.by_namespace.setdefault(info.namespace or info.parts.namespace, _Group()).add(info)
        self.by_model.setdefault(info.model or "unknown", _Group()).add(info)
        self.by_task.setdefault(info.task, _Group()).add(info)

    def to_dict(self) -> dict[str, Any]:
        def rows(name: str, groups: dict[Any, _Group]) -> list[dict[str, Any]]:
            ordered = sorted(groups.items(), key=lambda kv: (-kv[1].entries, str(kv[0])))
            return [{name: k, **g.to_dict()} for k, g in ordered]

        return {
            "store": self.store,
            "entries": self.total.entries,
            "request_entries": self.request_entries,
            "run_entries": self.run_entries,
            "size_bytes": self.total.size,
            "cost": str(self.total.cost),
            "unpriced": self.total.unpriced,
            "unreadable": self.unreadable,
            "other_keys": self.other_keys,
            "miss_log_keys": self.miss_log_keys,
            "oldest": iso_time(self.oldest),
            "newest": iso_time(self.newest),
            "by_namespace": rows("namespace", self.by_namespace),
            "by_model": rows("model", self.by_model),
            "by_task": rows("task", self.by_task),
            "counters": self.counters,
        }


def stats(
    namespace: NamespaceOption = None,
    redis_url: RedisUrlOption = None,
    directory: DirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Entries, size and cost of the cache by namespace, model and task; oldest and newest entry; hits and misses
    (from the spend ledger, on Redis)."""
    prefix = prefix_or_exit(namespace, as_json)
    store = store_or_exit(redis_url, directory, as_json)

    async def work() -> _Stats:
        result = _Stats(store=store.description)
        if missing_file(store):
            result.counters_note = _NO_LEDGER_LOCAL
            result.no_file = True
            return result
        counts = ScanCounts()
        with scan_progress(not as_json, "Scanning") as progress:
            selection = Selection(prefix=prefix)
            async for info in read_entries(store, selection, counts=counts, progress=progress):
                result.add(info)
        result.other_keys = counts.other_keys
        result.miss_log_keys = counts.miss_log_keys
        result.counters, result.counters_note = await _ledger_counters(store, namespace)
        return result

    result = execute(as_json, store, work)
    if as_json:
        print_json(result.to_dict())
    else:
        _print_stats(result, datetime.now().timestamp())


async def _ledger_counters(store: Store, namespace: str | None) -> tuple[dict[str, Any] | None, str]:
    """All-time hits and misses from the spend ledger, when the store is Redis and the ledger has any."""
    if not isinstance(store, RedisStore):
        return None, _NO_LEDGER_LOCAL
    try:
        rows = await ledger_of(store).read(namespace=namespace, total=True)
    except RedisError as e:
        return None, f"the spend ledger could not be read ({short(e)})"
    if not rows:
        return None, "none recorded (record them with expense_hook=RedisSpendLedger(url))"
    return sum_rows(rows), ""


# --- rendering ---------------------------------------------------------------------------------------------------


def _cost_text(cost: Decimal, unpriced: int, count: int) -> str:
    """A sum of known costs, with how many items had no price (all unpriced: `unknown`)."""
    if count == 0:
        return "-"
    if unpriced and unpriced >= count:
        return "unknown"
    return usd(cost) + (f" + {unpriced:,} unpriced" if unpriced else "")


_GROUP_COLUMNS: Final = (
    Column(header="Entries", drop_order=1),
    Column(header="Size", drop_order=0),
    Column(header="Cost", drop_order=2),
)


def _group_table(console: Console, title: str, column: str, groups: dict[Any, _Group]) -> Table:
    rows: list[list[str | Text]] = [
        [
            safe(name if name is not None else "(none)"),
            f"{group.entries:,}",
            size_text(group.size),
            _cost_text(group.cost, group.unpriced, group.responses),
        ]
        for name, group in sorted(groups.items(), key=lambda kv: (-kv[1].entries, str(kv[0])))
    ]
    return fitted_table(console, title, [Column(header=column), *_GROUP_COLUMNS], rows)


def _summary(stats: _Stats, now: float) -> Table:
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold", no_wrap=True)
    summary.add_column(overflow="fold")
    summary.add_row("Store", safe(stats.store + (" (no cache file yet)" if stats.no_file else "")))
    if stats.total.entries:
        summary.add_row(
            "Entries",
            f"{stats.total.entries:,} ({stats.request_entries:,} request-level, {stats.run_entries:,} run-level)",
        )
        summary.add_row("Size", size_text(stats.total.size))
        cost = _cost_text(stats.total.cost, stats.total.unpriced, stats.total.responses)
        summary.add_row("Cost", f"{cost}: what the stored responses cost to produce (a hit saves that again)")
        summary.add_row("Oldest", when(stats.oldest, now))
        summary.add_row("Newest", when(stats.newest, now))
    else:
        summary.add_row("Entries", "0")
    if stats.unreadable:
        summary.add_row(
            "Unreadable",
            f"{stats.unreadable:,} ({size_text(stats.unreadable_size)}): corrupt, foreign or of another version "
            "(`inspect KEY` says why)",
        )
    if stats.other_keys:
        summary.add_row("Other keys", f"{stats.other_keys:,} (locks, ledgers: not entries)")
    if stats.miss_log_keys:
        keys = f"{stats.miss_log_keys:,} key{'s' if stats.miss_log_keys != 1 else ''}"
        summary.add_row("Miss log", f"{keys} of recent misses (`pyai-caching explain` says why they missed)")
    summary.add_row("Hits / misses", _counters_text(stats))
    return summary


def _counters_text(stats: _Stats) -> str | Text:
    c = stats.counters
    if c is None:
        return Text(escape_text(stats.counters_note), style="dim")
    ratio = f", {c['hits'] / c['requests']:.0%} hits" if c["requests"] else ""
    return (
        f"{c['hits']:,} / {c['misses']:,}{ratio} (spend ledger, all time; spent {usd(Decimal(c['cost']))}, "
        f"saved {usd(Decimal(c['saved']))})"
    )


def _print_stats(stats: _Stats, now: float) -> None:
    console = make_console()
    console.print(_summary(stats, now))
    if stats.total.entries:
        console.print()
        console.print(_group_table(console, "By namespace", "Namespace", stats.by_namespace))
        console.print(_group_table(console, "By model", "Model", stats.by_model))
        console.print(_group_table(console, "By task", "Task", stats.by_task))
