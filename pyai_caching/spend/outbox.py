"""What the spend ledger has not written yet: a bounded, thread-safe buffer and the bookkeeping of an outage. No I/O.

Every expense becomes one `LedgerWrite` with a unique id. A write goes to Redis at once while the ledger is up; a
write that fails (or whose reply is lost) waits here, and so does every new one while the ledger is down, until a
flusher gets them through. Redis applies each id at most once (see `_ledger._APPLY`), so a write retried after an
ambiguous failure is never counted twice. The buffer is bounded: past `capacity`, new writes are dropped and
counted. `Outbox` only decides; `RedisSpendLedger` does the I/O and the logging its decisions ask for.
"""

from __future__ import annotations

import threading
import time
from collections import Counter as CountingDict
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Final

__all__ = ["FORGET_BATCH", "LedgerWrite", "Outage", "Outbox"]

FORGET_BATCH: Final = 32
"""How many confirmed ids one write asks Redis to forget (their markers are only needed while a reply is unknown)."""
_CONFIRMED_KEPT: Final = 10_000


@dataclass(frozen=True, slots=True)
class LedgerWrite:
    """One expense as the ledger writes it."""

    id: str
    """Unique per expense: Redis applies an id at most once."""
    day: date
    """The UTC day the call started."""
    namespace: str
    """The call's namespace."""
    task: str
    """The call's task."""
    field_prefix: str
    """`<namespace>|<task>|<model>|`, escaped."""
    values: tuple[int, ...]
    """The increments, one per metric, in the order of `_ledger._METRICS`."""
    cost: Decimal
    """The known cost in USD (what a budget counts)."""


@dataclass(frozen=True, slots=True)
class Outage:
    """What to report when an outage ends (every buffered write is through)."""

    seconds: float
    """How long the ledger was down."""
    written: int
    """Buffered writes applied after it."""
    duplicates: int
    """Buffered writes Redis had already applied (a lost reply): skipped, not counted twice."""
    dropped: int
    """Writes dropped during it because the buffer was full."""
    dropped_cost: Decimal
    """Their known cost in USD."""


