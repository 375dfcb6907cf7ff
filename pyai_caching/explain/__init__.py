"""Why did this miss? A record of recent misses, and the report of `pyai-caching explain`.

Each request-level miss of a cache with `explain_misses=True` (the default) leaves a fingerprint of its key's
ingredients (`pyai_caching.explain.fingerprint`: digests, no prompt text) in a capped, expiring log in the cache's
store (`pyai_caching.explain.log`). `miss_report` compares recent misses with the nearest stored entries and names
the ingredient that differed (`pyai_caching.explain.report`).

The engine reaches this feature only through `pyai_caching.engine.ports.miss_listeners`; `pyai_caching.capability`
registers `note_miss` there.
"""

from pyai_caching.explain.log import MAX_MISSES, MISS_TTL, flush_misses, note_miss
from pyai_caching.explain.report import (
    REPORT_SCHEMA,
    Difference,
    ExplainedMiss,
    Miss,
    MissReport,
    NearestEntry,
    miss_report,
    read_misses,
    render_report,
)

__all__ = [
    "MAX_MISSES",
    "MISS_TTL",
    "REPORT_SCHEMA",
    "Difference",
    "ExplainedMiss",
    "Miss",
    "MissReport",
    "NearestEntry",
    "flush_misses",
    "miss_report",
    "note_miss",
    "read_misses",
    "render_report",
]
