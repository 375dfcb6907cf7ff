"""Per-call bookkeeping shared between `cached_agent_run` and the `ResponseCache` capability."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pydantic_ai.usage import RunUsage

if TYPE_CHECKING:
    from pyai_caching.engine.canonical import CanonicalRequest

__all__ = ["CallRecord", "SemanticMatch", "current_call"]


@dataclass(frozen=True, kw_only=True)
class SemanticMatch:
    """A model request answered by a similar recorded prompt instead of an identical one."""

    prompt: str
    """The prompt of this request."""
    matched_prompt: str
    """The recorded prompt whose answer was served."""
    similarity: float
    """Cosine similarity of the two prompts' vectors (at or above the configured threshold)."""
    key: str
    """The store key of the exact entry that was served."""


@dataclass
class CallRecord:
    """What happened during one cached call: hits, misses, usage made and saved."""

    owner: Any = None
    """The capability instance that reports into this record (nested runs of other capabilities do not)."""
    hits: int = 0
    """Model requests answered from the cache."""
    misses: int = 0
    """Model requests sent to the model."""
    usage: RunUsage = field(default_factory=RunUsage)
    """Usage of the requests actually sent."""
    saved_usage: RunUsage = field(default_factory=RunUsage)
    """Usage the hits would have cost (from the stored responses)."""
    cost: Decimal = Decimal(0)
    """Cost in USD of the requests sent that could be priced (see `unpriced_requests`)."""
    unpriced_requests: int = 0
    """Requests sent whose cost is unknown (a model without a price): `cost` is then a lower bound."""
    saved_cost: Decimal = Decimal(0)
    """Cost in USD the hits saved, priced from the stored usage (see `unpriced_hits`)."""
    unpriced_hits: int = 0
    """Hits whose saved cost is unknown: `saved_cost` is then a lower bound."""
    attempts: int = 0
    """Attempts made at the requests sent, retries included (equal to `misses` when nothing was retried)."""
    retry_wait: float = 0.0
    """Seconds spent waiting between retries of rate-limited or failed requests."""
    embedding_calls: int = 0
    """Embedding calls the semantic cache made for the call."""
    embedding_tokens: int = 0
    """Tokens of those embedding calls."""
    embedding_cost: Decimal = Decimal(0)
    """USD of the embedding calls that could be priced (see `unpriced_embedding_calls`)."""
    unpriced_embedding_calls: int = 0
    """Embedding calls whose cost is unknown: `embedding_cost` is then a lower bound."""
    charged_embedding_cost: Decimal = Decimal(0)
    """Of `embedding_cost`, what the call's budgets have been charged so far (the rest is charged with the next
    request sent, or at the end of the call)."""
    charged_embedding_tokens: int = 0
    """Of `embedding_tokens`, what the call's budgets have been charged so far."""
    first_request: CanonicalRequest | None = None
    """The canonical form of the run's first model request (for the run-level fast path)."""
    run_level_hit: bool = False
    """The whole run was answered from a run entry."""
    models: list[str] = field(default_factory=list)
    """`system:model` of every request made or served, in order."""
    semantic_matches: list[SemanticMatch] = field(default_factory=list)
    """Of `hits`, those answered by a similar recorded prompt (`SemanticCache`), in order."""


current_call: ContextVar[CallRecord | None] = ContextVar("pyai_caching_current_call", default=None)
"""The record of the `cached_agent_run` call in progress, if any."""
