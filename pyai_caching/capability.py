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
from dataclasses import KW_ONLY, dataclass, field
from decimal import Decimal
from typing import Any

from pydantic_ai.capabilities import AbstractCapability, WrapModelRequestHandler
from pydantic_ai.messages import ModelResponse
from pydantic_ai.models import ModelRequestContext
from pydantic_ai.tools import RunContext

from ._access import OnCacheError, StoreAccess, fresh_response
from ._context import CallRecord, current_call
from ._registry import resolve_store
from ._serialization import EntryMeta, ResponseEntry
from ._validation import DEFAULT_TTL, check_on_cache_error, check_secret, check_timeout, check_ttl
from .exceptions import CacheMissError
from .keys import canonical_request, entry_key, request_digest, validate_namespace
from .stores import Store
from .types import CacheMode

__all__ = ["DEFAULT_TTL", "ResponseCache"]

logger = logging.getLogger("pyai_caching")

_UNSET: Any = object()


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

    _access: StoreAccess = field(init=False, repr=False, compare=False)
    _namespace: str = field(init=False, repr=False, compare=False)
    _mode: CacheMode = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._namespace = validate_namespace(self.namespace)
        self._mode = CacheMode.parse(self.mode, argument="mode")
        check_ttl(self.ttl)
        check_on_cache_error(self.on_cache_error)
        check_timeout(self.cache_timeout, "cache_timeout")
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

    async def wrap_model_request(
        self,
        ctx: RunContext[Any],
        *,
        request_context: ModelRequestContext,
        handler: WrapModelRequestHandler,
    ) -> ModelResponse:
        mode = self._mode
        record = self._record()
        model = request_context.model
        model_label = f"{model.system}:{model.model_name}"
        if record is not None:
            record.models.append(model_label)
        if mode is CacheMode.BYPASS:
            response = await handler(request_context)
            _count_miss(record, response)
            return response

        canonical = canonical_request(
            model,
            request_context.messages,
            request_context.model_settings,
            request_context.model_request_parameters,
        )
        key = entry_key(self._namespace, "r", request_digest(canonical, self._namespace))
        if record is not None and record.first_request is None:
            record.first_request = canonical

        if mode.reads:
            entry = await self._access.get_response(key, record)
            if entry is not None:
                logger.debug("pyai_caching: hit %s (%s)", key, model_label)
                if record is not None:
                    record.hits += 1
                    record.saved_usage.incr(entry.response.usage)
                    record.saved_usage.requests += 1
                    record.saved_cost = _add_cost(record.saved_cost, entry.meta.cost)
                return fresh_response(entry)
            if mode is CacheMode.READ_ONLY:
                raise CacheMissError(
                    f"no cached response for this request (key {key}) and the cache is read-only, so the model "
                    f"({model_label}) was not called. Run once with cache_mode='read_write' to record it.",
                    key=key,
                )

        logger.debug("pyai_caching: miss %s (%s)", key, model_label)
        started = time.monotonic()
        response = await handler(request_context)
        _count_miss(record, response)
        if mode.writes and response.state == "complete":
            entry = ResponseEntry(
                meta=EntryMeta(
                    namespace=self._namespace,
                    model=model_label,
                    task=self.task_name,
                    cost=response.usage.cost,
                ),
                request=canonical.to_json_obj(),
                response=response,
            )
            await self._access.put_entry(key, entry, record)
            logger.debug("pyai_caching: stored %s after %.1f ms", key, (time.monotonic() - started) * 1000)
        return response


def _count_miss(record: CallRecord | None, response: ModelResponse) -> None:
    if record is not None:
        record.misses += 1
        record.usage.incr(response.usage)
        record.usage.requests += 1


def _add_cost(total: Decimal | None, cost: Decimal | None) -> Decimal | None:
    if total is None or cost is None:
        return None
    return total + cost
