"""`pyai-caching`: see what the cache holds, saves and costs.

```
pyai-caching demo                      # a miss, then a hit, on a throwaway embedded store
pyai-caching stats                     # entries, size, by namespace / model / task
pyai-caching spend --since 7d          # spend and savings per task and model, from the spend ledger
pyai-caching inspect --last 3          # the stored requests and responses
pyai-caching clear --older-than 30d    # delete entries (asks first)
```

Also `python -m pyai_caching ...`. The store is `--redis-url`, else `--dir` (the embedded store in that folder),
else `LLM_CACHE_REDIS_URL`, else the embedded store in `LLM_CACHE_DIR` or the user cache folder: the same choice
the library makes. Every command takes `--json` for scripts.

Exit codes: 0 success; 1 the command failed (no such entry, deletion not confirmed, unexpected error);
2 bad usage or configuration (unknown option, bad URL, bad duration); 3 the store cannot be reached (Redis down,
wrong password, unreadable database file); 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import re
import sqlite3
import sys
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import IntEnum, StrEnum
from typing import Annotated, Any, Final, NoReturn, TypeVar

import typer
from redis.exceptions import AuthenticationError, RedisError, ResponseError
from rich.console import Console, Group
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table
from rich.text import Text

from pyai_caching._browse import (
    EntryInfo,
    ScanCounts,
    Selection,
    delete_keys,
    entry_keys,
    parse_entry,
    parse_key,
    read_entries,
    read_value,
)
from pyai_caching._util.escape import escape_json_text, escape_text
from pyai_caching._util.redact import redact_url_in_text
from pyai_caching._util.tables import Column, fitted_table
from pyai_caching._version import __version__
from pyai_caching.engine.keys import KEY_PREFIX, namespace_prefix
from pyai_caching.engine.registry import CACHE_DIR_ENV, REDIS_URL_ENV, check_redis_url
from pyai_caching.exceptions import ConfigurationError
from pyai_caching.stores import LocalStore, RedisStore, Store

__all__ = ["By", "ExitCode", "app", "main", "parse_duration", "parse_since"]

T = TypeVar("T")


class ExitCode(IntEnum):
    """The exit codes of `pyai-caching` (stable: scripts may rely on them)."""

    OK = 0
    """The command did what was asked."""
    ERROR = 1
    """The command failed: no such entry, deletion not confirmed, or an unexpected error."""
    USAGE = 2
    """Bad usage or configuration: unknown option, bad URL, bad duration or date."""
    UNREACHABLE = 3
    """The store cannot be reached: Redis down or refusing the password, database file unreadable."""
    INTERRUPTED = 130
    """Interrupted (Ctrl-C)."""


_TRACEBACK_ENV: Final = "PYAI_CACHING_TRACEBACK"

app = typer.Typer(
    name="pyai-caching",
    help="See what the pyai_caching cache holds, saves and costs. Start with [bold]pyai-caching demo[/bold].",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=(
        "Store: --redis-url, else --dir, else $LLM_CACHE_REDIS_URL, else the embedded store ($LLM_CACHE_DIR or "
        "the user cache folder). Exit codes: 0 ok, 1 failed, 2 bad usage, 3 store unreachable, 130 interrupted."
    ),
)

RedisUrlOption = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        help=f"Redis URL (redis://, rediss://, unix://). Default: ${REDIS_URL_ENV}, else the embedded store.",
        show_default=False,
    ),
]
DirOption = Annotated[
    str | None,
    typer.Option(
        "--dir",
        help=f"Use the embedded store in this folder. Default: ${CACHE_DIR_ENV}, else the user cache folder.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
NamespaceOption = Annotated[
    str | None, typer.Option("--namespace", "-n", help="Only this namespace.", show_default=False)
]
TaskOption = Annotated[str | None, typer.Option("--task", "-t", help="Only this task.", show_default=False)]


# --- errors ------------------------------------------------------------------------------------------------------


class CliError(Exception):
    """A failure to report as one line, with the exit code to use."""

    def __init__(self, message: str, code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.code = code


def _fail(message: str, code: ExitCode, as_json: bool) -> NoReturn:
    if as_json:
        sys.stderr.write(escape_json_text(json.dumps({"error": message, "exit_code": int(code)}, ensure_ascii=False)))
        sys.stderr.write("\n")
    else:
        sys.stderr.write(f"pyai-caching: error: {escape_text(message)}\n")
    sys.stderr.flush()
    raise typer.Exit(int(code))


def _short(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def _store_failure(store: Store | None, error: BaseException) -> tuple[str, ExitCode]:
    """What to say when the store fails a command, and the exit code."""
    where = store.description if store is not None else "the store"
    if isinstance(store, LocalStore):
        return (
            f"cannot use the embedded store {store.path} ({_short(error)}); check that the folder exists and is "
            f"readable and writable, or pass --dir with another folder"
        ), ExitCode.UNREACHABLE
    if isinstance(error, AuthenticationError) or "NOAUTH" in str(error) or "WRONGPASS" in str(error):
        return (
            f"Redis at {where} refused the credentials ({_short(error)}); put the right user and password in "
            f"the URL (redis://user:password@host:port/db)"
        ), ExitCode.UNREACHABLE
    if isinstance(error, ResponseError) and "DB index is out of range" in str(error):
        return (
            f"the database in {where} does not exist on that server (it has fewer databases: 16 by default, "
            f"0 to 15, set by `databases` in redis.conf); pass a URL ending in an existing /db"
        ), ExitCode.USAGE
    if isinstance(error, ResponseError):
        return f"Redis at {where} answered with an error ({_short(error)})", ExitCode.UNREACHABLE
    return (
        f"cannot reach Redis at {where} ({_short(error)}); start the server or pass a reachable --redis-url "
        f"(or set {REDIS_URL_ENV})"
    ), ExitCode.UNREACHABLE


def _execute(as_json: bool, store: Store | None, work: Callable[[], Awaitable[T]]) -> T:
    """Run `work` on a fresh event loop and turn every failure into one line and an exit code."""
    try:
        return asyncio.run(_closing(store, work))
    except typer.Exit:
        raise
    except CliError as e:
        _fail(str(e), e.code, as_json)
    except ConfigurationError as e:
        _fail(str(e), ExitCode.USAGE, as_json)
    except (RedisError, sqlite3.Error, OSError) as e:
        message, code = _store_failure(store, e)
        _fail(redact_url_in_text(message), code, as_json)
    except KeyboardInterrupt:
        _fail("interrupted", ExitCode.INTERRUPTED, as_json)
    except Exception as e:
        if os.environ.get(_TRACEBACK_ENV):
            raise
        _fail(
            redact_url_in_text(
                f"unexpected {_short(e)} (set {_TRACEBACK_ENV}=1 to see the traceback, and please report it)"
            ),
            ExitCode.ERROR,
            as_json,
        )


async def _closing(store: Store | None, work: Callable[[], Awaitable[T]]) -> T:
    try:
        return await work()
    finally:
        if store is not None:
            with contextlib.suppress(Exception):  # closing must not hide the command's own result or error
                await store.close()


# --- store selection ---------------------------------------------------------------------------------------------


def _open_store(redis_url: str | None, directory: str | None) -> Store:
    """The store of a command: --redis-url, --dir, $LLM_CACHE_REDIS_URL, then the embedded store."""
    if redis_url is not None and directory is not None:
        raise CliError("pass either --redis-url or --dir, not both", ExitCode.USAGE)
    if redis_url is not None:
        if not redis_url.strip():
            raise CliError("--redis-url is empty; pass a URL such as redis://localhost:6379/0", ExitCode.USAGE)
        return _redis_store(redis_url)
    if directory is not None:
        return LocalStore(directory)
    env_url = os.environ.get(REDIS_URL_ENV)
    if env_url:
        return _redis_store(env_url)
    return LocalStore(None)


def _redis_store(url: str) -> RedisStore:
    check_redis_url(url)
    # A command line can wait a little longer than a model call would.
    return RedisStore(url, socket_timeout=5.0, connect_timeout=3.0, client_name="pyai_caching-cli")


def _store_or_exit(redis_url: str | None, directory: str | None, as_json: bool) -> Store:
    try:
        return _open_store(redis_url, directory)
    except CliError as e:
        _fail(str(e), e.code, as_json)
    except ConfigurationError as e:
        _fail(str(e), ExitCode.USAGE, as_json)


def _prefix_or_exit(namespace: str | None, as_json: bool) -> str:
    """The key prefix of `--namespace` (every entry's without it); a namespace that cannot exist is a usage error."""
    try:
        return namespace_prefix(namespace)
    except ConfigurationError as e:
        _fail(str(e), ExitCode.USAGE, as_json)


def _missing_file(store: Store) -> bool:
    """An embedded store whose file does not exist yet is empty; reading it must not create it."""
    return isinstance(store, LocalStore) and not store.path.exists()


# --- parsing -----------------------------------------------------------------------------------------------------

_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, option: str) -> float:
    """`90s`, `15m`, `12h`, `7d`, `2w` -> seconds."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise CliError(f"{option} must be a duration such as 90s, 15m, 12h, 7d or 2w, got {text!r}", ExitCode.USAGE)
    return float(match[1]) * _UNIT_SECONDS[match[2].lower()]


def parse_since(text: str, now: datetime) -> date:
    """`--since`: a duration back from now (`7d`) or a date (`2026-11-01`) -> the first day included (UTC)."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        pass
    if _DURATION_RE.match(text) is None:
        raise CliError(
            f"--since must be a duration back from now (7d, 12h, 2w) or a date (2026-11-01), got {text!r}",
            ExitCode.USAGE,
        )
    seconds = parse_duration(text, "--since")
    return datetime.fromtimestamp(now.timestamp() - seconds, UTC).date()


