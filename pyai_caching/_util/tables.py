"""Tables that never cut the name of a row: numeric columns are left out first, and a name too long for the
terminal is folded onto more lines, never shortened with `…` (two models `function:aaa…` must stay two names)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from rich.cells import cell_len
from rich.console import Console
from rich.table import Table
from rich.text import Text

__all__ = ["Column", "fitted_table"]

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
