"""Explaining one miss: the nearest entry stored before it, and the ingredients that differ. Pure: no I/O.

The comparison is the one that explains a cassette miss in the pytest plugin (`pyai_caching._util.explain`),
applied to fingerprints (`pyai_caching.explain.fingerprint`): they keep the request's shape with digests in place
of its texts, so the same walk names the same ingredients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pyai_caching._util.explain import MISSING, differences, nearest, where
from pyai_caching._util.volatile import phrase
from pyai_caching.explain.fingerprint import is_digest, volatile_only
from pyai_caching.explain.records import Miss, StoredEntry, leaves

__all__ = ["Difference", "ExplainedMiss", "NearestEntry", "Verdict", "explain_miss", "iso"]

Verdict = Literal["volatile_token", "changed", "same_ingredients", "no_other_entry"]
"""Why a miss missed, in one word:

* `volatile_token`: the nearest entry differs only in volatile tokens (a date, a time, a UUID) of some texts;
* `changed`: it differs in at least one ingredient in another way (listed in `differences`);
* `same_ingredients`: the nearest entry has the same ingredients (the key differs by `cache_version`, or the
  entry was written by another version of the key schema);
* `no_other_entry`: no other entry stored in the namespace before the miss is left to compare with."""

_SHORTLIST: Final = 8
_MAX_DIFFERENCES: Final = 12


def iso(ts: float) -> str:
    """A Unix time as ISO 8601 in UTC, to the second (`2026-03-02T17:40:12Z`)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


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
            "at": iso(self.miss.at),
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
                "created_at": iso(nearest.created_at),
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


def _pick(miss: Miss, candidates: Sequence[StoredEntry]) -> tuple[StoredEntry, float] | None:
    if not candidates:
        return None
    own = frozenset(leaves(miss.fingerprint))

    def score(c: StoredEntry) -> tuple[float, bool, bool]:
        union = len(own | c.leaves) or 1
        return len(own & c.leaves) / union, c.task == miss.task, c.model == miss.model

    shortlist = sorted(candidates, key=score, reverse=True)[:_SHORTLIST]
    found = nearest(miss.fingerprint, [c.fingerprint for c in shortlist])
    assert found is not None
    return shortlist[found[0]], found[1]


def explain_miss(miss: Miss, stored: Sequence[StoredEntry]) -> ExplainedMiss:
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
