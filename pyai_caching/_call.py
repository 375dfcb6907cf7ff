"""The steps of `cached_agent_run` before a run: its arguments checked, and the `ResponseCache` it uses."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic_ai.agent import AbstractAgent

from pyai_caching.capability import ResponseCache
from pyai_caching.engine import overrides as _overrides
from pyai_caching.engine.registry import CACHE_DIR_ENV, REDIS_URL_ENV
from pyai_caching.engine.validation import SECRET_ENV
from pyai_caching.exceptions import ConfigurationError
from pyai_caching.retry import resolve_retry
from pyai_caching.semantic import SemanticCache
from pyai_caching.spend.costs import check_custom_costs
from pyai_caching.transcripts import to_history
from pyai_caching.types import CacheMode

__all__ = ["capability_for_call", "check_call"]


def check_call(call: dict[str, Any], own: Sequence[str]) -> list[Any]:
    """Check the arguments of one `cached_agent_run` call (by name, in `call`; `own` lists its parameters) and
    return the history to send. Raises `ConfigurationError` naming the argument and the fix."""
    agent, task_name, run_kwargs = call["agent"], call["task_name"], call["run_kwargs"]
    if not isinstance(agent, AbstractAgent):
        raise ConfigurationError(f"agent must be a pydantic-ai Agent, got {type(agent).__name__}")
    if not isinstance(task_name, str) or not task_name.strip():
        raise ConfigurationError(f"task_name must be a non-empty string, got {task_name!r}")
    for flag in ("full_result", "cache_whole_run"):
        if not isinstance(call[flag], bool):
            raise ConfigurationError(f"{flag} must be True or False, got {call[flag]!r}")
    for reserved in ("user_prompt", "capabilities_cache"):
        if reserved in run_kwargs:
            raise ConfigurationError(f"{reserved} is not an agent.run keyword here; pass the prompt as `prompt`")
    _check_run_kwargs(agent, run_kwargs, own)
    if call["deps_key"] is not None and not call["cache_whole_run"]:
        raise ConfigurationError("deps_key only applies with cache_whole_run=True (only then are deps in the key)")
    history = to_history(call["transcript_history"], call["message_converter"])
    if "message_history" in run_kwargs:
        if history:
            raise ConfigurationError("pass either transcript_history= or message_history=, not both")
        history = list(run_kwargs.pop("message_history") or [])
    _check_prompt(call["prompt"])
    CacheMode.parse(call["cache_mode"])  # here, so that a bad value is reported as `cache_mode` (ResponseCache: `mode`)
    return history


def capability_for_call(call: dict[str, Any], own: Sequence[str]) -> ResponseCache:
    """The `ResponseCache` of a call: the one an earlier call with the same configuration built, or a new one.

    A test cassette in effect (`pyai_caching.testing`) replaces the store, the mode and maybe the namespace.
    """
    override = _overrides.active()
    if override is not None:
        call["redis_url"], call["store"], call["cache_mode"] = None, override.store, override.mode
        call["namespace"] = override.namespace or call["namespace"]
    # Building and validating a capability (store resolution, retry policy, ...) is a large part of a run-level hit.
    config_key = _config_key(call, [name for name in own if name not in _NOT_CONFIGURATION])
    cache = _capabilities.get(config_key) if config_key is not None else None
    if cache is None:
        cache = ResponseCache(
            redis_url=call["redis_url"],
            store=call["store"],
            namespace=call["namespace"],
            ttl=call["ttl"],
            mode=call["cache_mode"],
            task_name=call["task_name"],
            on_cache_error=call["on_cache_error"],
            secret=call["secret"],
            cache_timeout=call["cache_timeout"],
            retry=resolve_retry(call["retry"], call["max_wait"], call["initial_wait"]),
            custom_costs=check_custom_costs(call["custom_costs"]),
            budget=call["budget"],
            semantic=_semantic_for_call(call["semantic"], call["accept_semantic"]),
            cache_version=call["cache_version"],
            max_entry_bytes=call["max_entry_bytes"],
            explain_misses=call["explain_misses"],
        )
        if config_key is not None:
            _remember_capability(config_key, cache)
    return cache


def _check_run_kwargs(agent: AbstractAgent[Any, Any], run_kwargs: Mapping[str, Any], own: Sequence[str]) -> None:
    """An unknown keyword is reported as ours, with the closest keyword of `cached_agent_run` or `agent.run`."""
    accepted = _run_parameters(type(agent))
    if accepted is None:
        return
    unknown = [name for name in run_kwargs if name not in accepted]
    if not unknown:
        return
    ours = [name for name in own if name not in ("agent", "prompt", "task_name", "run_kwargs")]
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

_PLAIN_TYPES = (str, int, float, bool, bytes, type(None), CacheMode)
_ENVIRONMENT = (REDIS_URL_ENV, CACHE_DIR_ENV, SECRET_ENV)
"""The environment variables that building a `ResponseCache` reads."""
_MAX_CAPABILITIES = 64

_capabilities_lock = threading.Lock()
_capabilities: OrderedDict[tuple[Any, ...], ResponseCache] = OrderedDict()
"""Capabilities built by earlier calls, by configuration key (least recently built first)."""


def _config_key(arguments: Mapping[str, Any], names: Sequence[str]) -> tuple[Any, ...] | None:
    """A key for the `ResponseCache` configuration of a call, or `None` when it cannot be reused.

    A `ResponseCache` keeps no state between runs (pydantic-ai shares one capability across the runs of an agent
    too), and building it is deterministic given its arguments and environment, including the errors it raises
    for bad ones: so a call whose arguments equal (same type and value) those of an earlier call can reuse the
    earlier capability. An explicit store is compared by identity (the kept capability holds it, so its `id` is
    not reused). Arguments that are objects (custom costs, a budget, a retry policy, a semantic configuration)
    may change between calls: such a call builds its own capability.
    """
    parts: list[Any] = []
    for name in names:
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
