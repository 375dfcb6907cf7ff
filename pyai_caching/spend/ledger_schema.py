"""The spend ledger's Redis schema (version 1), and the pure code that turns expenses into writes and hashes into rows.

```
pyai_caching_ledger:{v1}:day:<YYYY-MM-DD>   hash, one per UTC day (the day the call started)
pyai_caching_ledger:{v1}:total              hash, all-time totals (same fields)
    field  <namespace>|<task>|<model>|<metric>        value  integer (HINCRBY)
pyai_caching_ledger:{v1}:applied:<id>       string "1": expense <id> has been added (expires after 7 days)
```

`<model>` is `system:model_name` of the call's first request. `|` and `%` inside a name are written as `%7C` and
`%25`. Metrics: `cost_nusd`, `saved_nusd` and `embedding_nusd` (cost of the model requests, savings, and cost of the
semantic cache's embedding calls, in nano-USD, 1e-9 USD, so that sums are exact integers), and the counts of
`LEDGER_COUNTS`. The `{v1}` hash tag keeps every ledger key on one Redis Cluster slot; the keys are outside the
cache's `pyai_caching:` prefix, so clearing the cache never clears the ledger. Fields of a newer schema, and fields
that are not ours, are skipped when reading.

Each expense gets a random id and is added by one Lua script (`APPLY_SCRIPT`) that first sets its `applied:<id>`
marker with `SET NX` and adds the increments only if the marker was not there: atomic, so an expense is either
wholly in the ledger or not at all, and a write sent again after its reply was lost is recognized and skipped.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date
from decimal import ROUND_HALF_EVEN, Decimal
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote

from redis.exceptions import ResponseError

from pyai_caching._util.redact import redact_url_in_text
from pyai_caching._util.scrub import scrub_text
from pyai_caching.spend.outbox import LedgerWrite

if TYPE_CHECKING:
    from pyai_caching.spend.expense import Expense

__all__ = [
    "APPLY_SCRIPT",
    "LEDGER_COUNTS",
    "LEDGER_KEY_PREFIX",
    "METRICS",
    "TOTAL_KEY",
    "LedgerRow",
    "LedgerStatus",
    "applied_key",
    "day_key",
    "error_text",
    "ledger_write",
    "note_foreign_key",
    "parse_rows",
    "wrong_type",
]

logger = logging.getLogger("pyai_caching")

LEDGER_KEY_PREFIX: Final = "pyai_caching_ledger:{v1}:"
"""Every ledger key starts with this (outside the cache's `pyai_caching:` prefix)."""

NANO: Final = Decimal(10) ** 9
LEDGER_COUNTS: Final = (
    "calls",
    "requests",
    "hits",
    "misses",
    "unpriced_requests",
    "unpriced_hits",
    "errors",
    "embedding_calls",
    "embedding_tokens",
    "unpriced_embedding_calls",
)
"""The whole-number sums the ledger keeps per field (besides cost, savings and embedding cost, kept in nano-USD)."""
METRICS: Final = ("cost_nusd", "saved_nusd", "embedding_nusd", *LEDGER_COUNTS)
"""Every metric, in the order of `LedgerWrite.values`."""
TOTAL_KEY: Final = f"{LEDGER_KEY_PREFIX}total"
"""The hash of all-time totals."""

# KEYS: the day hash, the total hash, this expense's marker, then markers of confirmed writes to forget.
# ARGV: marker TTL (s), day TTL (s, 0: none), the field prefix, then (metric, increment) pairs.
# Every command is in the documented minimal ACL rule; every key shares the {v1} hash tag (one Cluster slot).
APPLY_SCRIPT: Final = """
if redis.acl_check_cmd then
  -- Redis does not undo a script's writes when a later command fails: refuse before writing anything
  local needed = {{'SET', KEYS[3], '1', 'NX', 'EX', '1'}, {'HINCRBY', KEYS[1], 'f', '1'},
    {'HINCRBY', KEYS[2], 'f', '1'}}
  if ARGV[2] ~= '0' then needed[#needed + 1] = {'EXPIRE', KEYS[1], ARGV[2]} end
  for _, command in ipairs(needed) do
    if not redis.acl_check_cmd(unpack(command)) then
      return redis.error_reply('NOPERM this user may not run ' .. command[1] .. ' on ' .. command[2])
    end
  end
end
for i = 4, #KEYS do redis.call('DEL', KEYS[i]) end
for i = 1, 2 do
  local kind = redis.call('TYPE', KEYS[i]).ok
  if kind ~= 'hash' and kind ~= 'none' then
    return redis.error_reply('WRONGTYPE ' .. KEYS[i] .. ' holds a ' .. kind .. ', not a ledger hash')
  end
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[1]) then return 0 end
for i = 4, #ARGV, 2 do
  redis.call('HINCRBY', KEYS[1], ARGV[3] .. ARGV[i], ARGV[i + 1])
  redis.call('HINCRBY', KEYS[2], ARGV[3] .. ARGV[i], ARGV[i + 1])
end
if ARGV[2] ~= '0' then redis.call('EXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


def day_key(day: date) -> str:
    """The hash of one UTC day."""
    return f"{LEDGER_KEY_PREFIX}day:{day.isoformat()}"


def applied_key(write_id: str) -> str:
    """The marker saying that write `write_id` has been added."""
    return f"{LEDGER_KEY_PREFIX}applied:{write_id}"


def _escape(name: str) -> str:
    return name.replace("%", "%25").replace("|", "%7C")


def to_nano(value: Decimal | None) -> int:
    """USD as a whole number of nano-USD (`None` counts as 0)."""
    if value is None:
        return 0
    return int((value * NANO).to_integral_value(rounding=ROUND_HALF_EVEN))


def ledger_write(expense: Expense) -> LedgerWrite:
    """The write of one expense (pure): its increments, keyed by namespace, task and model."""
    values = {
        "cost_nusd": to_nano(expense.cost),
        "saved_nusd": to_nano(expense.cost_saved),
        "embedding_nusd": to_nano(expense.embedding_cost),
        "calls": 1,
        "requests": expense.requests,
        "hits": expense.hits,
        "misses": expense.misses,
        "unpriced_requests": expense.unpriced_requests,
        "unpriced_hits": expense.unpriced_hits,
        "errors": 1 if expense.error else 0,
        "embedding_calls": expense.embedding_calls,
        "embedding_tokens": expense.embedding_tokens,
        "unpriced_embedding_calls": expense.unpriced_embedding_calls,
    }
    return LedgerWrite(
        id=uuid.uuid4().hex,
        day=expense.started_at.astimezone(UTC).date(),
        namespace=expense.namespace,
        task=expense.task_name,
        field_prefix=f"{_escape(expense.namespace)}|{_escape(expense.task_name)}|{_escape(expense.model)}|",
        values=tuple(values[metric] for metric in METRICS),
        cost=expense.total_cost or Decimal(0),
    )


def wrong_type(error: Exception) -> bool:
    """Whether `error` is Redis saying a key holds another type (a key that is not ours)."""
    return isinstance(error, ResponseError) and "WRONGTYPE" in str(error)


def error_text(error: BaseException) -> str:
    """`Type: message` of an error, with URLs' passwords and secrets removed, at most 300 characters."""
    return scrub_text(redact_url_in_text(f"{type(error).__name__}: {error}"))[:300]


_FOREIGN_KEYS_KEPT: Final = 256
_foreign_lock = threading.Lock()
_foreign_keys: OrderedDict[str, None] = OrderedDict()
"""Ledger keys found holding something else, warned about once (the most recent `_FOREIGN_KEYS_KEPT`)."""


def note_foreign_key(key: str) -> None:
    """Log that `key` is not a ledger hash: a warning the first time, debug after that."""
    with _foreign_lock:
        seen = key in _foreign_keys
        _foreign_keys[key] = None
        _foreign_keys.move_to_end(key)
        while len(_foreign_keys) > _FOREIGN_KEYS_KEPT:
            _foreign_keys.popitem(last=False)
    (logger.debug if seen else logger.warning)("the spend ledger key %s is not a hash; it is skipped", key)


@dataclass(frozen=True, kw_only=True)
class LedgerStatus:
    """What one `RedisSpendLedger` object has written, and what it still holds in memory."""

    pending: int
    """Expenses Redis has not confirmed yet: being written, or buffered during an outage."""
    written: int
    """Expenses Redis confirmed it added."""
    buffered: int
    """Expenses that had to wait in the buffer (a failed or timed-out write, or an outage)."""
    duplicates: int
    """Buffered expenses Redis had already added (their reply was lost): skipped, not counted twice."""
    dropped: int
    """Expenses lost because the buffer was full (`max_pending`)."""
    dropped_cost: Decimal
    """Their known cost in USD."""
    down_since: float | None
    """`time.monotonic()` when the current outage started, or `None` while Redis answers."""


@dataclass(frozen=True, kw_only=True)
class LedgerRow:
    """The ledger's sums for one namespace, task and model on one day (or all time)."""

    day: date | None
    """The UTC day, or `None` for all-time totals."""
    namespace: str
    """The cache namespace."""
    task: str
    """The task name."""
    model: str
    """`system:model_name`."""
    cost: Decimal = Decimal(0)
    """USD spent on model requests (known prices only; see `unpriced_requests`)."""
    saved: Decimal = Decimal(0)
    """USD the cache saved (known prices only; see `unpriced_hits`)."""
    calls: int = 0
    """`cached_agent_run` calls."""
    requests: int = 0
    """Model requests (hits + misses)."""
    hits: int = 0
    """Requests answered from the cache."""
    misses: int = 0
    """Requests sent to the model."""
    unpriced_requests: int = 0
    """Requests sent whose cost was unknown."""
    unpriced_hits: int = 0
    """Hits whose saved cost was unknown."""
    errors: int = 0
    """Calls that raised."""
    embedding_cost: Decimal = Decimal(0)
    """USD spent on the semantic cache's embedding calls (known prices only; see `unpriced_embedding_calls`)."""
    embedding_calls: int = 0
    """Embedding calls made by the semantic cache."""
    embedding_tokens: int = 0
    """Tokens of those embedding calls."""
    unpriced_embedding_calls: int = 0
    """Embedding calls whose cost was unknown."""

    @property
    def total_cost(self) -> Decimal:
        """`cost + embedding_cost`: everything spent (known prices only). Budgets count this."""
        return self.cost + self.embedding_cost


def parse_rows(day: date | None, raw: Mapping[Any, Any], *, namespace: str | None, task: str | None) -> list[LedgerRow]:
    """The rows of one ledger hash (`HGETALL` reply), only those of `namespace` and `task` when given."""
    grouped: dict[tuple[str, str, str], dict[str, int]] = {}
    for raw_field, raw_value in raw.items():
        name = raw_field.decode("utf-8", "replace") if isinstance(raw_field, bytes) else str(raw_field)
        parts = name.split("|")
        if len(parts) != 4 or parts[3] not in METRICS:
            continue  # a field of a newer schema, or not ours
        ns, task_name, model = (unquote(p) for p in parts[:3])
        if (namespace is not None and ns != namespace) or (task is not None and task_name != task):
            continue
        try:
            value = int(raw_value)
        except (TypeError, ValueError):
            continue
        grouped.setdefault((ns, task_name, model), {})[parts[3]] = value
    rows = []
    for (ns, task_name, model), metrics in grouped.items():
        counts = {name: metrics.get(name, 0) for name in LEDGER_COUNTS}
        rows.append(
            LedgerRow(
                day=day,
                namespace=ns,
                task=task_name,
                model=model,
                cost=Decimal(metrics.get("cost_nusd", 0)) / NANO,
                saved=Decimal(metrics.get("saved_nusd", 0)) / NANO,
                embedding_cost=Decimal(metrics.get("embedding_nusd", 0)) / NANO,
                **counts,
            )
        )
    return rows
