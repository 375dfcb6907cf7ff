"""How the CLI shows things: numbers, money and times as text; data escaped for the terminal; JSON for scripts; a
progress spinner; and tables that never cut the name of a row.

Every string that comes from data (a task, a model, a key, a path, a prompt) reaches the terminal through `safe`
(or `escape_text`), never raw: a control character is shown escaped (`\\x1b`), so data cannot drive the terminal.
Tables leave value columns out first, and fold a name too long for the terminal onto more lines, never shorten it
with `…` (two models `function:aaa…` must stay two names).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from rich.cells import cell_len
from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table
from rich.text import Text

from pyai_caching._util.escape import escape_json_text, escape_text

__all__ = [
    "Column",
    "fitted_table",
    "iso_time",
    "make_console",
    "print_json",
    "safe",
    "scan_progress",
    "size_text",
    "usd",
    "when",
]


# --- text --------------------------------------------------------------------------------------------------------


def size_text(n: int) -> str:
    """A size in bytes as `512 B`, `1.5 KiB`, `3.2 MiB`."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def usd(amount: Decimal | None) -> str:
    """`$1,234.50`, `$0.0024`, `$0`; `None` (no price) is `unknown`, never zero."""
    if amount is None:
        return "unknown"
    if amount == 0:
        return "$0"
    text = f"{amount:.6f}".rstrip("0")
    whole, _, decimals = text.partition(".")
    return f"${int(whole):,}.{decimals.ljust(2, '0')}"


def iso_time(ts: float | None) -> str | None:
    """A Unix time as an ISO 8601 UTC time to the second (for `--json`)."""
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _ago(seconds: float) -> str:
    seconds = max(seconds, 0)
    for unit, length in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= length:
            return f"{seconds / length:.0f} {unit} ago"
    return f"{seconds:.0f} s ago"


def when(ts: float | None, now: float) -> str:
    """A Unix time in local time, and how long before `now` it was: `2026-11-30 14:02:11 (3 h ago)`."""
    if ts is None:
        return "unknown"
    local = datetime.fromtimestamp(ts).astimezone()
    return f"{local:%Y-%m-%d %H:%M:%S} ({_ago(now - ts)})"


# --- output ------------------------------------------------------------------------------------------------------


def print_json(obj: Any) -> None:
    """JSON on stdout, every control character from data escaped (so that `cat` of it cannot drive a terminal)."""
    sys.stdout.write(escape_json_text(json.dumps(obj, indent=2, ensure_ascii=False, default=str)) + "\n")


def make_console() -> Console:
    """The console for a command's output (stdout)."""
    # No markup: `[` in a path or a task name is text. Data is escaped with `safe` before it gets here.
    return Console(highlight=False, markup=False)


def safe(value: Any, *, multiline: bool = False) -> Text:
    """Data for the terminal: every control character escaped; long words folded, never cut."""
    return Text(escape_text(str(value), multiline=multiline), overflow="fold")


@contextmanager
def scan_progress(enabled: bool, label: str) -> Iterator[Callable[[int], None]]:
    """A spinner with a counter on stderr while a long scan runs (only on a terminal, never with --json)."""
    stderr = Console(stderr=True)
    if not enabled or not stderr.is_terminal:
        yield lambda n: None
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=stderr, transient=True) as bar:
        task = bar.add_task(f"{label} 0 keys")

        def update(n: int) -> None:
            if n % 100 == 0:
                bar.update(task, description=f"{label} {n:,} keys")

        yield update


# --- tables ------------------------------------------------------------------------------------------------------

_UNLIMITED: Final = 1_000_000
"""Width to measure a table's natural width at (Rich clamps a measurement to the width it is given)."""
_NAME_ROOM: Final = 40
"""When names cannot fit on one line whatever is left out, they get at least this many characters."""


@dataclass(frozen=True, kw_only=True)
class Column:
    """One column of a `fitted_table`."""

    header: str
    """The column's title."""
    drop_order: int | None = None
    """`None`: the column names the row and is always shown (left-aligned, folded when too long). A number: a
    right-aligned value column, left out when the table is too wide, lowest numbers first."""


def _build(
    title: str, columns: Sequence[Column], rows: Sequence[Sequence[str | Text]], footer: Sequence[str] | None
) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold", show_footer=footer is not None)
    for i, column in enumerate(columns):
        names = column.drop_order is None
        table.add_column(
            column.header,
            footer=footer[i] if footer is not None else "",
            justify="left" if names else "right",
            overflow="fold",
            no_wrap=not names,
        )
    for row in rows:
        table.add_row(*row)
    return table


def _width(cell: str | Text) -> int:
    return cell.cell_len if isinstance(cell, Text) else cell_len(cell)


def _names_width(columns: Sequence[Column], rows: Sequence[Sequence[str | Text]]) -> int:
    """The natural width of the name columns (the longest name or header of each)."""
    return sum(
        max([cell_len(column.header), *(_width(row[i]) for row in rows)])
        for i, column in enumerate(columns)
        if column.drop_order is None
    )


def fitted_table(
    console: Console,
    title: str,
    columns: Sequence[Column],
    rows: Sequence[Sequence[str | Text]],
    footer: Sequence[str] | None = None,
) -> Table:
    """A table as wide as `console` allows, its names never cut.

    Value columns are left out (lowest `drop_order` first, and named in a caption) until the names fit on one
    line; the most important one (highest `drop_order`) always stays. When the names cannot fit that way, as few
    columns are left out as give them `_NAME_ROOM` characters, and longer names are folded onto more lines.
    """
    names = _names_width(columns, rows)
    keep = list(range(len(columns)))
    order = sorted(
        (i for i, c in enumerate(columns) if c.drop_order is not None), key=lambda i: columns[i].drop_order or 0
    )
    candidates: list[tuple[int, Table, list[str]]] = []
    for step in range(max(len(order), 1)):  # the most important value column always stays
        if step:
            keep.remove(order[step - 1])
        table = _build(
            title,
            [columns[i] for i in keep],
            [[row[i] for i in keep] for row in rows],
            None if footer is None else [footer[i] for i in keep],
        )
        dropped = [columns[i].header for i in order[:step]]
        natural = console.measure(table, options=console.options.update_width(_UNLIMITED)).maximum
        if natural <= console.width:
            return _with_caption(table, dropped)
        candidates.append((console.width - (natural - names), table, dropped))
    room = min(names, _NAME_ROOM)
    _, table, dropped = next((c for c in candidates if c[0] >= room), candidates[-1])
    return _with_caption(table, dropped)


def _with_caption(table: Table, dropped: list[str]) -> Table:
    if dropped:
        table.caption = f"Left out at this width: {', '.join(dropped)} (widen the terminal, or use --json)"
        table.caption_justify = "left"
    return table
