"""Run-level entries: storing a whole run under its first request's key, and a result rebuilt from one.

A run entry is stored only when the run's output is reproduced from its final response by a plain recipe (see
`pyai_caching.engine.pai_compat.OutputRecipe`), so that a run-level hit validates the stored raw response exactly as
the run did.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse
from pydantic_ai.run import AgentRunResult

from pyai_caching.engine.deps_key import deps_material
from pyai_caching.engine.entries import EntryMeta, RunEntry
from pyai_caching.engine.fastpath import learn_template
from pyai_caching.engine.keys import KeyKind, entry_key, request_digest
from pyai_caching.engine.pai_compat import (
    AgentShapeError,
    OutputRecipe,
    final_projection,
    output_recipe,
    output_schema,
    output_tool_name,
    run_result,
)

if TYPE_CHECKING:
    from pyai_caching.engine.context import CallRecord
    from pyai_caching.engine.ports import CacheView

__all__ = ["result_from_entry", "run_extra", "run_recipe", "store_run"]


def run_extra(salt: str, whole_run: bool, deps: Any, deps_key: Callable[[Any], Any] | None) -> str:
    """What a run key adds to the first request's digest: the cache version, and the deps in whole-run mode."""
    if not whole_run:
        return f"{salt}\x00run"
    return f"{salt}\x00whole_run\x00{deps_material(deps, deps_key)}"


def result_from_entry(entry: RunEntry, output: Any, history: list[Any], agent: Any) -> AgentRunResult[Any]:
    """The result of a whole-run hit: the stored messages, stamped as messages of this run and conversation."""
    result: AgentRunResult[Any] = run_result(agent, output, history, entry.new_messages, entry.output_tool_name)
    return result


async def store_run(
    agent: Any,
    cache: CacheView,
    shape: Any,
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
    proven = run_recipe(agent, run_kwargs.get("output_type"), new_messages, result.output, whole_run)
    if proven is None:
        return
    recipe, final = proven
    learn_template(agent, shape, record.first_request, history_canon, prompt, recipe)
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
        output_tool_name=output_tool_name(result),
        new_messages=new_messages,
    )
    await cache.access.put_entry(key, entry, record)


_RETRY_PARTS = frozenset({"retry-prompt", "retry-feedback"})


def run_recipe(
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
