"""`pyai-caching explain`: recent misses, the nearest stored entry, and the ingredient that differed.

`miss_report` reads a store's miss log (`pyai_caching.explain.log`) and the request-level entries of the same
namespaces, and explains each miss with the entry most like it (`pyai_caching._util.explain`, the logic that
explains a cassette miss in the pytest plugin, applied to fingerprints). `MissReport.to_json()` is the `--json`
schema; `render_report` is the plain-text form, escaped for a terminal. Nothing here shows a prompt: fingerprints
hold digests, and entries are only fingerprinted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pyai_caching._util.escape import escape_text
from pyai_caching._util.explain import MISSING, differences, nearest, where
from pyai_caching._util.volatile import phrase
from pyai_caching.engine.keys import KEY_PREFIX, KeyKind
from pyai_caching.explain.fingerprint import is_digest, volatile_only
from pyai_caching.explain.log import MISS_KIND
from pyai_caching.explain.reading import Candidate, Miss, candidates, leaves, read_misses
from pyai_caching.stores import Store

__all__ = [
    "REPORT_SCHEMA",
    "Difference",
    "ExplainedMiss",
    "Miss",
    "MissReport",
    "NearestEntry",
    "Verdict",
    "explain_miss",
    "miss_report",
    "read_misses",
    "render_report",
]

REPORT_SCHEMA: Final = "pyai_caching.explain/1"
"""The `schema` field of `MissReport.to_json()`; changed only when a field changes meaning or goes away."""

Verdict = Literal["volatile_token", "changed", "same_ingredients", "no_other_entry"]
"""Why a miss missed, in one word:

* `volatile_token`: the nearest entry differs only in volatile tokens (a date, a time, a UUID) of some texts;
* `changed`: it differs in at least one ingredient in another way (listed in `differences`);
* `same_ingredients`: the nearest entry has the same ingredients (the key differs by `cache_version`, or the
  entry was written by another version of the key schema);
* `no_other_entry`: no other entry stored in the namespace before the miss is left to compare with."""

_MISS_KEY_RE: Final = re.compile(
    "^" + re.escape(KEY_PREFIX) + r"(?P<namespace>[^:]+):" + MISS_KIND + r":\{(?P<page>[0-9a-f]{2})\}$"
)
_ENTRY_KEY_RE: Final = re.compile(
    "^" + re.escape(KEY_PREFIX) + r"(?P<namespace>[^:]+):" + KeyKind.REQUEST + r":\{[0-9a-f]{64}\}$"
)
_BATCH: Final = 64
_SHORTLIST: Final = 8
_MAX_DIFFERENCES: Final = 12
_MAX_TEXT: Final = 200
_MAX_TIME: Final = 253402300799.0
_MAX_DEPTH: Final = 32


# --- explaining one miss (pure) ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class NearestEntry:
    """The stored entry most like a miss."""

    key: str
    """Its store key."""
    task: str | None
    """The task that wrote it."""
    model: str
    """`<system>:<model name>` that answered it."""
    created_at: float
    """Unix time it was written."""
    similarity: float
    """How alike the two requests' ingredients are, from 0 to 1."""


@dataclass(frozen=True, kw_only=True)
class Difference:
    """One ingredient in which a miss differs from its nearest entry."""

    ingredient: str
    """Which, in words: `tool 'search' description`, `message 1, part 1 (user-prompt) content`, `setting 'seed'`."""
    area: str
    """`model`, `settings`, `tools`, `output`, `instructions`, `messages` or `parameters`."""
    change: Literal["changed", "added", "removed"]
    """`added`: only the miss has it; `removed`: only the entry has it."""
    volatile: tuple[str, ...] = ()
    """When the two texts differ only in volatile tokens: their kinds (`date`, `time`, `timestamp`, `uuid`,
    `unix_time`, `weekday`); empty otherwise."""
    before: Any = None
    """The entry's value when it is kept in clear (a number, a flag, a name), else `None`."""
    after: Any = None
    """The miss's value when it is kept in clear, else `None`."""

    def to_json(self) -> dict[str, Any]:
        return {
            "ingredient": self.ingredient,
            "area": self.area,
            "change": self.change,
            "volatile": list(self.volatile),
            "before": self.before,
            "after": self.after,
        }


@dataclass(frozen=True, kw_only=True)
class ExplainedMiss:
    """A miss, the entry nearest to it and what differed."""

    miss: Miss
    """The miss as recorded."""
    verdict: Verdict
    """Why it missed, in one word (see `Verdict`)."""
    summary: str
    """Why it missed, in one sentence (names ingredients, never their content)."""
    nearest: NearestEntry | None
    """The most similar other entry of the namespace stored before the miss, if any."""
    differences: tuple[Difference, ...]
    """The ingredients that differ (at most 12)."""
    more_differences: int
    """How many further differences were left out."""
    stored_now: bool
    """Whether an entry is stored under the miss's own key now (the model's answer was cached after the miss)."""

    def to_json(self) -> dict[str, Any]:
        nearest = self.nearest
        return {
            "at": _iso(self.miss.at),
            "at_unix": self.miss.at,
            "namespace": self.miss.namespace,
            "task": self.miss.task,
            "model": self.miss.model,
            "key": self.miss.key,
            "stored_now": self.stored_now,
            "verdict": self.verdict,
            "summary": self.summary,
            "nearest": None
            if nearest is None
            else {
                "key": nearest.key,
                "task": nearest.task,
                "model": nearest.model,
                "created_at": _iso(nearest.created_at),
                "similarity": round(nearest.similarity, 3),
            },
            "differences": [d.to_json() for d in self.differences],
            "more_differences": self.more_differences,
        }


