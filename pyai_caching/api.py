"""`cached_agent_run` / `cached_agent_run_sync`: drop-ins for `agent.run` / `agent.run_sync`.

```python
profile = await cached_agent_run(agent, "Make a profile for Ada", task_name="make_profile")
```

Thin sugar over the `ResponseCache` capability, plus the run-level fast path: for an agent whose first request
is fully known from its static configuration, a repeated call is answered with one store read, before
pydantic-ai's graph starts (see `pyai_caching.engine.fastpath`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import inspect
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, TypeVar, overload

from pydantic_ai.agent import AbstractAgent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse
from pydantic_ai.run import AgentRunResult

from pyai_caching._util.canonical_json import dumps_canonical
from pyai_caching.capability import ResponseCache
from pyai_caching.engine import fastpath as _fastpath
from pyai_caching.engine import overrides as _overrides
from pyai_caching.engine import ports
from pyai_caching.engine.access import OnCacheError
from pyai_caching.engine.context import CallRecord, current_call
from pyai_caching.engine.deps_key import deps_material
from pyai_caching.engine.entries import EntryMeta, RunEntry
from pyai_caching.engine.keys import KeyKind, entry_key, request_digest
from pyai_caching.engine.pai_compat import (
    AgentShapeError,
    OutputRecipe,
    final_projection,
    history_sent_as_is,
    output_recipe,
    output_schema,
)
from pyai_caching.engine.registry import CACHE_DIR_ENV, REDIS_URL_ENV, resolve_store
from pyai_caching.engine.sync import run_sync
from pyai_caching.engine.validation import DEFAULT_TTL, SECRET_ENV
from pyai_caching.exceptions import ConfigurationError
from pyai_caching.retry import RetryPolicy, resolve_retry
from pyai_caching.semantic import SemanticCache
from pyai_caching.spend.costs import ModelCosts, check_custom_costs
from pyai_caching.spend.recorders import ExpenseHook, SimpleExpenseRecorder, TaskBudget
from pyai_caching.spend.tracker import SpendTracker
from pyai_caching.stores import Store
from pyai_caching.transcripts import MessageConverter, to_history
from pyai_caching.types import CacheMode

__all__ = ["cached_agent_run", "cached_agent_run_sync", "clear_cache", "clear_cache_async"]

logger = logging.getLogger("pyai_caching")

T = TypeVar("T")


def _check_run_kwargs(agent: AbstractAgent[Any, Any], run_kwargs: Mapping[str, Any]) -> None:
    """An unknown keyword is reported as ours, with the closest keyword of `cached_agent_run` or `agent.run`."""
    accepted = _run_parameters(type(agent))
    if accepted is None:
        return
    unknown = [name for name in run_kwargs if name not in accepted]
    if not unknown:
        return
    ours = [name for name in _OWN_PARAMETERS if name not in ("agent", "prompt", "task_name", "run_kwargs")]
    close = difflib.get_close_matches(unknown[0], [*ours, *sorted(accepted)], n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ConfigurationError(
        f"cached_agent_run() got an unexpected keyword argument {unknown[0]!r}.{hint} It takes its own keywords "
        f"({', '.join(ours)}) and those of agent.run ({', '.join(sorted(accepted))})."
    )


_RUN_PARAMETERS: dict[type, frozenset[str] | None] = {}


def _run_parameters(agent_type: type) -> frozenset[str] | None:
    """The keywords `agent.run` accepts (`None`: it takes any keyword)."""
    if agent_type not in _RUN_PARAMETERS:
        parameters = inspect.signature(getattr(agent_type, "run")).parameters.values()  # noqa: B009
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
            _RUN_PARAMETERS[agent_type] = None
        else:
            names = {p.name for p in parameters if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
            _RUN_PARAMETERS[agent_type] = frozenset(names - {"self", "user_prompt"})
    return _RUN_PARAMETERS[agent_type]


def _check_prompt(prompt: Any) -> None:
    """Reject what is not a prompt at all; an empty or whitespace-only prompt, or `None`, is left to pydantic-ai,
    which answers it exactly as `agent.run` does (an agent with instructions accepts `None`)."""
    if prompt is None or isinstance(prompt, str):
        return
    if isinstance(prompt, Sequence) and not isinstance(prompt, bytes):
        return
    raise ConfigurationError(
        f"prompt must be a string or a sequence of user content (text, ImageUrl, BinaryContent, ...), "
        f"got {type(prompt).__name__}"
    )


def _run_extra(salt: str, whole_run: bool, deps: Any, deps_key: Callable[[Any], Any] | None) -> str:
    """What a run key adds to the first request's digest: the cache version, and the deps in whole-run mode."""
    if not whole_run:
        return f"{salt}\x00run"
    return f"{salt}\x00whole_run\x00{deps_material(deps, deps_key)}"


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
    budget: TaskBudget | None = None,
    semantic: SemanticCache | None = None,
    accept_semantic: bool = True,
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
    budget: TaskBudget | None = None,
    semantic: SemanticCache | None = None,
    accept_semantic: bool = True,
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
    budget: TaskBudget | None = None,
    semantic: SemanticCache | None = None,
    accept_semantic: bool = True,
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
            requests actually made (0.0 on a full hit). A recorder that raises is logged, never propagated.
        expense_hook: Called once per call with an `Expense` (cost, savings, usage, hits, misses, time): a callable,
            a recorder (`LoggingRecorder()`, `RedisSpendLedger(url)`) or a list of them. Errors are logged.
        budget: A per-task spend limit (`TaskBudget`), checked before a miss calls the model; hits stay free.
        semantic: Opt-in semantic cache (`SemanticCache(embedder=..., threshold=0.95)`): after an exact miss, serve
            the answer of a recorded prompt that means the same, in the same context (see `pyai_caching.semantic`).
        accept_semantic: `False` refuses semantic hits for this call (the model is called; the prompt is still
            recorded for later calls).
        **run_kwargs: Anything `agent.run` accepts (`deps`, `model_settings`, `message_history`, `usage_limits`,
            `output_type`, `instructions`, ...).
    """
    if not isinstance(agent, AbstractAgent):
        raise ConfigurationError(f"agent must be a pydantic-ai Agent, got {type(agent).__name__}")
    if not isinstance(task_name, str) or not task_name.strip():
        raise ConfigurationError(f"task_name must be a non-empty string, got {task_name!r}")
    if not isinstance(full_result, bool):
        raise ConfigurationError(f"full_result must be True or False, got {full_result!r}")
    if not isinstance(cache_whole_run, bool):
        raise ConfigurationError(f"cache_whole_run must be True or False, got {cache_whole_run!r}")
    for reserved in ("user_prompt", "capabilities_cache"):
        if reserved in run_kwargs:
            raise ConfigurationError(f"{reserved} is not an agent.run keyword here; pass the prompt as `prompt`")
    _check_run_kwargs(agent, run_kwargs)
    if deps_key is not None and not cache_whole_run:
        raise ConfigurationError("deps_key only applies with cache_whole_run=True (only then are deps in the key)")

    history = to_history(transcript_history, message_converter)
    if "message_history" in run_kwargs:
        if history:
            raise ConfigurationError("pass either transcript_history= or message_history=, not both")
        history = list(run_kwargs.pop("message_history") or [])
    _check_prompt(prompt)
    CacheMode.parse(cache_mode)  # here, so that a bad value is reported as `cache_mode` (ResponseCache calls it `mode`)

    override = _overrides.active()
    if override is not None:  # a test cassette (pyai_caching.pytest_plugin) replaces the store and the mode
        redis_url, store, cache_mode = None, override.store, override.mode
        namespace = override.namespace or namespace
    # The capability is reused by later calls with the same configuration (see `_config_key`): building and
    # validating it (store resolution, retry policy, ...) is a large part of a run-level hit otherwise.
    config_key = _config_key(locals())
    cache = _capabilities.get(config_key) if config_key is not None else None
    if cache is None:
        cache = ResponseCache(
            redis_url=redis_url,
            store=store,
            namespace=namespace,
            ttl=ttl,
            mode=cache_mode,
            task_name=task_name,
            on_cache_error=on_cache_error,
            secret=secret,
            cache_timeout=cache_timeout,
            retry=resolve_retry(retry, max_wait, initial_wait),
            custom_costs=check_custom_costs(custom_costs),
            budget=budget,
            semantic=_semantic_for_call(semantic, accept_semantic),
            cache_version=cache_version,
            max_entry_bytes=max_entry_bytes,
        )
        if config_key is not None:
            _remember_capability(config_key, cache)
    mode = CacheMode.parse(cache_mode)
    ns = cache.resolved_namespace
    spend = SpendTracker.create(
        task_name=task_name,
        namespace=ns,
        custom_costs=custom_costs,
        expense_recorder=expense_recorder,
        expense_hook=expense_hook,
        budget=budget,
    )
    output_type = run_kwargs.get("output_type", agent.output_type)

    # --- run-level fast path -------------------------------------------------------------------------------
    signature = None
    history_canon: list[dict[str, Any]] = []
    run_extra = ""
    # A full result carries the run's identity (run and conversation ids, metadata) that only pydantic-ai's graph
    # builds exactly: it takes the graph (hitting per request), except in whole-run mode, whose point is the skip.
    if isinstance(prompt, str) and mode is not CacheMode.BYPASS and (cache_whole_run or not full_result):
        signature = _fastpath.static_signature(agent, run_kwargs, whole_run=cache_whole_run)
        if signature is not None and history and not history_sent_as_is(history):
            signature = None  # pydantic-ai would change it before sending: only the graph sees what is sent
        if signature is not None:
            run_extra = _run_extra(cache.key_salt, cache_whole_run, run_kwargs.get("deps"), deps_key)
            history_canon = _fastpath.history_canonical(history)
    elif cache_whole_run:  # the deps must be keyable whether or not this call can take the fast path
        _run_extra(cache.key_salt, cache_whole_run, run_kwargs.get("deps"), deps_key)

    async def run_level_hit(waited: float | None = None) -> tuple[bool, Any]:
        """One GET and one decode, before the agent graph starts (see `_fastpath`)."""
        assert signature is not None
        assert isinstance(prompt, str)
        template = _fastpath.lookup_template(agent, signature, bool(history))
        if template is None:
            return False, None
        key = entry_key(ns, KeyKind.RUN, template.run_digest(ns, history_canon, prompt, run_extra))
        record = CallRecord(owner=cache)
        lookup_started = time.time_ns()
        # Only `full_result` needs the stored messages; decoding them is most of a hit's CPU time.
        entry = await cache.access.get_run(key, record, messages=full_result)
        if entry is None:
            return False, None
        found, output = template.recipe.output(entry.final)
        if not found:  # not the shape the recipe was proven on, or it does not validate: the graph decides
            return False, None
        logger.debug("run-level hit %s (task %s)", key, task_name)
        saved = cache.saved_cost(entry.meta.model, entry.usage, entry.meta.cost)
        ports.observer().run_hit(cache, key, entry, lookup_started, saved, waited)
        if spend is not None:
            spend.note_run_hit(record, entry)
            await spend.deliver(record)
        return True, (_result_from_entry(entry, output, history, agent) if full_result else output)

    if signature is not None and mode.reads:
        found, answer = await run_level_hit()
        if found:
            return answer

    # Identical concurrent calls in this process: the first runs the agent, the others wait for it and are then
    # answered by the run entry it stored, without running the agent graph at all. (If it fails, they run the agent
    # themselves; the request-level stampede protection of `ResponseCache` still applies to them.)
    flight: tuple[Any, ...] | None = None
    if signature is not None and mode is CacheMode.READ_WRITE:
        loop = asyncio.get_running_loop()
        flight = (id(loop), id(cache.access.store), ns, signature, dumps_canonical(history_canon), prompt, run_extra)
        leader = _in_flight.get(flight)
        if leader is None:
            _in_flight[flight] = loop.create_future()
        else:
            flight = None
            wait_started = time.monotonic()
            await asyncio.shield(leader)
            found, answer = await run_level_hit(waited=time.monotonic() - wait_started)
            if found:
                return answer

    # --- through the agent graph, request by request ---------------------------------------------------------
    try:
        record = CallRecord(owner=cache)
        token = current_call.set(record)
        try:
            capabilities = [*(run_kwargs.pop("capabilities", None) or ()), cache]
            result = await agent.run(
                prompt,
                message_history=history or None,
                capabilities=capabilities,
                **run_kwargs,
            )
        except Exception as exc:  # CacheMissError, RateLimitError, BudgetExceededError, provider errors, ...
            if spend is not None:
                await spend.deliver(record, exc)
            raise
        finally:
            current_call.reset(token)

        # A run answered by meaning is not stored as a run entry: that would turn a similar prompt into an exact one.
        if signature is not None and record.first_request is not None and mode.writes and not record.semantic_matches:
            await _store_run(
                agent, cache, signature, record, history_canon, prompt, run_extra, result, task_name, run_kwargs,
                cache_whole_run,
            )  # fmt: skip
    finally:
        if flight is not None:
            done = _in_flight.pop(flight)
            if not done.done():
                done.set_result(None)
    if spend is not None:
        await spend.deliver(record)
    return result if full_result else result.output


_in_flight: dict[tuple[Any, ...], asyncio.Future[None]] = {}
"""Calls running the agent graph for a static agent, by everything that makes their run key (and event loop)."""


_NOT_CONFIGURATION = frozenset(
    {
        "agent",
        "prompt",
        "full_result",
        "transcript_history",
        "message_converter",
        "cache_whole_run",
        "deps_key",
        "expense_recorder",
        "expense_hook",
        "run_kwargs",
    }
)
"""`cached_agent_run` parameters that do not go into its `ResponseCache`. Every other parameter is part of the
configuration key, so a parameter added later is covered without anyone having to remember this list."""

_OWN_PARAMETERS: tuple[str, ...] = tuple(inspect.signature(cached_agent_run).parameters)
_CONFIGURATION_PARAMETERS: tuple[str, ...] = tuple(name for name in _OWN_PARAMETERS if name not in _NOT_CONFIGURATION)
_PLAIN_TYPES = (str, int, float, bool, bytes, type(None), CacheMode)
_ENVIRONMENT = (REDIS_URL_ENV, CACHE_DIR_ENV, SECRET_ENV)
"""The environment variables that building a `ResponseCache` reads."""
_MAX_CAPABILITIES = 64

_capabilities_lock = threading.Lock()
_capabilities: OrderedDict[tuple[Any, ...], ResponseCache] = OrderedDict()
"""Capabilities built by earlier calls, by configuration key (least recently built first)."""


def _config_key(arguments: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """A key for the `ResponseCache` configuration of a call, or `None` when it cannot be reused.

    A `ResponseCache` keeps no state between runs (pydantic-ai shares one capability across the runs of an agent
    too), and building it is deterministic given its arguments and environment, including the errors it raises
    for bad ones: so a call whose arguments equal (same type and value) those of an earlier call can reuse the
    earlier capability. An explicit store is compared by identity (the kept capability holds it, so its `id` is
    not reused). Arguments that are objects (custom costs, a budget, a retry policy, a semantic configuration)
    may change between calls: such a call builds its own capability.
    """
    parts: list[Any] = []
    for name in _CONFIGURATION_PARAMETERS:
        value = arguments[name]
        if type(value) in _PLAIN_TYPES:
            parts.append((type(value), value))
        elif name == "store":
            parts.append(("store", id(value)))
        else:
            return None
    parts.extend(os.environ.get(name) for name in _ENVIRONMENT)
    return tuple(parts)


def _remember_capability(key: tuple[Any, ...], cache: ResponseCache) -> None:
    with _capabilities_lock:
        _capabilities[key] = cache
        while len(_capabilities) > _MAX_CAPABILITIES:
            _capabilities.popitem(last=False)


def _semantic_for_call(semantic: SemanticCache | None, accept: bool) -> SemanticCache | None:
    if not isinstance(accept, bool):
        raise ConfigurationError(f"accept_semantic must be True or False, got {accept!r}")
    if semantic is None or accept or not isinstance(semantic, SemanticCache):
        return semantic
    return dataclasses.replace(semantic, accept_hits=False)


def _result_from_entry(entry: RunEntry, output: Any, history: list[Any], agent: Any) -> AgentRunResult[Any]:
    """The result of a whole-run hit: the stored messages, stamped as messages of this run and conversation."""
    from pydantic_ai._agent_graph import GraphAgentState

    state = GraphAgentState()
    conversation = next((m.conversation_id for m in reversed(history) if getattr(m, "conversation_id", None)), None)
    if conversation is not None:
        state.conversation_id = conversation
    metadata = getattr(agent, "_metadata", None)
    state.metadata = metadata if isinstance(metadata, dict) else None
    stamped = [
        dataclasses.replace(m, run_id=state.run_id, conversation_id=state.conversation_id) for m in entry.new_messages
    ]
    state.message_history = [*history, *stamped]
    return AgentRunResult(
        output, _output_tool_name=entry.output_tool_name, _state=state, _new_message_index=len(history)
    )


async def _store_run(
    agent: Any,
    cache: ResponseCache,
    signature: Any,
    record: CallRecord,
    history_canon: list[dict[str, Any]],
    prompt: str,
    run_extra: str,
    result: AgentRunResult[Any],
    task_name: str,
    run_kwargs: Mapping[str, Any],
    whole_run: bool,
) -> None:
    """Store the run's messages under its first request's key, and learn the fast path's template for it.

    Only a run whose output pydantic-ai made from its final response by a plain recipe, reproduced here, is
    stored: a run with retries, or whose output another path made, keeps request-level entries only.
    """
    assert record.first_request is not None
    new_messages = result.new_messages()
    proven = _run_recipe(agent, run_kwargs.get("output_type"), new_messages, result.output, whole_run)
    if proven is None:
        return
    recipe, final = proven
    _fastpath.learn_template(agent, signature, record.first_request, history_canon, prompt, recipe)
    ns = cache.resolved_namespace
    key = entry_key(ns, KeyKind.RUN, request_digest(record.first_request, ns, extra=run_extra))
    if record.hits and not record.misses:
        # Every request hit: the run that called the model stored this entry. Reading its head is cheap; encoding
        # all of pydantic-ai's message types would cost the first call of a process hundreds of milliseconds.
        stored = await cache.access.get_run(key, record, messages=False)
        if stored is not None and stored.final == final:
            return
    entry = RunEntry(
        meta=EntryMeta(
            namespace=ns,
            model=record.models[0] if record.models else "unknown",
            task=task_name,
            cost=None if record.unpriced_requests or record.unpriced_hits else record.cost + record.saved_cost,
            requests=record.hits + record.misses,
        ),
        usage=record.usage + record.saved_usage,
        final=final,
        output_tool_name=getattr(result, "_output_tool_name", None),
        new_messages=new_messages,
    )
    await cache.access.put_entry(key, entry, record)


_RETRY_PARTS = frozenset({"retry-prompt", "retry-feedback"})


def _run_recipe(
    agent: Any, output_type: Any, new_messages: list[ModelMessage], output: Any, whole_run: bool
) -> tuple[OutputRecipe, dict[str, Any]] | None:
    """The recipe that made `output` from the run's final response, proven by reproducing it, with the projection
    of that response; `None` when the run had retries or its output cannot be reproduced that way."""
    responses = [m for m in new_messages if isinstance(m, ModelResponse)]
    retried = any(
        getattr(p, "part_kind", None) in _RETRY_PARTS for m in new_messages if isinstance(m, ModelRequest)
        for p in m.parts
    )  # fmt: skip
    if not responses or retried or (len(responses) > 1 and not whole_run):
        return None
    final = final_projection(responses[-1])
    try:
        recipe = output_recipe(output_schema(agent, output_type), final)
    except AgentShapeError:
        return None
    if recipe is None:
        return None
    found, value = recipe.output(final)
    if not found or type(value) is not type(output) or not _same(value, output):
        return None
    return recipe, final


def _same(a: Any, b: Any) -> bool:
    try:
        return bool(a == b)
    except Exception:
        return False


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