# --- formatting --------------------------------------------------------------------------------------------------


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _usd(amount: Decimal | None) -> str:
    if amount is None:
        return "unknown"
    if amount == 0:
        return "$0"
    text = f"{amount:.6f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"${int(whole):,}.{decimals.ljust(2, '0')}"


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _ago(seconds: float) -> str:
    seconds = max(seconds, 0)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def _when(ts: float | None, now: float) -> str:
    if ts is None:
        return "unknown"
    local = datetime.fromtimestamp(ts).astimezone()
    return f"{local:%Y-%m-%d %H:%M:%S} ({_ago(now - ts)})"


def _print_json(obj: Any) -> None:
    """JSON on stdout, every control character from data escaped (so that `cat` of it cannot drive a terminal)."""
    sys.stdout.write(escape_json_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str)) + "\n")


def _console() -> Console:
    # No markup: `[` in a path or a task name is text. Data is escaped with `_safe` before it gets here.
    return Console(highlight=False, markup=False)


def _safe(value: Any, *, multiline: bool = False) -> Text:
    """Data for the terminal: every control character escaped; long words folded, never cut."""
    return Text(escape_text(str(value), multiline=multiline), overflow="fold")


@contextmanager
def _progress(enabled: bool, label: str) -> Iterator[Callable[[int], None]]:
    """A spinner with a counter on stderr while a long scan runs (only on a terminal, never with --json)."""
    console = Console(stderr=True)
    if not enabled or not console.is_terminal:
        yield lambda n: None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=console, transient=True) as bar:
        task = bar.add_task(f"{label} 0 keys")

        def update(n: int) -> None:
            if n % 100 == 0:
                bar.update(task, description=f"{label} {n:,} keys")

        yield update


