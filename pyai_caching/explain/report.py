"""`pyai-caching explain`: recent misses, the nearest stored entry, and the ingredient that differed.

`miss_report` reads a store's miss log (`pyai_caching.explain.log`) and the request-level entries of the same
namespaces (`pyai_caching.explain.records`), and explains each miss with the entry most like it
(`pyai_caching.explain.compare`). `MissReport.to_json()` is the `--json` schema; `render_report` is the plain-text
form, escaped for a terminal. Nothing here shows a prompt: fingerprints hold digests, and entries are only
fingerprinted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from pyai_caching._util.escape import escape_text
from pyai_caching._util.volatile import phrase
from pyai_caching.explain.compare import ExplainedMiss, explain_miss
from pyai_caching.explain.records import read_misses, stored_entries
from pyai_caching.stores import Store

__all__ = ["REPORT_SCHEMA", "MissReport", "miss_report", "render_report"]

REPORT_SCHEMA: Final = "pyai_caching.explain/1"
"""The `schema` field of `MissReport.to_json()`; changed only when a field changes meaning or goes away."""


# --- the report -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class MissReport:
    """What `pyai-caching explain` shows."""

    namespace: str | None
    """The namespace asked for (`None`: every namespace)."""
    task: str | None
    """The task asked for (`None`: every task)."""
    recorded: int
    """Misses in the log that match the namespace and task."""
    misses: tuple[ExplainedMiss, ...]
    """The most recent of them, newest first, explained."""
    entries_compared: int
    """Request-level entries read and fingerprinted to find the nearest ones."""
    entries_truncated: bool
    """Whether more entries were stored than were read (`max_entries`)."""

    def to_json(self) -> dict[str, Any]:
        """The `--json` document (schema `REPORT_SCHEMA`)."""
        return {
            "schema": REPORT_SCHEMA,
            "namespace": self.namespace,
            "task": self.task,
            "recorded": self.recorded,
            "entries_compared": self.entries_compared,
            "entries_truncated": self.entries_truncated,
            "misses": [m.to_json() for m in self.misses],
        }


async def miss_report(
    store: Store,
    *,
    namespace: str | None = None,
    task: str | None = None,
    last: int = 10,
    max_entries: int = 20_000,
) -> MissReport:
    """The `last` most recent misses recorded in `store` (of `namespace` and `task` when given), each explained
    with the nearest of at most `max_entries` request-level entries of its namespace."""
    if isinstance(last, bool) or not isinstance(last, int) or last < 1:
        raise ValueError(f"last must be a positive number of misses, got {last!r}")
    misses = [m for m in await read_misses(store, namespace) if task is None or m.task == task]
    chosen = misses[:last]
    stored, truncated = await stored_entries(store, {m.namespace for m in chosen}, max_entries)
    return MissReport(
        namespace=namespace,
        task=task,
        recorded=len(misses),
        misses=tuple(explain_miss(m, stored.get(m.namespace, [])) for m in chosen),
        entries_compared=sum(len(c) for c in stored.values()),
        entries_truncated=truncated,
    )


def _count(n: int, one: str, many: str) -> str:
    return f"{n:,} {one if n == 1 else many}"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _short_key(key: str) -> str:
    match = re.search(r"\{([0-9a-f]{12})[0-9a-f]*\}$", key)
    return match[1] if match else key


def _value(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False) if not isinstance(value, str) else repr(value)


def render_report(report: MissReport) -> str:
    """The report as plain text for a terminal (every stored string escaped; no prompt text, no secret)."""
    e = escape_text
    scope = f"namespace {e(report.namespace)!r}" if report.namespace else "every namespace"
    if report.task:
        scope += f", task {e(report.task)!r}"
    if not report.misses:
        return (
            f"No miss recorded in {scope}. Misses are recorded by caches with explain_misses=True (the default) "
            "and kept for 7 days."
        )
    lines = [
        f"{len(report.misses)} most recent of {_count(report.recorded, 'recorded miss', 'recorded misses')} in "
        f"{scope}, each compared with the {_count(report.entries_compared, 'stored entry', 'stored entries')} of "
        "its namespace" + (" (more are stored: not all were read)" if report.entries_truncated else "") + "."
    ]
    for item in report.misses:
        miss = item.miss
        head = f"{_when(miss.at)}  namespace {e(miss.namespace)}"
        if miss.task:
            head += f"  task {e(miss.task)}"
        if miss.model:
            head += f"  model {e(miss.model)}"
        head += f"  key {e(_short_key(miss.key))}"
        lines += ["", head]
        if item.nearest is not None:
            near = item.nearest
            lines.append(
                f"  nearest entry {e(_short_key(near.key))} (task {e(near.task or '-')}, model {e(near.model)}, "
                f"stored {_when(near.created_at)}, {near.similarity:.0%} alike)"
            )
        lines.append(f"  {e(item.summary)}")
        if item.verdict == "changed":
            for d in item.differences:
                text = f"    - {e(d.ingredient)}: "
                if d.change == "added":
                    text += "added in this request" + (f" ({e(_value(d.after))})" if d.after is not None else "")
                elif d.change == "removed":
                    text += "in the entry, absent from this request"
                elif d.before is not None or d.after is not None:
                    text += f"{e(_value(d.before))} -> {e(_value(d.after))}"
                else:
                    text += "changed"
                if d.volatile:
                    text += f" (only {phrase(list(d.volatile))})"
                lines.append(text)
            if item.more_differences:
                lines.append(f"    ... and {item.more_differences} more differences")
        if not item.stored_now:
            lines.append("  (no entry is stored under this request's key now: the run failed, was read-only, or the "
                         "entry expired)")  # fmt: skip
    return "\n".join(lines)
