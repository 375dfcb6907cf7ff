"""Counters of cache activity in this process (moved to `pyai_caching.observability.metrics`; kept importable)."""

from pyai_caching.observability.metrics import (
    Counters,
    Labels,
    MetricsSnapshot,
    reset,
    snapshot,
)

__all__ = [
    "Counters",
    "Labels",
    "MetricsSnapshot",
    "reset",
    "snapshot",
]