# --- stats -------------------------------------------------------------------------------------------------------


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
            "oldest": _iso(self.oldest),
            "newest": _iso(self.newest),
            "by_namespace": rows("namespace", self.by_namespace),
            "by_model": rows("model", self.by_model),
            "by_task": rows("task", self.by_task),
            "counters": self.counters,
        }


def _cost_text(cost: Decimal, unpriced: int, count: int) -> str:
    """A sum of known costs, with how many items had no price (all unpriced: `unknown`)."""
    if count == 0:
        return "-"
    if unpriced and unpriced >= count:
        return "unknown"
    return _usd(cost) + (f" + {unpriced:,} unpriced" if unpriced else "")


_GROUP_COLUMNS: Final = (
    Column(header="Entries", drop_order=1),
    Column(header="Size", drop_order=0),
    Column(header="Cost", drop_order=2),
)


def _group_table(console: Console, title: str, column: str, groups: dict[Any, _Group]) -> Table:
    rows: list[list[str | Text]] = [
        [
            _safe(name if name is not None else "(none)"),
            f"{group.entries:,}",
            _size(group.size),
            _cost_text(group.cost, group.unpriced, group.responses),
        ]
        for name, group in sorted(groups.items(), key=lambda kv: (-kv[1].entries, str(kv[0])))
    ]
    return fitted_table(console, title, [Column(header=column), *_GROUP_COLUMNS], rows)


def _print_stats(stats: _Stats, now: float) -> None:
    console = _console()
    summary = Table.grid(padding=(0, 2))
    summary.add_column(style="bold", no_wrap=True)
    summary.add_column(overflow="fold")
    summary.add_row("Store", _safe(stats.store + (" (no cache file yet)" if stats.no_file else "")))
    if stats.total.entries:
        summary.add_row(
            "Entries",
            f"{stats.total.entries:,} ({stats.request_entries:,} request-level, {stats.run_entries:,} run-level)",
        )
        summary.add_row("Size", _size(stats.total.size))
        cost = _cost_text(stats.total.cost, stats.total.unpriced, stats.total.responses)
        summary.add_row("Cost", f"{cost}: what the stored responses cost to produce (a hit saves that again)")
        summary.add_row("Oldest", _when(stats.oldest, now))
        summary.add_row("Newest", _when(stats.newest, now))
    else:
        summary.add_row("Entries", "0")
    if stats.unreadable:
        summary.add_row(
            "Unreadable",
            f"{stats.unreadable:,} ({_size(stats.unreadable_size)}): corrupt, foreign or of another version "
            "(`inspect KEY` says why)",
        )
    if stats.other_keys:
        summary.add_row("Other keys", f"{stats.other_keys:,} (locks, ledgers: not entries)")
    c = stats.counters
    if c is not None:
        ratio = f", {c['hits'] / c['requests']:.0%} hits" if c["requests"] else ""
        summary.add_row(
            "Hits / misses",
            f"{c['hits']:,} / {c['misses']:,}{ratio} (spend ledger, all time; spent {_usd(Decimal(c['cost']))}, "
            f"saved {_usd(Decimal(c['saved']))})",
        )
    else:
        summary.add_row("Hits / misses", Text(escape_text(stats.counters_note), style="dim"))
    console.print(summary)
    if stats.total.entries:
        console.print()
        console.print(_group_table(console, "By namespace", "Namespace", stats.by_namespace))
        console.print(_group_table(console, "By model", "Model", stats.by_model))
        console.print(_group_table(console, "By task", "Task", stats.by_task))


