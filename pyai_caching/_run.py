"""The steps of `cached_agent_run` that run: the run-level fast path, and the run through the agent graph.

The fast path answers a repeated call of an agent whose first request is known before the graph starts, with one
store read (see `pyai_caching.engine.fastpath`); identical concurrent calls of one event loop share one run of the
graph (`engine.single_flight`). Every other call runs the graph with the `ResponseCache` capability, request by
request.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai.run import AgentRunResult

from pyai_caching._util.canonical_json import dumps_canonical
from pyai_caching.capability import ResponseCache
from pyai_caching.engine import fastpath, ports
from pyai_caching.engine.context import CallRecord, current_call
from pyai_caching.engine.keys import KeyKind, entry_key
from pyai_caching.engine.pai_compat import history_sent_as_is
from pyai_caching.engine.run_entries import result_from_entry, run_extra, store_run
from pyai_caching.engine.single_flight import Flight, SingleFlight
from pyai_caching.spend.tracker import SpendTracker
from pyai_caching.types import CacheMode

__all__ = ["RunLevel", "run_graph"]

logger = logging.getLogger("pyai_caching")

_runs: SingleFlight[None] = SingleFlight()
"""Calls running the agent graph for a static agent, by everything that makes their run key."""


@dataclass(kw_only=True)
class RunLevel:
    """A call that may be answered by a run entry, before the agent graph starts."""

    agent: Any
    cache: ResponseCache
    prompt: str
    history: list[Any]
    call: dict[str, Any]
    """The arguments of `cached_agent_run`, by name."""
    spend: SpendTracker | None
    shape: tuple[Hashable, ...]
    history_canon: list[dict[str, Any]]
    extra: str
    _flight: Flight[None] | None = field(default=None, init=False)

    @classmethod
    def plan(
        cls, agent: Any, cache: ResponseCache, history: list[Any], call: dict[str, Any], spend: SpendTracker | None
    ) -> RunLevel | None:
        """The fast path of this call, or `None` when only the graph can tell what it sends."""
        prompt, run_kwargs, whole_run = call["prompt"], call["run_kwargs"], call["cache_whole_run"]
        deps, deps_key = run_kwargs.get("deps"), call["deps_key"]
        # A full result carries the run's identity (run and conversation ids, metadata) that only pydantic-ai's
        # graph builds exactly: it takes the graph, except in whole-run mode, whose point is the skip.
        if (
            not isinstance(prompt, str)
            or cache.resolved_mode is CacheMode.BYPASS
            or (call["full_result"] and not whole_run)
        ):
            if whole_run:  # the deps must be keyable whether or not this call can take the fast path
                run_extra(cache.key_salt, whole_run, deps, deps_key)
            return None
        shape = fastpath.static_shape(agent, run_kwargs, whole_run=whole_run)
        if shape is None or (history and not history_sent_as_is(history)):
            if whole_run:
                run_extra(cache.key_salt, whole_run, deps, deps_key)
            return None  # or pydantic-ai would change the history before sending: only the graph sees what is sent
        extra = run_extra(cache.key_salt, whole_run, deps, deps_key)
        canon = fastpath.history_canonical(history)
        return cls(
            agent=agent, cache=cache, prompt=prompt, history=history, call=call, spend=spend, shape=shape,
            history_canon=canon, extra=extra,
        )  # fmt: skip

    async def answer(self) -> tuple[bool, Any]:
        """`(True, answer)` from a run entry; else `(False, None)`, and this call may lead identical ones."""
        mode = self.cache.resolved_mode
        if mode.reads:
            found, answer = await self._hit()
            if found:
                return found, answer
        if mode is CacheMode.READ_WRITE:
            key = self._flight_key()
            leader = _runs.under_way(key)
            if leader is None:
                self._flight = _runs.take_off(key)
            else:  # an identical call is running the graph: its run entry will answer this one
                started = time.monotonic()
                await leader.wait()
                return await self._hit(waited=time.monotonic() - started)
        return False, None

    async def store(self, record: CallRecord, result: AgentRunResult[Any]) -> None:
        """Store the run the graph made, as a run entry (a run answered by meaning is not: that would turn a
        similar prompt into an exact one)."""
        if record.first_request is None or not self.cache.resolved_mode.writes or record.semantic_matches:
            return
        await store_run(
            self.agent, self.cache, self.shape, record, self.history_canon, self.prompt, self.extra, result,
            self.call["task_name"], self.call["run_kwargs"], self.call["cache_whole_run"],
        )  # fmt: skip

    def release(self) -> None:
        """Wake the identical calls that waited for this one (they look for its run entry)."""
        flight, self._flight = self._flight, None
        if flight is not None:
            _runs.land(self._flight_key(), flight, None)

    def _flight_key(self) -> Hashable:
        history = dumps_canonical(self.history_canon)
        ns = self.cache.resolved_namespace
        return (id(self.cache.access.store), ns, self.shape, history, self.prompt, self.extra)

    async def _hit(self, waited: float | None = None) -> tuple[bool, Any]:
        """One GET and one decode, before the agent graph starts."""
        template = fastpath.lookup_template(self.agent, self.shape, bool(self.history))
        if template is None:
            return False, None
        cache, ns, full_result = self.cache, self.cache.resolved_namespace, self.call["full_result"]
        key = entry_key(ns, KeyKind.RUN, template.run_digest(ns, self.history_canon, self.prompt, self.extra))
        record = CallRecord(owner=cache)
        started = time.time_ns()
        # Only `full_result` needs the stored messages; decoding them is most of a hit's CPU time.
        entry = await cache.access.get_run(key, record, messages=full_result)
        if entry is None:
            return False, None
        found, output = template.recipe.output(entry.final)
        if not found:  # not the shape the recipe was proven on, or it does not validate: the graph decides
            return False, None
        logger.debug("run-level hit %s (task %s)", key, self.call["task_name"])
        saved = cache.saved_cost(entry.meta.model, entry.usage, entry.meta.cost)
        ports.observer().run_hit(cache, key, entry, started, saved, waited)
        if self.spend is not None:
            self.spend.note_run_hit(record, entry, saved)
            await self.spend.deliver(record)
        return True, (result_from_entry(entry, output, self.history, self.agent) if full_result else output)


async def run_graph(
    agent: Any,
    cache: ResponseCache,
    prompt: Any,
    history: list[Any],
    run_kwargs: dict[str, Any],
    spend: SpendTracker | None,
) -> tuple[AgentRunResult[Any], CallRecord]:
    """`agent.run` with the cache as its last capability, and the record of what the cache did."""
    record = CallRecord(owner=cache)
    token = current_call.set(record)
    try:
        capabilities = [*(run_kwargs.pop("capabilities", None) or ()), cache]
        result = await agent.run(prompt, message_history=history or None, capabilities=capabilities, **run_kwargs)
    except Exception as exc:  # CacheMissError, RateLimitError, BudgetExceededError, provider errors, ...
        if spend is not None:
            await spend.deliver(record, exc)
        raise
    finally:
        current_call.reset(token)
    return result, record
