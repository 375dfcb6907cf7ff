"""Per-call bookkeeping shared between `cached_agent_run` and the `ResponseCache` capability."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pydantic_ai.usage import RunUsage

if TYPE_CHECKING:
    from .keys import CanonicalRequest

__all__ = ["CallRecord", "current_call"]


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
    saved_cost: Decimal | None = Decimal(0)
    """Cost the hits saved in USD (`None` if any saved cost was unknown)."""
    cache_errors: int = 0
    """Cache operations that failed during the call (the call went on without the cache)."""
    first_request: CanonicalRequest | None = None
    """The canonical form of the run's first model request (for the run-level fast path)."""
    run_level_hit: bool = False
    """The whole run was answered from a run entry."""
    models: list[str] = field(default_factory=list)
    """`system:model` of every request made or served, in order."""


current_call: ContextVar[CallRecord | None] = ContextVar("pyai_caching_current_call", default=None)
"""The record of the `cached_agent_run` call in progress, if any."""