@app.command()
def stats(
    namespace: NamespaceOption = None,
    redis_url: RedisUrlOption = None,
    directory: DirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Entries, size and cost of the cache by namespace, model and task; oldest and newest entry; hits and misses
    (from the spend ledger, on Redis)."""
    prefix = _prefix_or_exit(namespace, as_json)
    store = _store_or_exit(redis_url, directory, as_json)

    async def work() -> _Stats:
        result = _Stats(store=store.description)
        if _missing_file(store):
            result.counters_note = _NO_LEDGER_LOCAL
            result.no_file = True
            return result
        counts = ScanCounts()
        with _progress(not as_json, "Scanning") as progress:
            selection = Selection(prefix=prefix)
            async for info in read_entries(store, selection, counts=counts, progress=progress):
                result.add(info)
        result.other_keys = counts.other_keys
        result.counters, result.counters_note = await _ledger_counters(store, namespace)
        return result

    result = _execute(as_json, store, work)
    if as_json:
        _print_json(result.to_dict())
    else:
        _print_stats(result, datetime.now().timestamp())


_NO_LEDGER_LOCAL: Final = "kept in the Redis spend ledger only (expense_hook=RedisSpendLedger(url))"


async def _ledger_counters(store: Store, namespace: str | None) -> tuple[dict[str, Any] | None, str]:
    """All-time hits and misses from the spend ledger, when the store is Redis and the ledger has any."""
    if not isinstance(store, RedisStore):
        return None, _NO_LEDGER_LOCAL
    from pyai_caching.spend.recorders import RedisSpendLedger

    try:
        rows = await RedisSpendLedger(store=store).read(namespace=namespace, total=True)
    except RedisError as e:
        return None, f"the spend ledger could not be read ({_short(e)})"
    if not rows:
        return None, "none recorded (record them with expense_hook=RedisSpendLedger(url))"
    total = _sum_rows(rows)
    return total, ""


# --- spend -------------------------------------------------------------------------------------------------------


def _ledger_sums() -> tuple[str, ...]:
    """The ledger's whole-number sums (imported when needed: the CLI starts without loading the library)."""
    from pyai_caching.spend.recorders import LEDGER_COUNTS

    return LEDGER_COUNTS


def _sum_rows(rows: Any) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(_ledger_sums(), 0)
    cost = saved = Decimal(0)
    for row in rows:
        for name in _ledger_sums():
            out[name] += getattr(row, name)
        cost += row.cost
        saved += row.saved
    out["cost"] = str(cost)
    out["saved"] = str(saved)
    out["hit_ratio"] = out["hits"] / out["requests"] if out["requests"] else None
    return out


class By(StrEnum):
    """What `spend --by` groups by."""

    task = "task"
    model = "model"
    day = "day"
    namespace = "namespace"


def _group_rows(rows: Any, by: By) -> list[tuple[str, dict[str, Any]]]:
    groups: dict[str, list[Any]] = {}
    for row in rows:
        value = row.day.isoformat() if by is By.day and row.day is not None else getattr(row, by.value)
        groups.setdefault(str(value), []).append(row)
    summed = [(name, _sum_rows(group)) for name, group in groups.items()]
    if by is By.day:
        return sorted(summed)
    return sorted(summed, key=lambda kv: (-Decimal(kv[1]["cost"]), -kv[1]["requests"], kv[0]))


def _spend_cells(sums: dict[str, Any]) -> list[str]:
    ratio = sums["hit_ratio"]
    spent = _usd(Decimal(sums["cost"])) + (
        f" + {sums['unpriced_requests']:,} unpriced" if sums["unpriced_requests"] else ""
    )
    saved = _usd(Decimal(sums["saved"])) + (f" + {sums['unpriced_hits']:,} unpriced" if sums["unpriced_hits"] else "")
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
        [[_safe(name), *_spend_cells(sums)] for name, sums in groups],
        footer=["Total", *_spend_cells(total)] if len(groups) > 1 else None,
    )


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