class Outbox:
    """The buffer of writes waiting for Redis, and whether Redis is down. Every method is thread-safe and quick.

    A write is in exactly one place until Redis confirms it: being sent directly, queued, or claimed by a flusher.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._queue: deque[LedgerWrite] = deque()
        self._sending: dict[str, LedgerWrite] = {}
        self._claimed: dict[str, LedgerWrite] = {}
        self._confirmed: deque[str] = deque(maxlen=_CONFIRMED_KEPT)
        self._protected: CountingDict[str] = CountingDict()
        self.down_since: float | None = None
        """`time.monotonic()` of the failure that took the ledger down; `None` while Redis answers."""
        self._outage_started: float | None = None
        self.written = 0
        self.buffered = 0
        self.duplicates = 0
        self.dropped = 0
        self.dropped_cost = Decimal(0)
        self._outage = _Tally()
        self._drop_warning_due = False

    # -- a new write -------------------------------------------------------------------------------------------

    def admit(self, write: LedgerWrite) -> bool:
        """`True`: send `write` now. `False`: Redis is down, and it was queued (or dropped when the queue is full)."""
        with self._lock:
            if self.down_since is None:
                self._sending[write.id] = write
                return True
            self._enqueue(write)
            return False

    def failed(self, writes: Iterable[LedgerWrite]) -> bool:
        """Writes Redis did not confirm wait in the queue (they may have been applied: their id protects them).

        Returns `True` when this starts an outage (the moment to warn, once).
        """
        with self._lock:
            for write in writes:
                self._release(write)
                self._enqueue(write)
            if self.down_since is None:
                self.down_since = time.monotonic()
            if self._outage_started is not None:
                return False
            self._outage_started = self.down_since
            return True

    def requeue(self, writes: Iterable[LedgerWrite]) -> None:
        """Writes whose sender was cancelled go back to the queue (their outcome is unknown: the id protects them)."""
        with self._lock:
            for write in writes:
                self._release(write)
                self._enqueue(write)

    def _release(self, write: LedgerWrite) -> None:
        self._sending.pop(write.id, None)
        self._claimed.pop(write.id, None)

    def _enqueue(self, write: LedgerWrite) -> None:
        if len(self._queue) >= self.capacity:
            self.dropped += 1
            self.dropped_cost += write.cost
            self._outage.dropped += 1
            self._outage.dropped_cost += write.cost
            if self._outage.dropped == 1:
                self._drop_warning_due = True
            return
        self._queue.append(write)
        self.buffered += 1

    def take_drop_warning(self) -> bool:
        """`True` once per outage, after its first dropped write (the moment to warn)."""
        with self._lock:
            due, self._drop_warning_due = self._drop_warning_due, False
            return due

    # -- flushing ----------------------------------------------------------------------------------------------

    def claim(self, limit: int) -> list[LedgerWrite]:
        """Take up to `limit` queued writes to send (only one, as a probe, while Redis is down)."""
        with self._lock:
            count = min(1 if self.down_since is not None else limit, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            for write in batch:
                self._claimed[write.id] = write
            return batch

    def confirmed(self, write: LedgerWrite, applied: bool) -> None:
        """Redis answered for `write`: applied now (`True`) or already applied by an earlier attempt (`False`)."""
        with self._lock:
            buffered = self._claimed.pop(write.id, None) is not None
            self._sending.pop(write.id, None)
            self._confirmed.append(write.id)
            self.written += applied
            self.duplicates += not applied
            if buffered:
                self._outage.written += applied
                self._outage.duplicates += not applied
            self.down_since = None  # Redis answers: new writes go straight to it again

    def confirmed_to_forget(self) -> list[str]:
        """Ids of writes Redis has answered for: their markers can go (sent along with the next write).

        Markers a reader relies on at the moment (`protect`) stay until it is done.
        """
        with self._lock:
            forget: list[str] = []
            kept: list[str] = []
            while self._confirmed and len(forget) < FORGET_BATCH:
                write_id = self._confirmed.popleft()
                (kept if write_id in self._protected else forget).append(write_id)
            self._confirmed.extendleft(reversed(kept))
            return forget

    def forget_later(self, ids: list[str]) -> None:
        """Give back ids taken by `confirmed_to_forget` for a write that failed: the next write sends them."""
        with self._lock:
            self._confirmed.extendleft(reversed(ids))

    def protect(self, ids: Iterable[str]) -> None:
        """Keep the markers of `ids` in Redis (a reader is checking which of them are in) until `unprotect`."""
        with self._lock:
            self._protected.update(ids)

    def unprotect(self, ids: Iterable[str]) -> None:
        """Undo one `protect(ids)`."""
        with self._lock:
            self._protected.subtract(ids)
            for write_id in [i for i, n in self._protected.items() if n <= 0]:
                del self._protected[write_id]

    def settle(self) -> Outage | None:
        """Once the queue is empty and no flusher is sending: the report of the outage that ended, if any."""
        with self._lock:
            if self._queue or self._claimed or self.down_since is not None or self._outage_started is None:
                return None
            tally, self._outage = self._outage, _Tally()
            report = Outage(
                seconds=time.monotonic() - self._outage_started,
                written=tally.written,
                duplicates=tally.duplicates,
                dropped=tally.dropped,
                dropped_cost=tally.dropped_cost,
            )
            self._outage_started = None
            return report

    # -- what is waiting ---------------------------------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Writes waiting for a flusher (claimed ones excluded)."""
        with self._lock:
            return len(self._queue)

    @property
    def unsettled(self) -> int:
        """Writes a flusher still has to get through: queued or being retried (direct writes under way excluded)."""
        with self._lock:
            return len(self._queue) + len(self._claimed)

    @property
    def pending(self) -> int:
        """Writes Redis has not confirmed: being sent, queued, or being retried."""
        with self._lock:
            return len(self._queue) + len(self._claimed) + len(self._sending)

    def pending_writes(self) -> list[LedgerWrite]:
        """A snapshot of the writes Redis has not confirmed."""
        with self._lock:
            return [*self._queue, *self._claimed.values(), *self._sending.values()]


@dataclass(slots=True)
class _Tally:
    written: int = 0
    duplicates: int = 0
    dropped: int = 0
    dropped_cost: Decimal = Decimal(0)
