"""Where `Budget`s keep their counters: Redis (shared by every process, one Lua script per check) or this process.

## Redis schema (version 1)

```
pyai_caching_budget:{v1}:budgets                       hash: <name> -> JSON of the budget (unit, period, limit,
                                                       tenant kind)
pyai_caching_budget:{v1}:use:<name>|<tenant>|<period>  hash: spent, reserved, in_flight, admitted, denied, expired
pyai_caching_budget:{v1}:held:<name>|<tenant>|<period> sorted set: <reservation id>:<amount>, scored by the Redis
                                                       server's time (ms) when its lease ends
pyai_caching_budget:{v1}:tenants:<name>|<period>       set of the tenants with use in the period
pyai_caching_budget:{v1}:largest:<name>|<period>       string: the largest single request charged in the period
                                                       (any tenant); missing until one has been charged
```

Amounts are whole numbers: nano-USD (1e-9 USD) for USD budgets, tokens for token budgets. `<period>` is
`2025-06-01` (day), `2025-06` (month) or `total`; `|` and `%` in a name or tenant are written `%7C` and `%25`.
The `{v1}` hash tag keeps every key on one Redis Cluster slot, so one script can check every budget of a call.

## Reserve, then settle

The scripts are in `budget_scripts`. `RESERVE` (one script, atomic): for each budget, give back the reservations
whose lease ended (a process that died mid-request), then refuse if `spent + reserved >= limit`; when no budget
refuses, hold `amount` in each (`reserved += amount`) under a lease. `SETTLE` (after the request): drop the
reservation and add the real charge to `spent`. Two processes can never both be admitted on the last unit: the
first one's reservation is counted by the second one's check. `RELEASE` drops a reservation by its id alone, for a
check whose reply was lost (the call was cancelled while the script ran).

A budget without `reserve=` holds the largest single request charged in the current period. Until one has been
charged in the period, nothing is known of what a request costs: one request per tenant is admitted at a time (it
holds 0 while it measures), and the check refuses the others (`Refusal.measuring`) rather than let a burst of first
requests overspend.

A `MemoryStore`'s counters follow the same rules in this process; periods of one kind (day, month) replace each
other there (the use of an ended period is dropped), while budgets of one name with different periods stay apart,
as in Redis.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from pyai_caching.spend.budget_scripts import RELEASE, RESERVE, SETTLE
from pyai_caching.spend.periods import period_kind
from pyai_caching.stores.memory import MemoryStore
from pyai_caching.stores.redis import RedisStore

__all__ = [
    "BUDGET_KEY_PREFIX",
    "REGISTRY_KEY",
    "Ask",
    "Counters",
    "Held",
    "MemoryCounters",
    "RedisCounters",
    "Refusal",
    "Settlement",
    "counters_for",
    "escape",
]

BUDGET_KEY_PREFIX: Final = "pyai_caching_budget:{v1}:"
"""Every budget key starts with this (outside the cache's `pyai_caching:` prefix: clearing the cache keeps it)."""
REGISTRY_KEY: Final = f"{BUDGET_KEY_PREFIX}budgets"
"""The hash of the budgets that have been used, by name (what `read_budget_usage` lists)."""

FIELDS: Final = ("spent", "reserved", "in_flight", "admitted", "denied", "expired")
"""The fields of a use hash."""


def escape(name: str) -> str:
    """A name or tenant as written inside a key."""
    return name.replace("%", "%25").replace("|", "%7C")


def use_key(name: str, tenant: str, period: str) -> str:
    """The hash of one budget's use by one tenant in one period."""
    return f"{BUDGET_KEY_PREFIX}use:{escape(name)}|{escape(tenant)}|{period}"


def held_key(name: str, tenant: str, period: str) -> str:
    """The sorted set of that use's reservations."""
    return f"{BUDGET_KEY_PREFIX}held:{escape(name)}|{escape(tenant)}|{period}"


def tenants_key(name: str, period: str) -> str:
    """The set of the tenants of one budget with use in one period."""
    return f"{BUDGET_KEY_PREFIX}tenants:{escape(name)}|{period}"


def largest_key(name: str, period: str) -> str:
    """The largest single request one budget was charged in one period (what a request holds by default)."""
    return f"{BUDGET_KEY_PREFIX}largest:{escape(name)}|{period}"


@dataclass(frozen=True, slots=True)
class Ask:
    """One budget's part of a check: what to read and, when admitted, what to hold."""

    name: str
    """The budget's name."""
    tenant: str
    """The tenant (`""` for a budget shared by every call)."""
    period: str
    """The period's id."""
    limit: int
    """The limit, in whole units."""
    amount: int | None
    """Units to hold until the request settles; `None`: the largest single request charged in the period (one
    request of the tenant at a time, holding 0, until one has been charged)."""
    ttl: int
    """Seconds the use keys live (the rest of the period plus a retention); `0`: no expiry."""
    meta: str
    """The budget as JSON, for readers of the registry."""


@dataclass(frozen=True, slots=True)
class Held:
    """A reservation that was granted: settle it with the real charge."""

    ask: Ask
    amount: int
    """Units held."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """The budget that refused, and what it had then."""

    ask: Ask
    spent: int
    reserved: int
    in_flight: int
    measuring: bool = False
    """Refused not because the limit is reached but because no request has been charged in the period yet (the
    default reserve is unknown) and one of the tenant's requests, in flight, is measuring it."""


@dataclass(frozen=True, slots=True)
class Settlement:
    """One budget's part of a settle: the reservation to release and the charge to add."""

    hold: Held | None
    """The reservation to release (`None`: none was held, as for the embeddings charged at the end of a call)."""
    ask: Ask
    charge: int
    """Units to add to `spent`."""
    measured: bool
    """`charge` is the whole charge of one request that got its answer: it counts toward the period's largest."""


class Counters(Protocol):
    """A place that counts budgets' use atomically."""

    @property
    def description(self) -> str:
        """Where the counters are (never with a password)."""
        ...

    async def reserve(self, asks: list[Ask], reservation: str, lease: float) -> list[Held] | Refusal:
        """Admit (hold every ask's amount) or refuse, atomically for all of `asks`."""
        ...

    async def settle(self, items: list[Settlement], reservation: str) -> None:
        """Release each reservation and add its charge to its use."""
        ...

    async def release(self, asks: list[Ask], reservation: str) -> None:
        """Release the reservations of `reservation` in `asks`, if any are held, whatever their amounts."""
        ...

    async def read(self, uses: list[tuple[str, str, str]]) -> list[dict[str, int]]:
        """The fields of each `(name, tenant, period)` use (missing fields are 0)."""
        ...

    async def tenants(self, name: str, period: str) -> list[str]:
        """The tenants of `name` with use in `period`."""
        ...

    async def registry(self) -> dict[str, str]:
        """The JSON of every budget used so far, by name."""
        ...


def _keys(asks: list[Ask]) -> list[str]:
    keys = [REGISTRY_KEY]
    for ask in asks:
        keys += [
            use_key(ask.name, ask.tenant, ask.period),
            held_key(ask.name, ask.tenant, ask.period),
            tenants_key(ask.name, ask.period),
            largest_key(ask.name, ask.period),
        ]
    return keys


def _int(value: Any) -> int:
    return int(value.decode() if isinstance(value, bytes) else value)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


@dataclass
class RedisCounters:
    """Budgets' counters in Redis: one script per check, one per settle."""

    store: RedisStore

    @property
    def description(self) -> str:
        return self.store.description

    async def reserve(self, asks: list[Ask], reservation: str, lease: float) -> list[Held] | Refusal:
        args: list[str | int] = [reservation, int(lease * 1000)]
        for ask in asks:
            args += [ask.limit, -1 if ask.amount is None else ask.amount, ask.ttl, ask.name, ask.meta, ask.tenant]
        client = await self.store.client()
        reply = await client.register_script(RESERVE)(keys=_keys(asks), args=args)
        first = _int(reply[0])
        if first:
            spent, reserved, in_flight, measuring = (_int(v) for v in reply[1:5])
            return Refusal(
                ask=asks[first - 1], spent=spent, reserved=reserved, in_flight=in_flight, measuring=bool(measuring)
            )
        return [Held(ask=ask, amount=_int(v)) for ask, v in zip(asks, reply[1:], strict=True)]

    async def settle(self, items: list[Settlement], reservation: str) -> None:
        args: list[str | int] = [reservation]
        for item in items:
            held = -1 if item.hold is None else item.hold.amount
            args += [held, item.charge, item.ask.ttl, item.ask.tenant, int(item.measured)]
        client = await self.store.client()
        await client.register_script(SETTLE)(keys=_keys([item.ask for item in items]), args=args)

    async def release(self, asks: list[Ask], reservation: str) -> None:
        client = await self.store.client()
        await client.register_script(RELEASE)(keys=_keys(asks), args=[reservation])

    async def read(self, uses: list[tuple[str, str, str]]) -> list[dict[str, int]]:
        if not uses:
            return []
        client = await self.store.client()
        async with client.pipeline(transaction=False) as pipe:
            for name, tenant, period in uses:
                pipe.hgetall(use_key(name, tenant, period))
            replies = await pipe.execute()
        return [{f: _int(raw.get(f, raw.get(f.encode(), 0))) for f in FIELDS} for raw in replies]

    async def tenants(self, name: str, period: str) -> list[str]:
        client = await self.store.client()
        return sorted(_text(t) for t in await client.smembers(tenants_key(name, period)))

    async def registry(self) -> dict[str, str]:
        client = await self.store.client()
        raw = await client.hgetall(REGISTRY_KEY)
        return {_text(k): _text(v) for k, v in raw.items()}


@dataclass
class _Use:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(FIELDS, 0))
    held: dict[str, tuple[int, float]] = field(default_factory=dict)
    """Reservation id -> (amount, monotonic time its lease ends)."""


