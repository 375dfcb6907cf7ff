"""`ResponseCache`: the pydantic-ai capability that caches each model request.

```python
agent.run(prompt, capabilities=[ResponseCache(redis_url="redis://localhost:6379/0")])
```

It sits at `wrap_model_request`, so tool-using agents, structured output, `run_stream`, `run_stream_events` and
`iter` all work: on a hit the stored `ModelResponse` is handed to pydantic-ai and the model is not called (a
streamed hit replays the events the model streamed on the miss, see `replay_pace`); tools still run with their
real results, so a tool that returns something new makes the next request miss, which is correct.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
from collections.abc import Mapping, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from contextvars import ContextVar
from dataclasses import KW_ONLY, dataclass, field
from decimal import Decimal
from typing import Any, Literal

from pydantic_ai.capabilities import AbstractCapability, WrapRunHandler
from pydantic_ai.messages import ModelResponse
from pydantic_ai.models import Model
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import RunContext
from pydantic_ai.usage import RequestUsage, RunUsage

from pyai_caching._util.redact import redact_url
from pyai_caching.engine.access import OnCacheError, StoreAccess
from pyai_caching.engine.canonical import CanonicalRequest
from pyai_caching.engine.context import CallRecord, current_call
from pyai_caching.engine.flight import DEFAULT_LOCK_TTL, check_lock_ttl, forget_entries_of_failed_run
from pyai_caching.engine.keys import validate_namespace
from pyai_caching.engine.pai_compat import fallback_serves
from pyai_caching.engine.ports import CacheView, install_observer, miss_listeners
from pyai_caching.engine.registry import resolve_store
from pyai_caching.engine.stream_replay import check_replay_pace
from pyai_caching.engine.validation import (
    DEFAULT_TTL,
    check_cache_version,
    check_on_cache_error,
    check_secret,
    check_timeout,
    check_ttl,
)
from pyai_caching.exceptions import ConfigurationError
from pyai_caching.explain import note_miss
from pyai_caching.observability import Observability
from pyai_caching.retry import RetryingModel, RetryPolicy
from pyai_caching.semantic import SemanticCache
from pyai_caching.spend.budget import Budget
from pyai_caching.spend.budget_gate import BudgetGate, Charge, check_budgets
from pyai_caching.spend.costs import ModelCosts, check_custom_costs, price
from pyai_caching.spend.task_budget import TaskBudget
from pyai_caching.spend.tracker import split_model_label
from pyai_caching.stores import Store
from pyai_caching.types import CacheMode

__all__ = ["DEFAULT_TTL", "ResponseCache"]

logger = logging.getLogger("pyai_caching")

install_observer(Observability())  # counters and OpenTelemetry, through the engine's observer port


@dataclass
class ResponseCache(AbstractCapability[Any]):
    """Cache every model request of a run in Redis, the embedded store, or any `Store`.

    The key of a request is the SHA-256 of its canonical form (see `pyai_caching.engine.keys`): model identity, the
    messages as the model receives them, tool/output/instruction definitions and the settings that change the
    answer, plus the namespace. A hit returns a fresh `ModelResponse` with no usage, so the run bills nothing
    for it.
    """

    _: KW_ONLY

    redis_url: str | None = None
    """Redis URL (`redis://`, `rediss://`, `unix://`); `None` reads `LLM_CACHE_REDIS_URL`, else the embedded store."""
    store: Store | None = None
    """An explicit store instead of a URL (`MemoryStore()`, `LocalStore(dir)`, `RedisStore(url)`, your own)."""
    namespace: str | None = None
    """Isolates tenants, environments or test suites; part of every key. `None` means `"default"`."""
    ttl: float | None = DEFAULT_TTL
    """Seconds an entry lives (default 7 days); `None` = never expires."""
    mode: CacheMode | str = CacheMode.READ_WRITE
    """`read_write` (default), `read_only` (a miss raises `CacheMissError`), `refresh` (always call the model and
    overwrite) or `bypass` (no cache at all)."""
    task_name: str | None = None
    """Recorded in the entries this capability writes (for `inspect`, `stats` and spend tracking)."""
    on_cache_error: OnCacheError = "warn"
    """`warn` (default): a failing store is logged once per outage and the call goes on without it.
    `raise`: store failures raise `CacheError`."""
    secret: str | bytes | None = None
    """HMAC-SHA256 signing secret: entries are signed and an entry with a bad signature is a miss."""
    cache_timeout: float | None = None
    """Upper bound in seconds for one cache operation, on top of the store's own timeouts."""
    retry: RetryPolicy | None = field(default_factory=RetryPolicy)
    """How a request sent to the model is retried after a rate limit or a transient failure (default: up to 60 s
    of exponential backoff with jitter, honouring the provider's `retry_after`). `None` turns retrying off.
    Only requests that miss the cache are retried, one at a time: earlier requests and tools are not repeated."""
    custom_costs: Mapping[str, ModelCosts] | None = None
    """Your prices per model name (or `provider:model name`); they win over genai-prices (see
    `pyai_caching.costs`)."""
    budget: TaskBudget | Budget | Sequence[TaskBudget | Budget] | None = None
    """Spend limits checked before a miss calls the model (`BudgetExceededError`): a `TaskBudget` (per task, read
    from a spend ledger), a `Budget` (per UTC day or month and per tenant, in USD or tokens, reserved atomically in
    Redis), or a list of them. Hits are free."""
    lock_ttl: float = DEFAULT_LOCK_TTL
    """Seconds the lock taken while filling a miss lives unless renewed (it is renewed while the model runs): how
    long other processes wait for a holder that died before one of them takes over (`pyai_caching.engine.flight`)."""
    max_entry_bytes: int | Literal["store"] | None = "store"
    """Largest entry written, in bytes: a bigger answer is returned but not stored (one warning). `"store"`
    (default): the store's own `max_entry_bytes` (8 MiB unless configured). Reads are capped by the store's limit,
    which is checked on the server, so an oversized value is never downloaded. `None`: no limit on writes."""
    cache_version: str | None = None
    """Part of every key: change it when something outside the key changes what a run returns (the code of tools,
    state that tools read, a model behind a `FunctionModel`), and every earlier entry stops matching. `None`: no
    version."""
    semantic: SemanticCache | None = None
    """Also answer a request whose final user prompt means the same as a recorded one, after an exact miss (see
    `pyai_caching.semantic`). `None` (default): exact matches only. Not used while a test cassette is active."""
    replay_pace: float | None = None
    """How a streamed hit replays the events recorded when the model streamed the answer: `None` (default) as fast
    as possible; a positive factor of the recorded timing (`1.0` as recorded, `0.5` twice as fast, `2.0` half as
    fast), for demos and tests of user interfaces. A hit on an entry recorded without events streams it in one
    chunk."""
    explain_misses: bool = True
    """Keep a fingerprint of each miss (digests of its key's ingredients, no prompt text) in a capped, expiring
    log in the store, for `pyai-caching explain` (see `pyai_caching.explain`). Written in the background, off
    the call's path. `False`: misses leave no trace. Not used while a test cassette is active."""

    _access: StoreAccess = field(init=False, repr=False, compare=False)
    _namespace: str = field(init=False, repr=False, compare=False)
    _mode: CacheMode = field(init=False, repr=False, compare=False)
    _salt: str = field(init=False, repr=False, compare=False)
    _gate: BudgetGate | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._namespace = validate_namespace(self.namespace)
        self._mode = CacheMode.parse(self.mode, argument="mode")
        self._salt = check_cache_version(self.cache_version)
        check_ttl(self.ttl)
        check_on_cache_error(self.on_cache_error)
        check_timeout(self.cache_timeout, "cache_timeout")
        check_lock_ttl(self.lock_ttl)
        check_replay_pace(self.replay_pace)
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy or None, got {type(self.retry).__name__}")
        check_custom_costs(self.custom_costs)
        budgets = check_budgets(self.budget, task_name=self.task_name)
        self._gate = BudgetGate(budgets, self.task_name, self._namespace) if budgets else None
        if self.semantic is not None and not isinstance(self.semantic, SemanticCache):
            raise ConfigurationError(
                f"semantic must be a SemanticCache or None, got {type(self.semantic).__name__}: "
                "semantic=SemanticCache(embedder=..., threshold=0.95)"
            )
        if not isinstance(self.explain_misses, bool):
            raise ConfigurationError(f"explain_misses must be True or False, got {self.explain_misses!r}")
        self._access = StoreAccess(
            store=resolve_store(self.redis_url, self.store),
            ttl=self.ttl,
            on_cache_error=self.on_cache_error,
            secret=check_secret(self.secret),
            timeout=self.cache_timeout,
            max_entry_bytes=self.max_entry_bytes,
        )

    def __repr__(self) -> str:
        # The dataclass repr would show the Redis password and the signing secret.
        shown = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.repr}
        if shown.get("redis_url") is not None:
            shown["redis_url"] = redact_url(shown["redis_url"])
        if shown.get("secret") is not None:
            shown["secret"] = "***"
        return f"ResponseCache({', '.join(f'{name}={value!r}' for name, value in shown.items())})"

    @classmethod
    def get_serialization_name(cls) -> str | None:
        return "ResponseCache"

    @property
    def resolved_store(self) -> Store:
        """The store this capability reads and writes."""
        return self._access.store

    @property
    def resolved_namespace(self) -> str:
        """The namespace in effect (`"default"` when none was given)."""
        return self._namespace

    @property
    def access(self) -> StoreAccess:
        """The store as seen through this capability's TTL, secret and error policy."""
        return self._access

    @property
    def resolved_mode(self) -> CacheMode:
        """The cache mode in effect."""
        return self._mode

    @property
    def key_salt(self) -> str:
        """What `cache_version` adds to every key (empty without one)."""
        return self._salt

    def own_record(self) -> CallRecord | None:
        """The record of the `cached_agent_run` call in progress, if this capability reports into it."""
        record = current_call.get()
        return record if record is not None and record.owner is self else None

    def get_wrapper_model(self, model: Model) -> Model | None:
        """Put the cache around the model that serves each attempt (see `pyai_caching.engine.model_cache`).

        Called by pydantic-ai after every request hook has run, with the model that sends the attempt, so the key
        is taken from the request exactly as that model receives it. Misses are retried according to `retry`,
        except in a run with a fallback (`ModelFallback`, `FallbackModel`), which acts on provider errors at once,
        as it does without the cache. A `FallbackModel` is cached candidate by candidate, so each answer is stored
        under the key of the model that gave it.
        """
        from pyai_caching.engine.model_cache import CachingModel

        candidates = getattr(model, "models", None)
        if type(model).__name__ == "FallbackModel" and isinstance(candidates, list):
            clone = copy.copy(model)
            clone.models = [CachingModel(m, served=m, cache=self) for m in candidates]  # type: ignore[attr-defined]
            return clone
        retry = None if _fallback_in_run.get() else self.retry
        sender = model if retry is None else RetryingModel(model, retry, report=self._note_attempts)
        return CachingModel(sender, served=model, cache=self)

    def _note_attempts(self, attempts: int, waited: float) -> None:
        record = self.own_record()
        if record is not None:
            record.attempts += attempts
            record.retry_wait += waited

    def price(self, model: Model, response: ModelResponse) -> Decimal | None:
        """What `response` cost, or `None` when the model cannot be priced."""
        return price(
            response.usage,
            model.model_name,
            self.custom_costs,
            provider=model.system,
            provider_api_url=response.provider_url,
        )

    @property
    def budget_gate(self) -> BudgetGate | None:
        """The budgets of this capability, checked before each request sent (`None`: no budget)."""
        return self._gate

    def spending(self, record: CallRecord | None, ctx: RunContext[Any] | None) -> AbstractAsyncContextManager[Charge]:
        """Around a request sent to the model: check the budgets first (`BudgetExceededError`), charge them with
        what `Charge.settle` is given after it."""
        if self._gate is None:
            return nullcontext(Charge())
        return self._gate.request(record, ctx.deps if ctx is not None else None)

    def saved_cost(self, model_label: str, usage: RequestUsage | RunUsage, known: Decimal | None) -> Decimal | None:
        """What a hit of `model_label` (`system:name`) saved: your custom price when one applies, else the cost
        stored with the entry, else genai-prices; `None` when the model cannot be priced. The one rule for savings,
        used by `Expense` and by the metrics and spans alike."""
        system, name = split_model_label(model_label)
        return price(usage, name, self.custom_costs, provider=system, known_cost=known)

    async def wrap_run(self, ctx: RunContext[Any], *, handler: WrapRunHandler) -> AgentRunResult[Any]:
        # A run that fails (an output that never validates, a model or tool error) or is cancelled leaves no
        # request entries behind: a stored response may be why it failed, and would fail every replay the same way.
        token = _fallback_in_run.set(fallback_serves(ctx.model, getattr(ctx, "root_capability", None)))
        try:
            async with forget_entries_of_failed_run():
                if self._gate is None or not self._gate.shared or self.semantic is None or self.own_record():
                    return await handler()
                return await self._charged_run(ctx, handler)
        finally:
            _fallback_in_run.reset(token)

    async def _charged_run(self, ctx: RunContext[Any], handler: WrapRunHandler) -> AgentRunResult[Any]:
        """A run outside `cached_agent_run` whose budgets must be charged for the semantic cache's embedding calls:
        it gets a record of its own (which the embeddings are counted in), and what no request was charged with is
        charged at its end, as `cached_agent_run` does."""
        assert self._gate is not None
        record = CallRecord(owner=self)
        call = current_call.set(record)
        try:
            result = await handler()
        except Exception:
            await self._gate.charge_leftovers(record, ctx.deps)
            raise
        finally:
            current_call.reset(call)
        await self._gate.charge_leftovers(record, ctx.deps)
        return result


_fallback_in_run: ContextVar[bool] = ContextVar("pyai_caching_fallback_in_run", default=False)
"""Whether the run in progress has a fallback: its requests are then not retried (the fallback acts at once)."""


def _explain_miss(cache: CacheView, key: str, canonical: CanonicalRequest, model: str) -> None:
    """The engine's miss listener: record the miss when the capability that missed wants it explained."""
    if isinstance(cache, ResponseCache) and cache.explain_misses:
        note_miss(cache, key, canonical, model)


if _explain_miss not in miss_listeners:
    miss_listeners.append(_explain_miss)