def _area(path: tuple[str | int, ...]) -> str:
    if path[:2] == ("header", "model"):
        return "model"
    if path[:2] == ("header", "settings"):
        return "settings"
    if path[:2] == ("header", "parameters") and len(path) >= 3:
        group = str(path[2])
        if group == "function_tools" or group == "native_tools":
            return "tools"
        if group.startswith("output") or group == "prompted_output_template":
            return "output"
        if group == "instructions":
            return "instructions"
        return "parameters"
    if path[:1] == ("messages",):
        return "messages"
    return "request"


def _shown(value: Any) -> Any:
    """A value kept in clear (number, flag, name) for the report; digests and structures are not shown."""
    if value is MISSING or is_digest(value) or isinstance(value, dict | list):
        return None
    return value


def _difference(path: tuple[str | int, ...], old: Any, new: Any, docs: tuple[dict[str, Any], ...]) -> Difference:
    change: Literal["changed", "added", "removed"] = (
        "added" if old is MISSING else "removed" if new is MISSING else "changed"
    )
    return Difference(
        ingredient=where(path, docs),
        area=_area(path),
        change=change,
        volatile=volatile_only(old, new) or (),
        before=_shown(old),
        after=_shown(new),
    )


def _pick(miss: Miss, candidates: Sequence[Candidate]) -> tuple[Candidate, float] | None:
    if not candidates:
        return None
    own = frozenset(leaves(miss.fingerprint))

    def score(c: Candidate) -> tuple[float, bool, bool]:
        union = len(own | c.leaves) or 1
        return len(own & c.leaves) / union, c.task == miss.task, c.model == miss.model

    shortlist = sorted(candidates, key=score, reverse=True)[:_SHORTLIST]
    found = nearest(miss.fingerprint, [c.fingerprint for c in shortlist])
    assert found is not None
    return shortlist[found[0]], found[1]


def explain_miss(miss: Miss, stored: Sequence[Candidate]) -> ExplainedMiss:
    """Explain `miss` with the entries stored in its namespace (pure)."""
    stored_now = any(c.key == miss.key for c in stored)
    # Only entries that were there when the request missed can say why it missed (later ones are its consequences).
    earlier = [c for c in stored if c.key != miss.key and c.created_at <= miss.at]
    picked = _pick(miss, earlier)
    if picked is None:
        return ExplainedMiss(
            miss=miss,
            verdict="no_other_entry",
            summary=(
                f"No entry stored in namespace {miss.namespace!r} before this miss is left to compare with: "
                "nothing like this request had been cached (or it expired, or was cleared)."
            ),
            nearest=None,
            differences=(),
            more_differences=0,
            stored_now=stored_now,
        )
    candidate, similarity = picked
    nearest_entry = NearestEntry(
        key=candidate.key,
        task=candidate.task,
        model=candidate.model,
        created_at=candidate.created_at,
        similarity=similarity,
    )
    docs = (miss.fingerprint, candidate.fingerprint)
    found = differences(candidate.fingerprint, miss.fingerprint)
    diffs = tuple(_difference(path, old, new, docs) for path, old, new in found[:_MAX_DIFFERENCES])
    verdict: Verdict
    if not found:
        verdict = "same_ingredients"
        summary = "The nearest entry has the same ingredients: " + (
            "the key differs by cache_version (this cache sets one)."
            if miss.versioned
            else "it was stored under another cache_version, or by another version of pyai_caching."
        )
    elif len(found) <= _MAX_DIFFERENCES and all(d.volatile for d in diffs):
        verdict = "volatile_token"
        kinds = sorted({k for d in diffs for k in d.volatile})
        where_ = _join([d.ingredient for d in diffs])
        summary = (
            f"The only difference is {phrase(kinds)} in {where_}: a text that changes on every call never hits. "
            "Keep such values out of prompts and instructions (round them, or pass them through a tool)."
        )
    else:
        verdict = "changed"
        listed = [f"{d.ingredient} ({d.change})" for d in diffs[:3]]
        extra = len(found) - len(listed)
        summary = "Differs from the nearest entry in " + _join(listed) + (f" and {extra} more" if extra else "") + "."
    return ExplainedMiss(
        miss=miss,
        verdict=verdict,
        summary=summary,
        nearest=nearest_entry,
        differences=diffs,
        more_differences=max(0, len(found) - _MAX_DIFFERENCES),
        stored_now=stored_now,
    )


def _join(items: Sequence[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


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
    stored, truncated = await candidates(store, {m.namespace for m in chosen}, max_entries)
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


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
