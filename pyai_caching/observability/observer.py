"""Engine hooks for observability: counters (`pyai_caching.metrics`) and OpenTelemetry.

OpenTelemetry, when `opentelemetry-api` is importable (it comes with pydantic-ai):

* a request-level lookup inside an instrumented run (`Agent(instrument=True)`, `Agent.instrument_all()`,
  `logfire.instrument_pydantic_ai()`) adds attributes to the model-request span pydantic-ai opened for it
  (its `Instrumentation` capability is the outermost one, so that span is current when the cache runs);
* a lookup outside an instrumented run (no pydantic-ai span, or a run-level hit that never starts the agent
  graph) opens a short span `pyai_caching.lookup` as a child of whatever span is current.

Attributes (never any prompt or response content): `pyai_caching.hit`, `pyai_caching.level` (`request` or
`run`), `pyai_caching.key_prefix` (the first 12 hex characters of the key's SHA-256 digest),
`pyai_caching.store` (the store's description, passwords redacted), `pyai_caching.namespace`,
`pyai_caching.task`, `pyai_caching.model`, `pyai_caching.wait_ms` (time the lookup took),
`pyai_caching.cost_saved` (USD, on a hit, when known) and `pyai_caching.cost` (USD, on the request that went to
the model, when known). A miss that waits for an identical concurrent call (stampede protection) adds
`pyai_caching.stampede_wait_ms`, and `pyai_caching.hit=true` when it received that call's entry; outside an
instrumented run the wait is a span `pyai_caching.stampede_wait`. A cache failure adds a `pyai_caching.error`
event (attribute `pyai_caching.error.kind`, such as `get:ConnectionError`) to the current span.

The cost of all this on a hit without an OpenTelemetry SDK configured is a few microseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pyai_caching._version import __version__
from pyai_caching.observability.metrics import REGISTRY

if TYPE_CHECKING:
    from pyai_caching.engine.context import CallRecord
    from pyai_caching.engine.entries import ResponseEntry, RunEntry
    from pyai_caching.engine.ports import CacheView

__all__ = [
    "Observability",
    "cache_error",
    "now_ns",
    "request_cost",
    "request_lookup",
    "run_hit",
    "semantic_hit",
    "stampede_wait",
]

_trace: Any
_NoOpTracer: Any
try:
    from opentelemetry import trace as _trace
    from opentelemetry.trace import NoOpTracer as _NoOpTracer
except ImportError:  # pragma: no cover - opentelemetry-api comes with pydantic-ai-slim
    _trace = _NoOpTracer = None

LOOKUP_SPAN = "pyai_caching.lookup"
"""The name of the span opened for a lookup that has no pydantic-ai model-request span around it."""

WAIT_SPAN = "pyai_caching.stampede_wait"
"""The span of a wait for an identical concurrent call's entry, outside an instrumented run."""

_tracer: Any = None

now_ns = time.time_ns
"""The clock of lookup timings (wall-clock nanoseconds, as OpenTelemetry span times are)."""


def _get_tracer() -> Any:
    global _tracer
    if _tracer is None and _trace is not None:
        # A proxy: it follows a tracer provider configured after this call.
        _tracer = _trace.get_tracer("pyai_caching", __version__)
    return _tracer


def _key_prefix(key: str) -> str:
    start = key.rfind("{")
    return key[start + 1 : start + 13] if start >= 0 else ""


def _instrumented(ctx: Any) -> bool:
    """Whether pydantic-ai instruments this run (its model-request span is then the current span)."""
    tracer = getattr(ctx, "tracer", None)
    return tracer is not None and _NoOpTracer is not None and not isinstance(tracer, _NoOpTracer)


def _attributes(
    cache: CacheView,
    key: str,
    model: str,
    level: str,
    hit: bool,
    started_ns: int,
    ended_ns: int,
    cost_saved: Decimal | None,
) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "pyai_caching.hit": hit,
        "pyai_caching.level": level,
        "pyai_caching.key_prefix": _key_prefix(key),
        "pyai_caching.store": cache.resolved_store.description,
        "pyai_caching.namespace": cache.resolved_namespace,
        "pyai_caching.model": model,
        "pyai_caching.wait_ms": (ended_ns - started_ns) / 1e6,
    }
    if cache.task_name is not None:
        attributes["pyai_caching.task"] = cache.task_name
    if hit and cost_saved is not None:
        attributes["pyai_caching.cost_saved"] = float(cost_saved)
    return attributes


def _lookup_span(
    attributes: Callable[[], dict[str, Any]], started_ns: int, ended_ns: int, *, name: str = LOOKUP_SPAN
) -> None:
    tracer = _get_tracer()
    if tracer is None:
        return
    span = tracer.start_span(name, start_time=started_ns)
    if span.is_recording():
        span.set_attributes(attributes())
    span.end(end_time=ended_ns)


