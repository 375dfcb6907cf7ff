"""`ResponseCache`: the pydantic-ai capability that caches each model request.

```python
agent.run(prompt, capabilities=[ResponseCache(redis_url="redis://localhost:6379/0")])
```

It sits at `wrap_model_request`, so tool-using agents, structured output, `run_stream`, `run_stream_events` and
`iter` all work: on a hit the stored `ModelResponse` is handed to pydantic-ai (which replays it as a stream when
the run streams) and the model is not called; tools still run with their real results, so a tool that returns
something new makes the next request miss, which is correct.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from decimal import Decimal
from typing import Any

from pydantic_ai.capabilities import AbstractCapability, WrapModelRequestHandler, WrapRunHandler
from pydantic_ai.messages import ModelResponse
from pydantic_ai.models import Model, ModelRequestContext
from pydantic_ai.run import AgentRunResult
from pydantic_ai.tools import RunContext

from . import _observe, _overrides
from . import semantic as _semantic
from ._access import OnCacheError, StoreAccess, fresh_response
from ._context import CallRecord, current_call
from ._registry import resolve_store
from ._serialization import EntryMeta, ResponseEntry
from ._stampede import DEFAULT_LOCK_TTL, Fill, check_lock_ttl, forget_entries_of_failed_run
from ._validation import DEFAULT_TTL, check_on_cache_error, check_secret, check_timeout, check_ttl
from .costs import ModelCosts, check_custom_costs, price
from .exceptions import CacheMissError, ConfigurationError
from .keys import canonical_request, entry_key, request_digest, validate_namespace
from .recorders import TaskBudget
from .retry import RetryingModel, RetryPolicy
from .semantic import SemanticCache
from .stores import Store
from .types import CacheMode

__all__ = ["DEFAULT_TTL", "ResponseCache"]

logger = logging.getLogger("pyai_caching")


@dataclass
class ResponseCache(AbstractCapability[Any]):
    """Cache every model request of a run in Redis, the embedded store, or any `Store`.

    The key of a request is the SHA-256 of its canonical form (see `pyai_caching.keys`): model identity, the
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
    budget: TaskBudget | None = None
    """A spend limit for `task_name`, checked before a miss calls the model (`BudgetExceededError`)."""
    lock_ttl: float = DEFAULT_LOCK_TTL
    """Seconds the lock taken while filling a miss lives unless renewed (it is renewed while the model runs): how
    long other processes wait for a holder that died before one of them takes over (see `pyai_caching._stampede`)."""
    semantic: SemanticCache | None = None
    """Also answer a request whose final user prompt means the same as a recorded one, after an exact miss (see
    `pyai_caching.semantic`). `None` (default): exact matches only. Not used while a test cassette is active."""

    _access: StoreAccess = field(init=False, repr=False, compare=False)
    _namespace: str = field(init=False, repr=False, compare=False)
    _mode: CacheMode = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._namespace = validate_namespace(self.namespace)
        self._mode = CacheMode.parse(self.mode, argument="mode")
        check_ttl(self.ttl)
        check_on_cache_error(self.on_cache_error)
        check_timeout(self.cache_timeout, "cache_timeout")
        check_lock_ttl(self.lock_ttl)
        if self.retry is not None and not isinstance(self.retry, RetryPolicy):
            raise ConfigurationError(f"retry must be a RetryPolicy or None, got {type(self.retry).__name__}")
        check_custom_costs(self.custom_costs)
        if self.budget is not None:
            if not isinstance(self.budget, TaskBudget):
                raise ConfigurationError(f"budget must be a TaskBudget, got {type(self.budget).__name__}")
            if not self.task_name:
                raise ConfigurationError("budget needs task_name: the budget is a spend limit per task")
        if self.semantic is not None and not isinstance(self.semantic, SemanticCache):
            raise ConfigurationError(
                f"semantic must be a SemanticCache or None, got {type(self.semantic).__name__}: "
                "semantic=SemanticCache(embedder=..., threshold=0.95)"
            )
        self._access = StoreAccess(
            store=resolve_store(self.redis_url, self.store),
            ttl=self.ttl,
            on_cache_error=self.on_cache_error,
            secret=check_secret(self.secret),
            timeout=self.cache_timeout,
        )

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

    def _record(self) -> CallRecord | None:
        record = current_call.get()
        return record if record is not None and record.owner is self else None

    def get_wrapper_model(self, model: Model) -> Model | None:
        """Retry the requests this capability lets through (cache misses) according to `retry`."""
        if self.retry is None:
            return None
        return RetryingModel(model, self.retry, report=self._note_attempts)

    def _note_attempts(self, attempts: int, waited: float) -> None:
        record = self._record()
        if record is not None:
            record.attempts += attempts
            record.retry_wait += waited

    def _price(self, model: Model, response: ModelResponse) -> Decimal | None:
        return price(
            response.usage,
            model.model_name,
            self.custom_costs,
            provider=model.system,
            provider_api_url=response.provider_url,
        )

    async def _check_budget(self, record: CallRecord | None) -> None:
        if self.budget is not None and self.task_name:
            pending = record.cost if record is not None else Decimal(0)
            await self.budget.check(self.task_name, namespace=self._namespace, pending=pending)

    async def wrap_model_request(
        self,
        ctx: RunContext[Any],
        *,
        request_context: ModelRequestContext,
        handler: WrapModelRequestHandler,
    ) -> ModelResponse:
        access, mode, namespace = self._access, self._mode, self._namespace
        override = _overrides.active()
        if override is not None:  # a test cassette (pyai_caching.pytest_plugin) replaces the store and the mode
            access, mode, namespace = override.access, override.mode, override.namespace or namespace
        record = self._record()
        model = request_context.model
        model_label = f"{model.system}:{model.model_name}"
        if record is not None:
            record.models.append(model_label)
        if mode is CacheMode.BYPASS:
            await self._check_budget(record)
            response = await handler(request_context)
            _count_miss(record, response, self._price(model, response))
            return response

        canonical = canonical_request(
            model,
            request_context.messages,
            request_context.model_settings,
            request_context.model_request_parameters,
        )
        key = entry_key(namespace, "r", request_digest(canonical, namespace))
        if record is not None and record.first_request is None:
            record.first_request = canonical

        semantic, probe = (self.semantic if override is None else None), None
        if mode.reads:
            lookup_started = _observe.now_ns()
            entry = await access.get_response(key, record)
            if entry is None and semantic is not None:  # exact first; only then by meaning
                entry, probe = await _semantic.lookup(self, semantic, access, namespace, canonical, record, model_label)
            _observe.request_lookup(self, ctx, key, model_label, lookup_started, entry)
            if entry is not None:
                return self._hit(model, model_label, key, entry, record)
            if mode is CacheMode.READ_ONLY:
                hint = _explain_miss(access.store, canonical) or " Run once with cache_mode='read_write' to record it."
                raise CacheMissError(
                    f"no cached response for this request (key {key}) and the cache is read-only, so the model "
                    f"({model_label}) was not called.{hint}",
                    key=key,
                )

        logger.debug("pyai_caching: miss %s (%s)", key, model_label)
        # Stampede protection (see `_stampede`): of identical concurrent misses, in this process and in the
        # processes sharing the store's locks, one calls the model and the others wait for its entry.
        async with Fill(access, key, record, wait=mode is CacheMode.READ_WRITE, lock_ttl=self.lock_ttl) as fill:
            if fill.waited is not None:
                _observe.stampede_wait(self, ctx, key, model_label, fill.waited, fill.entry)
            if fill.entry is not None:
                return self._hit(model, model_label, key, fill.entry, record)
            await self._check_budget(record)
            started = time.monotonic()
            response = await handler(request_context)
            cost = self._price(model, response)
            _count_miss(record, response, cost)
            _observe.request_cost(self, ctx, model_label, cost)
            if mode.writes and response.state == "complete":
                entry = ResponseEntry(
                    meta=EntryMeta(
                        namespace=namespace,
                        model=model_label,
                        task=self.task_name,
                        cost=cost,
                    ),
                    request=canonical.to_json_obj(),
                    response=response,
                )
                await fill.put_entry(entry)
                if semantic is not None:
                    await _semantic.remember(semantic, access, namespace, canonical, key, probe, record)
                logger.debug("pyai_caching: stored %s after %.1f ms", key, (time.monotonic() - started) * 1000)
        return response

    def _hit(
        self, model: Model, model_label: str, key: str, entry: ResponseEntry, record: CallRecord | None
    ) -> ModelResponse:
        logger.debug("pyai_caching: hit %s (%s)", key, model_label)
        if record is not None:
            record.hits += 1
            record.saved_usage.incr(entry.response.usage)
            record.saved_usage.requests += 1
            saved = price(
                entry.response.usage,
                model.model_name,
                self.custom_costs,
                provider=model.system,
                known_cost=entry.meta.cost,
            )
            if saved is None:
                record.unpriced_hits += 1
            else:
                record.saved_cost += saved
        return fresh_response(entry)

    async def wrap_run(self, ctx: RunContext[Any], *, handler: WrapRunHandler) -> AgentRunResult[Any]:
        # A run that fails (an output that never validates, a model or tool error) or is cancelled leaves no
        # request entries behind: a stored response may be why it failed, and would fail every replay the same way.
        async with forget_entries_of_failed_run():
            return await handler()


def _explain_miss(store: Store, canonical: Any) -> str | None:
    """The store's own explanation of a miss (`CassetteStore.explain_miss`: nearest entry and diff), if it has one."""
    explain = getattr(store, "explain_miss", None)
    if not callable(explain):
        return None
    try:
        text = explain(canonical.to_json_obj())
    except Exception:
        logger.debug("pyai_caching: %s could not explain a miss", store.description, exc_info=True)
        return None
    return f"\n{text}" if isinstance(text, str) and text else None


def _count_miss(record: CallRecord | None, response: ModelResponse, cost: Decimal | None) -> None:
    if record is not None:
        record.misses += 1
        record.usage.incr(response.usage)
        record.usage.requests += 1
        if cost is None:
            record.unpriced_requests += 1
        else:
            record.cost += cost