@dataclass
class MemoryCounters:
    """Budgets' counters in this process (for a `MemoryStore`): the same rules as in Redis, nothing shared.

    Periods here end by the budget's clock like in Redis; the uses of an ended period are dropped when the next
    period of the same kind starts (a daily budget and a monthly one of the same name stay apart, as in Redis).
    """

    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _uses: dict[tuple[str, str, str], _Use] = field(default_factory=dict, repr=False)
    _registry: dict[str, str] = field(default_factory=dict, repr=False)
    _largest: dict[tuple[str, str], int] = field(default_factory=dict, repr=False)
    """The largest single request charged, by (name, period)."""

    @property
    def description(self) -> str:
        return "memory"

    def _use(self, ask: Ask) -> _Use:
        key = (ask.name, ask.tenant, ask.period)
        found = self._uses.get(key)
        if found is None:
            # A new period of this budget: the uses of its earlier periods (of the same kind) are no longer needed.
            kind = period_kind(ask.period)
            ended = [k for k in self._uses if k[0] == ask.name and k[2] != ask.period and period_kind(k[2]) == kind]
            for old in ended:
                del self._uses[old]
                self._largest.pop((old[0], old[2]), None)
            found = self._uses[key] = _Use()
        return found

    async def reserve(self, asks: list[Ask], reservation: str, lease: float) -> list[Held] | Refusal:
        now = time.monotonic()
        with self._lock:
            amounts: list[int] = []
            for ask in asks:
                use = self._use(ask)
                for rid, (back, ends) in list(use.held.items()):
                    if ends <= now:
                        del use.held[rid]
                        use.counts["reserved"] -= back
                        use.counts["in_flight"] -= 1
                        use.counts["expired"] += 1
                c = use.counts
                spent = c["spent"] + c["reserved"] >= ask.limit
                hold = ask.amount if ask.amount is not None else self._largest.get((ask.name, ask.period))
                # Nothing charged in the period yet (no default reserve): one request of the tenant at a time.
                measuring = not spent and hold is None and c["in_flight"] > 0
                if spent or measuring:
                    c["denied"] += 1
                    self._registry[ask.name] = ask.meta
                    return Refusal(
                        ask=ask, spent=c["spent"], reserved=c["reserved"], in_flight=c["in_flight"], measuring=measuring
                    )
                amounts.append(hold or 0)
            for ask, amount in zip(asks, amounts, strict=True):
                use = self._use(ask)
                use.held[reservation] = (amount, now + lease)
                use.counts["reserved"] += amount
                use.counts["in_flight"] += 1
                use.counts["admitted"] += 1
                self._registry[ask.name] = ask.meta
            return [Held(ask=ask, amount=amount) for ask, amount in zip(asks, amounts, strict=True)]

    async def settle(self, items: list[Settlement], reservation: str) -> None:
        with self._lock:
            for item in items:
                ask = item.ask
                use = self._uses.get((ask.name, ask.tenant, ask.period))
                if use is None:  # a period that has ended and been dropped meanwhile
                    continue
                if item.hold is not None and use.held.pop(reservation, None) is not None:
                    use.counts["reserved"] -= item.hold.amount
                    use.counts["in_flight"] -= 1
                use.counts["spent"] += item.charge
                if item.measured:
                    largest = (ask.name, ask.period)
                    self._largest[largest] = max(self._largest.get(largest, 0), item.charge)

    async def release(self, asks: list[Ask], reservation: str) -> None:
        with self._lock:
            for ask in asks:
                use = self._uses.get((ask.name, ask.tenant, ask.period))
                held = use.held.pop(reservation, None) if use is not None else None
                if use is not None and held is not None:
                    use.counts["reserved"] -= held[0]
                    use.counts["in_flight"] -= 1

    async def read(self, uses: list[tuple[str, str, str]]) -> list[dict[str, int]]:
        with self._lock:
            return [dict(self._uses[u].counts) if u in self._uses else dict.fromkeys(FIELDS, 0) for u in uses]

    async def tenants(self, name: str, period: str) -> list[str]:
        with self._lock:
            return sorted(t for n, t, p in self._uses if n == name and p == period)

    async def registry(self) -> dict[str, str]:
        with self._lock:
            return dict(self._registry)


_memory_lock = threading.Lock()
_memory: dict[int, MemoryCounters] = {}
"""The counters of each live `MemoryStore`, by `id` (an entry goes when its store is collected)."""


def counters_for(store: RedisStore | MemoryStore) -> Counters:
    """The counters kept in `store`: in Redis for a `RedisStore`, in this process for a `MemoryStore`."""
    if isinstance(store, RedisStore):
        return RedisCounters(store)
    with _memory_lock:
        found = _memory.get(id(store))
        if found is None:
            found = _memory[id(store)] = MemoryCounters()
            weakref.finalize(store, _forget_memory, id(store))
        return found


def _forget_memory(store_id: int) -> None:
    with _memory_lock:
        _memory.pop(store_id, None)