def request_lookup(
    cache: CacheView,
    ctx: Any,
    key: str,
    model: str,
    started_ns: int,
    entry: ResponseEntry | None,
    cost_saved: Decimal | None,
) -> None:
    """A request-level lookup ended: a hit when `entry` is the entry served, a miss when it is `None`."""
    hit = entry is not None
    REGISTRY.add_lookup(cache.resolved_namespace, cache.task_name, model, hit=hit, cost_saved=cost_saved)
    if _trace is None:
        return
    ended_ns = time.time_ns()
    if _instrumented(ctx):
        span = _trace.get_current_span()
        if span.is_recording():
            span.set_attributes(_attributes(cache, key, model, "request", hit, started_ns, ended_ns, cost_saved))
        return
    _lookup_span(
        lambda: _attributes(cache, key, model, "request", hit, started_ns, ended_ns, cost_saved), started_ns, ended_ns
    )


def request_cost(cache: CacheView, ctx: Any, model: str, cost: Decimal | None) -> None:
    """A request went to the model through the cache and cost `cost` (`None`: unknown)."""
    REGISTRY.add_request(cache.resolved_namespace, cache.task_name, model, cost)
    if cost is not None and _trace is not None and _instrumented(ctx):
        span = _trace.get_current_span()
        if span.is_recording():
            span.set_attribute("pyai_caching.cost", float(cost))


def run_hit(
    cache: CacheView, key: str, entry: RunEntry, started_ns: int, cost_saved: Decimal | None, waited: float | None
) -> None:
    """A whole run was answered by the run-level fast path (no pydantic-ai span exists for it).

    `waited` is how long the call first waited for an identical call of this process that ran the agent.
    """
    model = entry.meta.model
    REGISTRY.add_lookup(
        cache.resolved_namespace, cache.task_name, model, hit=True, run_level=True, cost_saved=cost_saved
    )
    if waited is not None:  # the hit is counted above; this adds the wait
        REGISTRY.add_stampede_wait(cache.resolved_namespace, cache.task_name, model, waited, served=False)
    if _trace is None:
        return
    ended_ns = time.time_ns()
    if waited is not None:
        wait_started_ns = started_ns - int(waited * 1e9)

        def wait_attributes() -> dict[str, Any]:
            out = _attributes(cache, key, model, "run", True, wait_started_ns, started_ns, cost_saved)
            out["pyai_caching.stampede_wait_ms"] = waited * 1000
            return out

        _lookup_span(wait_attributes, wait_started_ns, started_ns, name=WAIT_SPAN)
    _lookup_span(
        lambda: _attributes(cache, key, model, "run", True, started_ns, ended_ns, cost_saved), started_ns, ended_ns
    )


def stampede_wait(
    cache: CacheView,
    ctx: Any,
    key: str,
    model: str,
    seconds: float,
    entry: ResponseEntry | None,
    cost_saved: Decimal | None,
) -> None:
    """A lookup missed, then waited `seconds` for an identical concurrent call (the stampede lock).

    `entry` is what that call produced (the miss is then counted as a hit), or `None` when this call has to call
    the model itself (the other call failed, or its lock expired).
    """
    served = entry is not None
    REGISTRY.add_stampede_wait(
        cache.resolved_namespace, cache.task_name, model, seconds, served=served, cost_saved=cost_saved
    )
    if _trace is None:
        return
    if _instrumented(ctx):
        span = _trace.get_current_span()
        if span.is_recording():
            span.set_attribute("pyai_caching.stampede_wait_ms", seconds * 1000)
            if served:
                span.set_attribute("pyai_caching.hit", True)
                if cost_saved is not None:
                    span.set_attribute("pyai_caching.cost_saved", float(cost_saved))
        return
    ended_ns = time.time_ns()
    started_ns = ended_ns - int(seconds * 1e9)

    def attributes() -> dict[str, Any]:
        out = _attributes(cache, key, model, "request", served, started_ns, ended_ns, cost_saved)
        out["pyai_caching.stampede_wait_ms"] = seconds * 1000
        return out

    _lookup_span(attributes, started_ns, ended_ns, name=WAIT_SPAN)


def cache_error(operation: str, error: BaseException, record: CallRecord | None) -> None:
    """A cache operation failed (or an entry could not be read); the call goes on without the cache."""
    kind = f"{operation}:{type(error).__name__}"
    owner = record.owner if record is not None else None
    namespace = getattr(owner, "resolved_namespace", None)
    task = getattr(owner, "task_name", None)
    model = record.models[-1] if record is not None and record.models else None
    REGISTRY.add_error(kind, namespace, task, model)
    if _trace is not None:
        span = _trace.get_current_span()
        if span.is_recording():
            span.add_event("pyai_caching.error", {"pyai_caching.error.kind": kind})


def semantic_hit(cache: CacheView, model: str, similarity: float) -> None:
    """Count a semantic hit and mark the current span (without the prompts: they may be personal data)."""
    REGISTRY.add_semantic_hit(cache.resolved_namespace, cache.task_name, model)
    if _trace is not None:
        span = _trace.get_current_span()
        if span.is_recording():
            span.set_attributes({"pyai_caching.semantic": True, "pyai_caching.semantic.similarity": similarity})


class Observability:
    """The engine's `Observer`: counters in `pyai_caching.metrics` and OpenTelemetry attributes and spans."""

    request_lookup = staticmethod(request_lookup)
    request_cost = staticmethod(request_cost)
    run_hit = staticmethod(run_hit)
    stampede_wait = staticmethod(stampede_wait)
    cache_error = staticmethod(cache_error)
    semantic_hit = staticmethod(semantic_hit)
