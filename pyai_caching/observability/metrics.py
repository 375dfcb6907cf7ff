"""Process-wide counters: what the cache served, what it missed, what failed, what it cost and what it saved.

```python
from pyai_caching.observability import metrics

snap = metrics.snapshot()
print(snap.total.hits, snap.total.misses, snap.total.hit_ratio, snap.total.cost_saved)
print(snap.by_task["make_profile"].cost)
```

Every cached model request and every run-level hit of this process updates the counters (thread-safe, a few
hundred nanoseconds per update). They are labelled by namespace, task and model, and `snapshot()` returns them
per label and summed. `reset()` sets everything back to zero (between tests, or after each export to a
monitoring system that expects deltas).

What counts:

* a **hit** is a lookup answered from the cache: one model request at request level, or a whole run at run level
  (`run_hits` counts those, and they are included in `hits`);
* a **miss** is a lookup that found nothing (the model is then called, unless the mode is `read_only`);
* **cost** is what the model requests this process sent cost, as priced by pydantic-ai / genai-prices; requests
  whose price is unknown are counted in `unpriced_requests` and add nothing (unknown stays distinct from zero);
* **cost saved** is what the hits would have cost (the stored cost of each entry); hits of unpriced entries are
  counted in `unpriced_hits`;
* **errors** are failed cache operations (the call went on without the cache) and unreadable entries, by kind;
* **stampede waits** are lookups that missed and waited for an identical concurrent call to produce the entry;
  one that received it counts as a hit (it called no model), one that did not (that call failed) stays a miss.

Requests made with `cache_mode="bypass"` never touch the cache and are not counted.

At most `MAX_SERIES` (1,000) label sets are counted apart. Counts for further label sets (a task name that
varies per call, a user id for instance) go to one more series labelled `"(other)"` (`OTHER_LABEL`) in
namespace, task and model, so that memory stays bounded; the totals stay exact, and the first such count logs a
warning (once per process).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from types import MappingProxyType
from typing import Any, Final

__all__ = ["MAX_SERIES", "OTHER_LABEL", "Counters", "Labels", "MetricsSnapshot", "reset", "snapshot"]

logger = logging.getLogger("pyai_caching")

_ZERO = Decimal(0)

MAX_SERIES: Final = 1000
"""How many label sets (namespace, task, model) are counted apart; further ones are counted under `OTHER_LABEL`."""

OTHER_LABEL: Final = "(other)"
"""The namespace, task and model of the series that counts the label sets beyond the first `MAX_SERIES`."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Labels:
    """Who a group of counters belongs to."""

    namespace: str | None
    """The cache namespace (`"default"` when none was given); `None` when a failure happened outside any call."""
    task: str | None
    """The task name of the call; `None` when the call had none (a bare `ResponseCache` without `task_name`)."""
    model: str | None
    """`<system>:<model name>`; `None` when not known yet (an error before the model was chosen)."""


@dataclass(frozen=True, kw_only=True, slots=True)
class Counters:
    """The counters of one label set, or a sum of several."""

    hits: int = 0
    """Lookups answered from the cache (run-level hits included)."""
    run_hits: int = 0
    """Of `hits`, those that answered a whole run before pydantic-ai's graph started (the run-level fast path)."""
    semantic_hits: int = 0
    """Of `hits`, those answered by a similar recorded prompt (`SemanticCache`) instead of an identical one."""
    misses: int = 0
    """Lookups that found no entry."""
    stampede_waits: int = 0
    """Lookups that waited for another caller to produce the entry instead of calling the model themselves."""
    stampede_wait_seconds: float = 0.0
    """Total seconds spent in those waits."""
    errors: int = 0
    """Failed cache operations and unreadable entries (the calls went on without the cache)."""
    requests: int = 0
    """Model requests sent to the model through the cache (misses, and every request in `refresh` mode)."""
    cost: Decimal = _ZERO
    """USD cost of the priced requests among `requests`."""
    unpriced_requests: int = 0
    """Requests whose cost is unknown (not included in `cost`)."""
    cost_saved: Decimal = _ZERO
    """USD the hits saved: the stored cost of each entry served."""
    unpriced_hits: int = 0
    """Hits whose entry has no known cost (not included in `cost_saved`)."""

    @property
    def lookups(self) -> int:
        """`hits + misses`."""
        return self.hits + self.misses

    @property
    def hit_ratio(self) -> float | None:
        """`hits / lookups`, or `None` before the first lookup."""
        lookups = self.lookups
        return self.hits / lookups if lookups else None

    def __add__(self, other: Counters) -> Counters:
        return Counters(**{name: getattr(self, name) + getattr(other, name) for name in _COUNTERS})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (costs as strings, to keep every digit), with `hit_ratio` after `misses`."""
        out: dict[str, Any] = {}
        for name in _COUNTERS:
            value = getattr(self, name)
            out[name] = str(value) if isinstance(value, Decimal) else value
            if name == "misses":
                out["hit_ratio"] = self.hit_ratio
        return out


_COUNTERS: Final = tuple(f.name for f in fields(Counters))
"""The names of the counters, in the order of `Counters`: the one list of them."""


@dataclass(frozen=True, kw_only=True)
class MetricsSnapshot:
    """A consistent copy of every counter at one moment."""

    total: Counters
    """Everything summed."""
    series: Mapping[Labels, Counters] = field(default_factory=dict)
    """The counters of each (namespace, task, model) seen so far: the first `MAX_SERIES` label sets, then one series
    labelled `OTHER_LABEL` for all the others."""
    errors_by_kind: Mapping[str, int] = field(default_factory=dict)
    """Failures by `<operation>:<exception type>`, for example `get:ConnectionError`, `set:TimeoutError`, or
    `decode:EntryDecodeError` for an unreadable entry."""

    def _by(self, attribute: str) -> dict[Any, Counters]:
        out: dict[Any, Counters] = {}
        for labels, counters in self.series.items():
            label = getattr(labels, attribute)
            out[label] = out[label] + counters if label in out else counters
        return out

    @property
    def by_namespace(self) -> dict[str | None, Counters]:
        """Counters summed per namespace."""
        return self._by("namespace")

    @property
    def by_task(self) -> dict[str | None, Counters]:
        """Counters summed per task name."""
        return self._by("task")

    @property
    def by_model(self) -> dict[str | None, Counters]:
        """Counters summed per model."""
        return self._by("model")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: totals, one row per label set, and errors by kind."""
        return {
            "total": self.total.to_dict(),
            "series": [
                {"namespace": k.namespace, "task": k.task, "model": k.model, **v.to_dict()}
                for k, v in self.series.items()
            ],
            "errors_by_kind": dict(self.errors_by_kind),
        }


