"""What the engine needs from the features around it, as small protocols the engine owns.

The engine (keys, entries, store access, single-flight, the fast path) never imports a feature. Where it must reach
one, it goes through this module:

* `CacheView`: the capability being served (`pyai_caching.ResponseCache` implements it). It prices requests and
  hits (spend), checks and charges budgets (spend) and may carry a `SemanticIndex` (the semantic feature).
* `SemanticIndex`: a lookup by meaning after an exact miss, and the recording of a new answer.
* `Observer`: counters and OpenTelemetry (`pyai_caching.observability` installs one when the package is imported);
  the default observes nothing.
* `MissListener`: called on every request-level miss (used by `pyai-caching explain`).
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from pydantic_ai.messages import ModelResponse
    from pydantic_ai.models import Model
    from pydantic_ai.usage import RequestUsage, RunUsage

    from pyai_caching.engine.access import StoreAccess
    from pyai_caching.engine.canonical import CanonicalRequest
    from pyai_caching.engine.context import CallRecord
    from pyai_caching.engine.entries import ResponseEntry, RunEntry
    from pyai_caching.stores import Store
    from pyai_caching.types import CacheMode

__all__ = ["BudgetCharge", "CacheView", "MissListener", "Observer", "SemanticIndex", "install_observer", "observer"]


class SemanticIndex(Protocol):
    """Answers a request by meaning after its exact lookup missed (`pyai_caching.SemanticCache`)."""

    async def lookup(
        self,
        cache: CacheView,
        access: StoreAccess,
        namespace: str,
        canonical: CanonicalRequest,
        record: CallRecord | None,
        model_label: str,
    ) -> tuple[ResponseEntry | None, Any]:
        """The entry of the most similar recorded request, if any, and a probe to hand to `remember`."""
        ...

    async def remember(
        self,
        access: StoreAccess,
        namespace: str,
        canonical: CanonicalRequest,
        key: str,
        probe: Any,
        record: CallRecord | None,
    ) -> None:
        """Index the request just answered by the model and stored under `key`."""
        ...


class CacheView(Protocol):
    """The capability the engine serves, as the engine sees it."""

    @property
    def task_name(self) -> str | None: ...
    @property
    def lock_ttl(self) -> float: ...
    @property
    def resolved_namespace(self) -> str: ...
    @property
    def resolved_store(self) -> Store: ...
    @property
    def resolved_mode(self) -> CacheMode: ...
    @property
    def access(self) -> StoreAccess: ...
    @property
    def key_salt(self) -> str: ...
    @property
    def semantic(self) -> SemanticIndex | None: ...
    @property
    def replay_pace(self) -> float | None: ...

    def own_record(self) -> CallRecord | None:
        """The record of the `cached_agent_run` call in progress, if this capability reports into it."""
        ...

    def price(self, model: Model, response: ModelResponse) -> Decimal | None:
        """What a response the model just sent cost (`None`: the model cannot be priced)."""
        ...

    def saved_cost(self, model_label: str, usage: RequestUsage | RunUsage, known: Decimal | None) -> Decimal | None:
        """What a hit saved: the one rule for pricing savings, used by the call record and the observer alike."""
        ...

    def spending(self, record: CallRecord | None, ctx: Any) -> AbstractAsyncContextManager[BudgetCharge]:
        """Entered around each request sent to the model: checks the budgets first (raising `BudgetExceededError`
        when one is spent), then charges them with what `BudgetCharge.settle` reports (nothing if it is not called).
        `ctx` is the run's `RunContext` (its deps may name the tenant)."""
        ...


class BudgetCharge(Protocol):
    """What one request sent to the model cost, reported to its budgets."""

    def settle(self, cost: Decimal | None, usage: RequestUsage) -> None:
        """The request's cost (`None`: unknown) and usage."""
        ...


class Observer(Protocol):
    """Told what the engine does; must not raise and must be cheap (it runs on the hit path)."""

    def request_lookup(
        self, cache: CacheView, ctx: Any, key: str, model: str, started_ns: int, entry: ResponseEntry | None,
        cost_saved: Decimal | None,
    ) -> None:  # fmt: skip
        """A request-level lookup ended: a hit when `entry` is the entry served (which saved `cost_saved` USD)."""

    def request_cost(self, cache: CacheView, ctx: Any, model: str, cost: Decimal | None) -> None:
        """A request went to the model through the cache and cost `cost` (`None`: unknown)."""

    def run_hit(
        self, cache: CacheView, key: str, entry: RunEntry, started_ns: int, cost_saved: Decimal | None,
        waited: float | None,
    ) -> None:  # fmt: skip
        """A whole run was answered by the run-level fast path, after waiting `waited` seconds for another call."""

    def stampede_wait(
        self, cache: CacheView, ctx: Any, key: str, model: str, seconds: float, entry: ResponseEntry | None,
        cost_saved: Decimal | None,
    ) -> None:  # fmt: skip
        """A miss waited `seconds` for an identical concurrent call, which produced `entry` (or nothing)."""

    def cache_error(self, operation: str, error: BaseException, record: CallRecord | None) -> None:
        """A cache operation failed; the call goes on without the cache."""

    def semantic_hit(self, cache: CacheView, model: str, similarity: float) -> None:
        """A request was answered by a similar recorded prompt."""


class MissListener(Protocol):
    """Told of every request-level miss that will call the model (and be stored)."""

    def __call__(self, cache: CacheView, key: str, canonical: CanonicalRequest, model: str) -> None: ...


class _Silent:
    """The observer until a feature installs one: observes nothing."""

    def request_lookup(self, *args: Any) -> None:
        pass

    def request_cost(self, *args: Any) -> None:
        pass

    def run_hit(self, *args: Any) -> None:
        pass

    def stampede_wait(self, *args: Any) -> None:
        pass

    def cache_error(self, *args: Any) -> None:
        pass

    def semantic_hit(self, *args: Any) -> None:
        pass


_observer: Observer = _Silent()

miss_listeners: list[MissListener] = []
"""Called, in order, on every request-level miss; a listener that raises is logged and skipped."""


def observer() -> Observer:
    """The observer in effect."""
    return _observer


def install_observer(new: Observer) -> None:
    """Make `new` the observer every cache call reports to."""
    global _observer
    _observer = new
