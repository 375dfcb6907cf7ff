"""Observability: counters of cache activity (`pyai_caching.metrics`) and OpenTelemetry spans and attributes.

`Observability` implements the engine's `Observer` port; `pyai_caching.capability` installs it.
"""

from pyai_caching.observability.observer import Observability

__all__ = ["Observability"]
