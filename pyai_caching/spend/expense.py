"""`Expense`: what one `cached_agent_run` call spent and saved, and the shapes of the hooks that receive it.

Two ways to hear about spend, both optional, on `cached_agent_run` / `cached_agent_run_sync`:

* `expense_recorder=`: the simple form, `(model: str, task_name: str, cost: float) -> None` (sync or async),
  called once per call with the USD cost of the call (model requests actually made plus embedding calls of the
  semantic cache; 0.0 on a full hit);
* `expense_hook=`: the rich form, called once per call with an `Expense` (cost, saved cost, usage, hits, misses,
  retries, time, ...): a callable `(Expense) -> None` (sync or async), a recorder object with a
  `record(expense)` method (`LoggingRecorder`, `RedisSpendLedger`), or a list of them.

This module depends on nothing else of `pyai_caching.spend`, so recorders, the ledger and budgets can all import it.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from pydantic_ai.usage import RunUsage

if TYPE_CHECKING:
    from pyai_caching.engine.context import SemanticMatch

__all__ = ["Expense", "ExpenseHook", "ExpenseRecorder", "SimpleExpenseRecorder", "call_maybe_async"]


@dataclass(frozen=True, kw_only=True)
class Expense:
    """What one `cached_agent_run` call spent, and what the cache saved it."""

    task_name: str
    """The call's `task_name`."""
    model: str
    """`system:model_name` of the call's first model request (made or served from the cache); `"unknown"` if the
    call failed before any request."""
    models: tuple[str, ...]
    """Every distinct model of the call, in order of first use."""
    namespace: str
    """The cache namespace of the call."""
    cost: Decimal | None
    """USD cost of the model requests actually sent: `0` on a full hit, `None` when requests were sent and none
    could be priced. When some but not all could, it is the known part (see `unpriced_requests`)."""
    cost_saved: Decimal | None
    """USD the cache hits saved, priced from the stored usage (custom prices win): `0` without hits, `None` when
    no hit could be priced. When some but not all could, it is the known part (see `unpriced_hits`)."""
    usage: RunUsage
    """Token usage of the requests actually sent."""
    saved_usage: RunUsage
    """Token usage the hits would have cost (from the stored responses)."""
    requests: int
    """Model requests of the call: `hits + misses`."""
    hits: int
    """Requests answered from the cache (for a whole-run hit: the requests the stored run took)."""
    misses: int
    """Requests sent to the model (and billed)."""
    unpriced_requests: int = 0
    """Requests sent whose cost is unknown."""
    unpriced_hits: int = 0
    """Hits whose saved cost is unknown."""
    attempts: int = 0
    """Attempts made at the requests sent, retries after rate limits included."""
    retry_wait: float = 0.0
    """Seconds spent waiting between retries."""
    run_level_hit: bool = False
    """The whole run was answered from one cache entry (the model and the agent graph were not involved)."""
    embedding_calls: int = 0
    """Embedding calls the semantic cache made for the call (each one billed by the embedding provider)."""
    embedding_tokens: int = 0
    """Tokens of those embedding calls."""
    embedding_cost: Decimal = Decimal(0)
    """USD of the embedding calls that could be priced (see `unpriced_embedding_calls`); not part of `cost`, part of
    `total_cost`."""
    unpriced_embedding_calls: int = 0
    """Embedding calls whose cost is unknown."""
    semantic_matches: tuple[SemanticMatch, ...] = ()
    """Of `hits`, those answered by a similar recorded prompt (`SemanticCache`): each with its similarity and
    the matched prompt. `to_dict()` leaves the prompts out (they may be personal data)."""
    started_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    """When the call started (UTC)."""
    duration: float = 0.0
    """Seconds the call took, recorders excluded."""
    error: str | None = None
    """The name of the exception the call raised (`"RateLimitError"`, ...), or `None` when it succeeded."""

    @property
    def cost_usd(self) -> float:
        """`cost` as a float (0.0 when unknown)."""
        return float(self.cost) if self.cost is not None else 0.0

    @property
    def total_cost(self) -> Decimal | None:
        """USD the call spent: `cost` (model requests) plus `embedding_cost`; `None` when nothing spent could be
        priced. This is what budgets and the spend ledger's totals count."""
        embeddings_known = self.embedding_calls > self.unpriced_embedding_calls
        if self.cost is None and not embeddings_known:
            return None
        return (self.cost or Decimal(0)) + self.embedding_cost

    @property
    def cost_saved_usd(self) -> float:
        """`cost_saved` as a float (0.0 when unknown)."""
        return float(self.cost_saved) if self.cost_saved is not None else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (costs as floats or `None`, times as ISO 8601 / seconds)."""
        return {
            "task_name": self.task_name,
            "model": self.model,
            "models": list(self.models),
            "namespace": self.namespace,
            "cost": float(self.cost) if self.cost is not None else None,
            "cost_saved": float(self.cost_saved) if self.cost_saved is not None else None,
            "input_tokens": self.usage.input_tokens,
            "output_tokens": self.usage.output_tokens,
            "saved_input_tokens": self.saved_usage.input_tokens,
            "saved_output_tokens": self.saved_usage.output_tokens,
            "requests": self.requests,
            "hits": self.hits,
            "misses": self.misses,
            "unpriced_requests": self.unpriced_requests,
            "unpriced_hits": self.unpriced_hits,
            "attempts": self.attempts,
            "retry_wait": self.retry_wait,
            "run_level_hit": self.run_level_hit,
            "embedding_calls": self.embedding_calls,
            "embedding_tokens": self.embedding_tokens,
            "embedding_cost": float(self.embedding_cost),
            "unpriced_embedding_calls": self.unpriced_embedding_calls,
            "total_cost": float(total) if (total := self.total_cost) is not None else None,
            "semantic_hits": len(self.semantic_matches),
            "semantic_similarities": [m.similarity for m in self.semantic_matches],
            "started_at": self.started_at.isoformat(),
            "duration": self.duration,
            "error": self.error,
        }


SimpleExpenseRecorder = Callable[[str, str, float], Awaitable[None] | None]
"""`expense_recorder=`: `(model, task_name, cost_usd) -> None`, sync or async."""


class ExpenseRecorder(Protocol):
    """A recorder object: anything with a `record(expense)` method, sync or async."""

    def record(self, expense: Expense) -> Awaitable[None] | None:
        """Record one expense."""
        ...


ExpenseHook = Callable[[Expense], Awaitable[None] | None] | ExpenseRecorder
"""`expense_hook=`: a callable taking an `Expense` (sync or async) or an `ExpenseRecorder`."""


async def call_maybe_async(function: Callable[..., Any], *args: Any) -> None:
    """Call a sync or async callable and await its result if it is awaitable."""
    result = function(*args)
    if inspect.isawaitable(result):
        await result