@app.command()
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
    """Spend, savings, requests, hits and misses per task and model over a period, from the Redis spend ledger."""
    now = datetime.now(UTC)
    try:
        first = parse_since(since, now)
        last = date.fromisoformat(until.strip()) if until is not None else now.date()
    except CliError as e:
        _fail(str(e), e.code, as_json)
    except ValueError:
        _fail(f"--until must be a date such as 2026-11-30, got {until!r}", ExitCode.USAGE, as_json)
    _prefix_or_exit(namespace, as_json)
    if directory is not None:
        _fail(_LEDGER_NEEDS_REDIS, ExitCode.USAGE, as_json)
    store = _store_or_exit(redis_url, None, as_json)
    if not isinstance(store, RedisStore):
        _fail(_LEDGER_NEEDS_REDIS, ExitCode.USAGE, as_json)
    groups = by or [By.task, By.model]

    async def work() -> tuple[Any, str]:
        from pyai_caching.spend.recorders import RedisSpendLedger

        ledger = RedisSpendLedger(store=store)
        found = await ledger.read(first, last, namespace=namespace, task=task, total=all_time)
        elsewhere = "" if found else await _recorded_elsewhere(ledger, first, last, all_time, namespace, task)
        return found, elsewhere

    rows, elsewhere = _execute(as_json, store, work)
    period = "all time" if all_time else f"{first.isoformat()} to {last.isoformat()} (UTC)"
    total = _sum_rows(rows)
    if as_json:
        _print_json(
            {
                "store": store.description,
                "note": elsewhere.strip() or None,
                "since": None if all_time else first.isoformat(),
                "until": None if all_time else last.isoformat(),
                "total": total,
                **{f"by_{g.value}": [{g.value: k, **v} for k, v in _group_rows(rows, g)] for g in groups},
                "rows": [
                    {
                        "day": None if r.day is None else r.day.isoformat(),
                        "namespace": r.namespace,
                        "task": r.task,
                        "model": r.model,
                        **{name: getattr(r, name) for name in _ledger_sums()},
                        "cost": str(r.cost),
                        "saved": str(r.saved),
                    }
                    for r in rows
                ],
            }
        )
        return
    console = _console()
    if not rows:
        console.print(_safe(_nothing_spent(store.description, period, namespace, task) + elsewhere))
        return
    for g in groups:
        title = f"Spend by {g.value}, {period}"
        console.print(_spend_table(console, title, g.value.capitalize(), _group_rows(rows, g), total))


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


_LEDGER_NEEDS_REDIS: Final = (
    f"the spend ledger lives in Redis; pass --redis-url or set {REDIS_URL_ENV} (the embedded store keeps no ledger)"
)


# --- inspect -----------------------------------------------------------------------------------------------------

_HEX_RE: Final = re.compile(r"^[0-9a-fA-F]{4,64}$")
_SNIPPET: Final = 600


