"""Reading the Redis spend ledger for `stats` (all-time hits and misses) and `spend` (per task, model and day).

The spend modules are imported when a command reads the ledger, not when the CLI starts.
"""

from __future__ import annotations

from collections.abc import Iterable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pyai_caching.stores import RedisStore

if TYPE_CHECKING:
    from pyai_caching.spend.recorders import RedisSpendLedger

__all__ = ["ledger_of", "ledger_sums", "sum_rows"]


def ledger_of(store: RedisStore) -> RedisSpendLedger:
    """The spend ledger kept in `store`."""
    from pyai_caching.spend.recorders import RedisSpendLedger

    return RedisSpendLedger(store=store)


def ledger_sums() -> tuple[str, ...]:
    """The ledger's whole-number sums (`calls`, `requests`, `hits`, ...)."""
    from pyai_caching.spend.recorders import LEDGER_COUNTS

    return LEDGER_COUNTS


def sum_rows(rows: Iterable[Any]) -> dict[str, Any]:
    """The sums of ledger rows, JSON-ready: the counts, `cost`, `saved` and `embedding_cost` (as strings) and
    `hit_ratio`."""
    out: dict[str, Any] = dict.fromkeys(ledger_sums(), 0)
    cost = saved = embedding = Decimal(0)
    for row in rows:
        for name in ledger_sums():
            out[name] += getattr(row, name)
        cost += row.cost
        saved += row.saved
        embedding += row.embedding_cost
    out["cost"] = str(cost)
    out["saved"] = str(saved)
    out["embedding_cost"] = str(embedding)
    out["hit_ratio"] = out["hits"] / out["requests"] if out["requests"] else None
    return out