_Series = dict[str, Any]
"""The mutable counters of one label set, by the names of `Counters` (only touched under the registry lock)."""


def _new_series() -> _Series:
    return {f.name: f.default for f in fields(Counters)}


_OTHER: Final = (OTHER_LABEL, OTHER_LABEL, OTHER_LABEL)


class _Registry:
    """The process-wide counters. The engine calls the `add_*` methods; users call `snapshot()` and `reset()`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._series: dict[tuple[str | None, str | None, str | None], _Series] = {}
        self._errors: dict[str, int] = {}
        self.max_series = MAX_SERIES
        """Label sets counted apart; the counts of further ones go to the `OTHER_LABEL` series."""
        self._warned = False

    def _get(self, namespace: str | None, task: str | None, model: str | None) -> _Series:
        key = (namespace, task, model)
        series = self._series.get(key)
        if series is None:
            if len(self._series) >= self.max_series:
                key = _OTHER
                self._warn_once()
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _new_series()
        return series

    def _warn_once(self) -> None:
        if self._warned:
            return
        self._warned = True
        logger.warning(
            "metrics: more than %s label sets (namespace, task, model) in this process; the further ones are "
            "counted together under %r (totals stay exact)",
            f"{self.max_series:,}",
            OTHER_LABEL,
        )

    def add_lookup(
        self,
        namespace: str,
        task: str | None,
        model: str | None,
        *,
        hit: bool,
        run_level: bool = False,
        cost_saved: Decimal | None = None,
    ) -> None:
        with self._lock:
            series = self._get(namespace, task, model)
            if not hit:
                series["misses"] += 1
                return
            series["hits"] += 1
            if run_level:
                series["run_hits"] += 1
            if cost_saved is None:
                series["unpriced_hits"] += 1
            else:
                series["cost_saved"] += cost_saved

    def add_semantic_hit(self, namespace: str, task: str | None, model: str | None) -> None:
        """Of the hits counted by `add_lookup`, one was answered by a similar prompt (the semantic cache)."""
        with self._lock:
            self._get(namespace, task, model)["semantic_hits"] += 1

    def add_request(self, namespace: str, task: str | None, model: str | None, cost: Decimal | None) -> None:
        with self._lock:
            series = self._get(namespace, task, model)
            series["requests"] += 1
            if cost is None:
                series["unpriced_requests"] += 1
            else:
                series["cost"] += cost

    def add_stampede_wait(
        self,
        namespace: str,
        task: str | None,
        model: str | None,
        seconds: float,
        *,
        served: bool,
        cost_saved: Decimal | None = None,
    ) -> None:
        """A lookup that missed waited for an identical call; when it was `served` that call's entry, the miss
        recorded for the lookup becomes a hit."""
        with self._lock:
            series = self._get(namespace, task, model)
            series["stampede_waits"] += 1
            series["stampede_wait_seconds"] += seconds
            if not served:
                return
            series["misses"] = max(series["misses"] - 1, 0)
            series["hits"] += 1
            if cost_saved is None:
                series["unpriced_hits"] += 1
            else:
                series["cost_saved"] += cost_saved

    def add_error(self, kind: str, namespace: str | None, task: str | None, model: str | None) -> None:
        with self._lock:
            self._get(namespace, task, model)["errors"] += 1
            self._errors[kind] = self._errors.get(kind, 0) + 1

    def snapshot(self) -> MetricsSnapshot:
        with self._lock:
            series = {
                Labels(namespace=ns, task=task, model=model): Counters(**s)
                for (ns, task, model), s in self._series.items()
            }
            errors = dict(self._errors)
        total = Counters()
        for counters in series.values():
            total += counters
        return MetricsSnapshot(total=total, series=MappingProxyType(series), errors_by_kind=MappingProxyType(errors))

    def reset(self) -> None:
        with self._lock:
            self._series.clear()
            self._errors.clear()


REGISTRY = _Registry()
"""The counters of this process (the engine writes here; read them with `snapshot()`)."""


def snapshot() -> MetricsSnapshot:
    """A consistent copy of every counter of this process."""
    return REGISTRY.snapshot()


def reset() -> None:
    """Set every counter of this process back to zero."""
    REGISTRY.reset()