def _clip(text: str, full: bool) -> str:
    if full or len(text) <= _SNIPPET:
        return text
    return f"{text[:_SNIPPET]}… ({len(text) - _SNIPPET:,} more characters; --full shows all)"


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _dict(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else `{}`: a planted entry may hold anything anywhere."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _line(label: str, body: str, full: bool, style: str = "cyan") -> Text:
    line = Text(label, style=style)
    line.append(escape_text(_clip(body, full), multiline=True))
    return line


def _part_line(part: Any, full: bool) -> Text:
    if not isinstance(part, dict):
        return _line("", _as_text(part), full)
    kind = _as_text(part.get("part_kind", "?"))
    label = {
        "system-prompt": "system",
        "user-prompt": "user",
        "text": "assistant",
        "thinking": "thinking",
    }.get(kind)
    if label is None:
        name = part.get("tool_name")
        label = f"{kind} {_as_text(name)}" if name else kind
    body = part.get("args") if kind in ("tool-call", "builtin-tool-call") else part.get("content")
    return _line(f"[{escape_text(label)}] ", _as_text(body), full)


def _messages_lines(messages: Any, full: bool) -> list[Text]:
    lines: list[Text] = []
    for message in _list(messages):
        if not isinstance(message, dict):
            continue
        instructions = message.get("instructions")
        if instructions:
            lines.append(_line("[instructions] ", _as_text(instructions), full))
        lines.extend(_part_line(part, full) for part in _list(message.get("parts")))
    return lines


def _tools_line(label: str, tools: Any) -> Text | None:
    names = []
    for tool in _list(tools):
        if isinstance(tool, dict):
            props = _dict(_dict(tool.get("parameters_json_schema")).get("properties"))
            names.append(f"{_as_text(tool.get('name'))}({', '.join(props)})")
    if not names:
        return None
    return _line(f"{label}: ", ", ".join(names), True, style="bold")


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "?"


def _usage_text(usage: Any) -> str:
    if not isinstance(usage, dict):
        return "unknown"
    parts = [f"{_count(usage.get('input_tokens', 0))} in", f"{_count(usage.get('output_tokens', 0))} out"]
    parts.extend(
        f"{_count(usage[name])} {name.removesuffix('_tokens').replace('_', ' ')}"
        for name in ("cache_read_tokens", "cache_write_tokens")
        if usage.get(name)
    )
    return " / ".join(parts)


def _request_lines(doc: dict[str, Any], full: bool) -> list[Text]:
    request = _dict(doc.get("request"))
    header = _dict(request.get("header"))
    params = _dict(header.get("parameters"))
    lines = [Text("Request", style="bold underline")]
    model = _dict(header.get("model"))
    if model:
        lines.append(_line("model: ", f"{_as_text(model.get('system'))}:{_as_text(model.get('name'))}", full, ""))
    if header.get("settings"):
        lines.append(_line("settings: ", _as_text(header["settings"]), full, ""))
    for label, key in (("tools", "function_tools"), ("output tools", "output_tools")):
        line = _tools_line(label, params.get(key))
        if line is not None:
            lines.append(line)
    lines.extend(_messages_lines(request.get("messages"), full))
    response = _dict(doc.get("response"))
    lines.append(Text("Response", style="bold underline"))
    lines.extend(_messages_lines([response], full))
    lines.append(Text(f"usage: {_usage_text(response.get('usage'))}"))
    return lines


def _run_lines(doc: dict[str, Any], full: bool) -> list[Text]:
    return [
        Text("Run messages", style="bold underline"),
        *_messages_lines(doc.get("new_messages"), full),
        Text("Final answer (raw: validated by the caller's output type on each hit)", style="bold underline"),
        _line("", _as_text(_final_answer(doc.get("final"))), full, ""),
        Text(f"usage: {_usage_text(doc.get('usage'))}"),
    ]


def _entry_panel(info: EntryInfo, now: float, full: bool) -> Panel:
    doc = info.document or {}
    head = Text()
    kind = "run-level (a whole run)" if info.kind == "run" else "request-level (one model response)"
    for label, value in (
        ("key", info.key),
        ("kind", kind),
        ("namespace", info.namespace or info.parts.namespace),
        ("task", info.task or "(none)"),
        ("model", info.model or "unknown"),
        ("created", _when(info.created_at, now)),
        ("cost", _usd(info.cost)),
        ("size", _size(info.size)),
        ("signed", "yes" if info.signed else "no"),
    ):
        head.append(f"{label}: ", style="bold")
        head.append(f"{escape_text(value)}\n")
    body: list[Any] = [head]
    if info.kind == "response":
        body.extend(_request_lines(doc, full))
    elif info.kind == "run":
        body.extend(_run_lines(doc, full))
    return Panel(Group(*body), title=_panel_title(info), title_align="left")


def _final_answer(final: Any) -> Any:
    """What the model answered last in a run entry: its text, or the arguments of its tool call(s)."""
    if not isinstance(final, dict):
        return final
    calls = final.get("tool_calls")
    if isinstance(calls, list) and calls:
        return calls[0].get("args") if len(calls) == 1 and isinstance(calls[0], dict) else calls
    return final.get("text")


def _panel_title(info: EntryInfo) -> Text:
    kind = {"response": "response", "run": "run"}.get(info.kind or "", "entry")
    return Text(f"{kind} {info.parts.digest[:12]}", style="bold")


def _entry_json(info: EntryInfo) -> dict[str, Any]:
    return {
        "key": info.key,
        "size_bytes": info.size,
        "signed": info.signed,
        "error": info.error,
        "entry": info.document,
    }


async def _find_entries(
    store: Store, key: str | None, selection: Selection, last: int | None, as_json: bool
) -> list[EntryInfo]:
    if key is not None and key.startswith(KEY_PREFIX):
        parts = parse_key(key)
        if parts is None:
            raise CliError(f"{key!r} is not an entry key (pyai_caching:<namespace>:r|run:{{<digest>}})", ExitCode.USAGE)
        raw = None if _missing_file(store) else await read_value(store, key)
        if raw is None:
            raise CliError(f"no entry {key} in {store.description}")
        return [parse_entry(key, parts, raw, keep_document=True)]
    if _missing_file(store):
        found = []
    else:
        with _progress(not as_json, "Searching") as progress:
            found = [info async for info in read_entries(store, selection, progress=progress)]
    if key is not None:
        if not found:
            raise CliError(f"no entry whose digest starts with {key} in {store.description}")
        if len(found) > 1:
            raise CliError(f"{len(found)} entries have a digest starting with {key}; give more characters")
    found.sort(key=lambda i: i.created_at or 0.0, reverse=True)
    chosen = found[:last] if last is not None else found
    # Read the chosen ones again, whole (the scan kept only their meta).
    out = []
    for info in chosen:
        value = await read_value(store, info.key)
        if value is not None:
            out.append(parse_entry(info.key, info.parts, value, keep_document=True))
    return out


@app.command()
def inspect(
    key: Annotated[
        str | None,
        typer.Argument(help="An entry key, or the first hex characters (4 or more) of its digest.", show_default=False),
    ] = None,
    task: TaskOption = None,
    last: Annotated[
        int | None, typer.Option("--last", "-l", min=1, help="The N most recent entries.", show_default=False)
    ] = None,
    namespace: NamespaceOption = None,
    full: Annotated[bool, typer.Option("--full", help="Do not shorten long messages.")] = False,
    redis_url: RedisUrlOption = None,
    directory: DirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show stored entries: the request (messages, tools, settings) and the response."""
    if key is None and task is None and last is None:
        _fail("give an entry KEY (or digest prefix), --task T or --last N", ExitCode.USAGE, as_json)
    if key is not None and not key.startswith(KEY_PREFIX) and not _HEX_RE.match(key):
        _fail(
            f"KEY must be an entry key (pyai_caching:...) or 4 to 64 hex characters of its digest, got {key!r}",
            ExitCode.USAGE,
            as_json,
        )
    prefix = _prefix_or_exit(namespace, as_json)
    store = _store_or_exit(redis_url, directory, as_json)
    if key is None and last is None:
        last = 10

    async def work() -> list[EntryInfo]:
        selection = Selection(
            prefix=prefix,
            task=task,
            digest_prefix=key.lower() if key is not None and not key.startswith(KEY_PREFIX) else None,
        )
        return await _find_entries(store, key, selection, last, as_json)

    entries = _execute(as_json, store, work)
    if as_json:
        _print_json([_entry_json(e) for e in entries])
        return
    console = _console()
    if not entries:
        console.print("No matching entries.", soft_wrap=True)
        return
    now = datetime.now().timestamp()
    for info in entries:
        if not info.readable:
            body = Group(_safe(info.key), _safe(f"unreadable: {info.error}"))
            console.print(Panel(body, title=_panel_title(info), title_align="left"))
        else:
            console.print(_entry_panel(info, now, full))


# --- clear -------------------------------------------------------------------------------------------------------


@app.command()
def clear(
    namespace: NamespaceOption = None,
    task: TaskOption = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than", help="Only entries written longer ago than this (90m, 12h, 7d, 2w).", show_default=False
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    redis_url: RedisUrlOption = None,
    directory: DirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete this library's entries (all, or those matching the filters). Other keys are never touched."""
    try:
        age = parse_duration(older_than, "--older-than") if older_than is not None else None
    except CliError as e:
        _fail(str(e), e.code, as_json)
    prefix = _prefix_or_exit(namespace, as_json)
    store = _store_or_exit(redis_url, directory, as_json)

    async def find() -> tuple[list[str], int | None]:
        if _missing_file(store):
            return [], 0
        selection = Selection(prefix=prefix, task=task, older_than=age)
        with _progress(not as_json, "Scanning") as progress:
            if not selection.needs_values:  # the keys alone decide: no need to read the values
                return [key async for key in entry_keys(store, selection.prefix, progress)], None
            keys: list[str] = []
            size = 0
            async for info in read_entries(store, selection, progress=progress):
                keys.append(info.key)
                size += info.size
            return keys, size

    keys, size = _execute(as_json, store, find)
    where = store.description
    shown = escape_text(where)
    if not keys:
        if as_json:
            _print_json({"store": where, "matched": 0, "deleted": 0})
        else:
            _console().print("No matching entries: nothing to delete.", soft_wrap=True)
        return
    if not yes:
        question = f"Delete {_entries(len(keys))}{_size_note(size)} from {shown}?"
        try:
            confirmed = typer.confirm(question, default=False, err=True)
        except typer.Abort:
            confirmed = False
        if not sys.stdin.isatty():
            sys.stderr.write("\n")  # the answer came from a pipe and was not echoed
        if not confirmed:
            _fail("nothing deleted (not confirmed); pass --yes to delete without asking", ExitCode.ERROR, as_json)

    async def delete() -> int:
        with _progress(not as_json, "Deleting") as progress:
            return await delete_keys(store, keys, progress)

    deleted = _execute(as_json, store, delete)
    if as_json:
        _print_json({"store": where, "matched": len(keys), "deleted": deleted})
    else:
        _console().print(f"Deleted {_entries(deleted)}{_size_note(size)} from {shown}.", soft_wrap=True)


# --- demo --------------------------------------------------------------------------------------------------------


def _duration_text(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def _print_demo(result: Any, temporary: bool) -> None:
    console = _console()
    table = Table(title="cached_agent_run(agent, prompt, 'make_profile')", title_justify="left")
    table.add_column("Call", justify="right")
    table.add_column("Cache")
    table.add_column("Time", justify="right")
    table.add_column("Model requests", justify="right")
    table.add_column("Tokens (in / out)", justify="right")
    table.add_column("Cost", justify="right")
    table.add_column("Saved", justify="right")
    for call in result.calls:
        table.add_row(
            str(call.number),
            Text("hit", style="bold green") if call.hit else Text("miss", style="yellow"),
            _duration_text(call.seconds),
            str(call.requests),
            f"{call.input_tokens:,} / {call.output_tokens:,}" if call.requests else "-",
            _usd(call.cost),
            _usd(call.saved),
        )
    console.print(table)
    say = functools.partial(console.print, soft_wrap=True)
    miss, hits = result.calls[0], result.calls[1:]
    if hits and all(call.hit for call in hits):
        last = hits[-1]
        say(
            f"A hit took {_duration_text(last.seconds)} instead of {_duration_text(miss.seconds)} "
            f"({result.speedup:,.0f}x faster) and saved a model request ({miss.input_tokens + miss.output_tokens:,} "
            f"tokens, {_usd(hits[0].saved)}): {_usd(result.saved)} saved in all."
        )
        if len(hits) > 1 and hits[0].seconds > 5 * last.seconds:
            say(
                f"The first hit ({_duration_text(hits[0].seconds)}) went through pydantic-ai's agent run, once per "
                "agent and process; later hits are answered before the run starts."
            )
    else:
        say("A repeated call was not a hit: the store failed (see the warning above).")
    same = "the same" if result.same_output else "DIFFERENT outputs"
    say(Text(f"Every call returned {same}: {result.output!r}"))
    say(Text(f"Store: {escape_text(result.store)}"))
    if temporary:
        say(
            "That store was temporary. Keep the entries with --dir DIR, then look at them with "
            "`pyai-caching stats --dir DIR` and `pyai-caching inspect --last 2 --dir DIR`."
        )


@app.command()
def demo(
    latency: Annotated[
        float, typer.Option("--latency", min=0.0, max=60.0, help="Seconds the simulated model takes to answer.")
    ] = 0.8,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            help=f"Run the demo on this Redis. Default: a temporary embedded store (${REDIS_URL_ENV} is not read).",
            show_default=False,
        ),
    ] = None,
    directory: Annotated[
        str | None,
        typer.Option(
            "--dir",
            help=f"Keep the demo's entries in the embedded store in this folder. Default: a temporary folder, "
            f"deleted at the end (${CACHE_DIR_ENV} is not read).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run an agent three times through the cache (a miss, then hits): no server, no API key.

    Uses a temporary embedded store unless --dir or --redis-url is given (the environment variables are not read,
    so the demo never writes into your real cache unless you ask). It writes to the namespace
    `pyai_caching-demo` only, and empties it first.
    """
    import tempfile

    from pyai_caching._demo import run_demo

    if redis_url is not None and directory is not None:
        _fail("pass either --redis-url or --dir, not both", ExitCode.USAGE, as_json)
    temporary = redis_url is None and directory is None
    with tempfile.TemporaryDirectory(prefix="pyai_caching-demo-") as scratch:
        store = _store_or_exit(redis_url, None if redis_url is not None else directory or scratch, as_json)
        result = _execute(as_json, store, lambda: run_demo(store, latency=latency))
    if as_json:
        _print_json(
            {
                "store": result.store,
                "temporary": temporary,
                "calls": [c.to_dict() for c in result.calls],
                "speedup": result.speedup,
                "saved": None if result.saved is None else str(result.saved),
                "same_output": result.same_output,
                "output": result.output.model_dump(mode="json"),
            }
        )
    else:
        _print_demo(result, temporary)


def _entries(n: int) -> str:
    return "1 entry" if n == 1 else f"{n:,} entries"


def _size_note(size: int | None) -> str:
    return "" if size is None else f" ({_size(size)})"


# --- entry point -------------------------------------------------------------------------------------------------


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pyai-caching {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """See what the pyai_caching cache holds, saves and costs. Start with `pyai-caching demo`."""


def main() -> None:
    """The `pyai-caching` console script."""
    app(prog_name="pyai-caching")
