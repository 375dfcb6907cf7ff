"""`cached_agent_run` / `cached_agent_run_sync`: drop-ins for `agent.run` / `agent.run_sync`.

```python
profile = await cached_agent_run(agent, "Make a profile for Ada", task_name="make_profile")
```

Thin sugar over the `ResponseCache` capability, plus the run-level fast path: for an agent whose first request
is fully known from its static configuration, a repeated call is answered with one store read, before
pydantic-ai's graph starts (see `pyai_caching.engine.fastpath`).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, overload

from pydantic_ai.agent import AbstractAgent
from pydantic_ai.run import AgentRunResult

from pyai_caching._call import capability_for_call, check_call
from pyai_caching._run import RunLevel, run_graph
from pyai_caching.engine.access import OnCacheError
from pyai_caching.engine.registry import resolve_store
from pyai_caching.engine.sync import run_sync
from pyai_caching.engine.validation import DEFAULT_TTL
from pyai_caching.retry import RetryPolicy
from pyai_caching.semantic import SemanticCache
from pyai_caching.spend.budget import Budget
from pyai_caching.spend.costs import ModelCosts
from pyai_caching.spend.expense import ExpenseHook, SimpleExpenseRecorder
from pyai_caching.spend.task_budget import TaskBudget
from pyai_caching.spend.tracker import SpendTracker
from pyai_caching.stores import Store
from pyai_caching.transcripts import MessageConverter
from pyai_caching.types import CacheMode

__all__ = ["cached_agent_run", "cached_agent_run_sync", "clear_cache", "clear_cache_async"]

logger = logging.getLogger("pyai_caching")

T = TypeVar("T")


@overload
async def cached_agent_run(
    agent: AbstractAgent[Any, T],
    prompt: Any,
    task_name: str,
    *,
    full_result: Literal[False] = False,
    transcript_history: Sequence[Any] | None = None,
    message_converter: MessageConverter | None = None,
    redis_url: str | None = None,
    store: Store | None = None,
    ttl: float | None = DEFAULT_TTL,
    namespace: str | None = None,
    cache_mode: CacheMode | str = CacheMode.READ_WRITE,
    cache_whole_run: bool = False,
    deps_key: Callable[[Any], Any] | None = None,
    cache_version: str | None = None,
    max_entry_bytes: int | Literal["store"] | None = "store",
    on_cache_error: OnCacheError = "warn",
    secret: str | bytes | None = None,
    cache_timeout: float | None = None,
    retry: RetryPolicy | Any | None = None,
    max_wait: float | None = None,
    initial_wait: float | None = None,
    custom_costs: Mapping[str, ModelCosts] | None = None,
    expense_recorder: SimpleExpenseRecorder | None = None,
    expense_hook: ExpenseHook | Sequence[ExpenseHook] | None = None,
    budget: TaskBudget | Budget | Sequence[TaskBudget | Budget] | None = None,
    semantic: SemanticCache | None = None,
    accept_semantic: bool = True,
    explain_misses: bool = True,
    **run_kwargs: Any,
) -> Any: ...


@overload
async def cached_agent_run(
    agent: AbstractAgent[Any, T],
    prompt: Any,
    task_name: str,
    *,
    full_result: Literal[True],
    transcript_history: Sequence[Any] | None = None,
    message_converter: MessageConverter | None = None,
    redis_url: str | None = None,
    store: Store | None = None,
    ttl: float | None = DEFAULT_TTL,
    namespace: str | None = None,
    cache_mode: CacheMode | str = CacheMode.READ_WRITE,
    cache_whole_run: bool = False,
    deps_key: Callable[[Any], Any] | None = None,
    cache_version: str | None = None,
    max_entry_bytes: int | Literal["store"] | None = "store",
    on_cache_error: OnCacheError = "warn",
    secret: str | bytes | None = None,
    cache_timeout: float | None = None,
    retry: RetryPolicy | Any | None = None,
    max_wait: float | None = None,
    initial_wait: float | None = None,
    custom_costs: Mapping[str, ModelCosts] | None = None,
    expense_recorder: SimpleExpenseRecorder | None = None,
    expense_hook: ExpenseHook | Sequence[ExpenseHook] | None = None,
    budget: TaskBudget | Budget | Sequence[TaskBudget | Budget] | None = None,
    semantic: SemanticCache | None = None,
    accept_semantic: bool = True,
    explain_misses: bool = True,
    **run_kwargs: Any,
) -> AgentRunResult[Any]: ...


async def cached_agent_run(
    agent: AbstractAgent[Any, T],
    prompt: Any,
    task_name: str,
    *,
    full_result: bool = False,
    transcript_history: Sequence[Any] | None = None,
    message_converter: MessageConverter | None = None,
    redis_url: str | None = None,
    store: Store | None = None,
    ttl: float | None = DEFAULT_TTL,
    namespace: str | None = None,
    cache_mode: CacheMode | str = CacheMode.READ_WRITE,
    cache_whole_run: bool = False,
    deps_key: Callable[[Any], Any] | None = None,
    cache_version: str | None = None,
    max_entry_bytes: int | Literal["store"] | None = "store",
    on_cache_error: OnCacheError = "warn",
    secret: str | bytes | None = None,
    cache_timeout: float | None = None,
    retry: RetryPolicy | Any | None = None,
    max_wait: float | None = None,
    initial_wait: float | None = None,
    custom_costs: Mapping[str, ModelCosts] | None = None,
    expense_recorder: SimpleExpenseRecorder | None = None,
    expense_hook: ExpenseHook | Sequence[ExpenseHook] | None = None,
    budget: TaskBudget | Budget | Sequence[TaskBudget | Budget] | None = None,
    semantic: SemanticCache | None = None,
    accept_semantic: bool = True,
    explain_misses: bool = True,
    **run_kwargs: Any,
) -> Any:
    """Run `agent` on `prompt` like `agent.run`, answering repeated requests from the cache.

    Args:
        agent: The pydantic-ai agent.
        prompt: The user prompt (a string, or a sequence of user content).
        task_name: A name for what this call does (`"make_profile"`): recorded with entries and spend.
        full_result: Return the `AgentRunResult` instead of its `.output` (same type on a hit and a miss).
        transcript_history: Earlier turns: role/content dicts, strings (user turns),
            `pyai_caching.types.ModelMessage`, or pydantic-ai messages.
        message_converter: Turns `transcript_history` items of another shape into those forms first.
        redis_url: Redis URL; default `LLM_CACHE_REDIS_URL`, else the embedded `LocalStore`.
        store: An explicit store instead of a URL.
        ttl: Seconds an entry lives (default 7 days); `None` = never expires.
        namespace: Isolates tenants/environments/test suites; part of every key.
        cache_mode: `read_write` (default), `read_only` (a miss raises `CacheMissError`), `refresh` or `bypass`.
        cache_whole_run: Cache the whole run of a tool-using agent: a hit returns the run's stored answer without
            calling the tools. Off by default: tools run on every call. The deps become part of the key, without
            loss (`1` and `"1"` differ, secrets count as digests); deps that cannot be keyed without loss raise
            `ConfigurationError`. The code of the tools is not in the key: see `cache_version`.
        deps_key: With `cache_whole_run`, a function of the deps returning what identifies them (a string or plain
            data), used instead of the deps themselves.
        max_entry_bytes: Largest entry written, in bytes (default: the store's limit, 8 MiB unless configured); a
            bigger answer is returned but not stored. `None`: no limit on writes.
        cache_version: Part of every key: change it when something outside the key changes what a run returns
            (the code of tools, state that tools read), and earlier entries stop matching.
        on_cache_error: `warn` (fail open, default) or `raise` (`CacheError`).
        secret: HMAC secret to sign entries with (default `LLM_CACHE_SECRET`).
        cache_timeout: Upper bound in seconds for each cache operation (default: the store's own socket timeouts,
            0.5 s for Redis). With the store down or hung, a call costs at most about this much more.
        retry: Full control over retries: a `RetryPolicy`, a `tenacity.AsyncRetrying`, or `False` to turn
            retrying off. Default: a `RetryPolicy` built from `max_wait` and `initial_wait`.
        max_wait: Seconds one model request may spend being retried after rate limits (HTTP 429), overload
            (503/529), server errors and connection failures before `RateLimitError` (default 60).
        initial_wait: Upper bound in seconds of the first backoff; later ones double, with jitter (default 1).
            A provider's `retry_after` is honoured instead, capped by what is left of `max_wait`.
        custom_costs: Your prices, `{model_name: ModelCosts(...)}`; they win over genai-prices.
        expense_recorder: Called once per call with `(model, task_name, cost_usd)`, sync or async: the cost of the
            requests actually made and of the semantic cache's embedding calls (0.0 on a full hit). A recorder that
            raises is logged, never propagated.
        expense_hook: Called once per call with an `Expense` (cost, savings, usage, hits, misses, time): a callable,
            a recorder (`LoggingRecorder()`, `RedisSpendLedger(url)`) or a list of them. Errors are logged.
        budget: Spend limits checked before a miss calls the model (hits stay free): a `TaskBudget` (per task), a
            `Budget` (per UTC day or month and per tenant, in USD or tokens, shared atomically through Redis), or a
            list of them. A spent limit raises `BudgetExceededError`.
        semantic: Opt-in semantic cache (`SemanticCache(embedder=..., threshold=0.95)`): after an exact miss, serve
            the answer of a recorded prompt that means the same, in the same context (see `pyai_caching.semantic`).
        accept_semantic: `False` refuses semantic hits for this call (the model is called; the prompt is still
            recorded for later calls).
        explain_misses: Keep a fingerprint of each miss (digests, no prompt text) in a capped, expiring log in the
            store, for `pyai-caching explain` (default `True`; written in the background, off the call's path).
        **run_kwargs: Anything `agent.run` accepts (`deps`, `model_settings`, `message_history`, `usage_limits`,
            `output_type`, `instructions`, ...).
    """
    call = dict(locals())  # the arguments, by name; first, before any other local name exists
    history = check_call(call, _OWN_PARAMETERS)
    cache = capability_for_call(call, _OWN_PARAMETERS)
    spend = SpendTracker.create(
        task_name=task_name,
        namespace=cache.resolved_namespace,
        custom_costs=custom_costs,
        expense_recorder=expense_recorder,
        expense_hook=expense_hook,
        gate=cache.budget_gate,
        deps=run_kwargs.get("deps"),
    )
    fast = RunLevel.plan(agent, cache, history, call, spend)
    if fast is not None:
        found, answer = await fast.answer()
        if found:
            return answer
    try:
        result, record = await run_graph(agent, cache, prompt, history, run_kwargs, spend)
        if fast is not None:
            await fast.store(record, result)
    finally:
        if fast is not None:
            fast.release()
    if spend is not None:
        await spend.deliver(record)
    return result if full_result else result.output


_OWN_PARAMETERS: tuple[str, ...] = tuple(inspect.signature(cached_agent_run).parameters)


def cached_agent_run_sync(agent: AbstractAgent[Any, T], prompt: Any, task_name: str, **kwargs: Any) -> Any:
    """The synchronous form of `cached_agent_run`: same arguments, same result.

    Works from plain code and from inside a running event loop (a notebook): the call runs on one background
    event loop owned by the library, which also keeps connection pools alive between calls.
    """
    return run_sync(cached_agent_run(agent, prompt, task_name, **kwargs))


async def clear_cache_async(
    redis_url: str | None = None, *, namespace: str | None = None, store: Store | None = None
) -> int:
    """Delete this library's entries (only those of `namespace` when given) and return how many were deleted.

    Keys of other applications in the same database are never touched (no FLUSHDB).
    """
    from pyai_caching.engine.keys import namespace_prefix

    prefix = namespace_prefix(namespace)
    target = resolve_store(redis_url, store)
    return await target.clear(prefix)


def clear_cache(redis_url: str | None = None, *, namespace: str | None = None, store: Store | None = None) -> int:
    """Synchronous `clear_cache_async`."""
    return run_sync(clear_cache_async(redis_url, namespace=namespace, store=store))
