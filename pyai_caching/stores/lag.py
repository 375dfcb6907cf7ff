"""Event-loop lag: tell a slow server from a busy client.

A timeout measures wall time. When the process is busy (hundreds of concurrent runs on a few cores), the event
loop may not come around for hundreds of milliseconds: a reply that arrived long ago is read only when the loop
gets to it, and a timeout whose deadline passed meanwhile fires although the server answered at once. Blaming
the server for that (and skipping it, or calling the model instead of waiting for an entry) turns a busy moment
into a storm of model calls.

So each event loop that does cache I/O gets a `LoopLag`: while operations are in flight, a timer ticks every
10 ms and records how late it fired. A late tick means the loop was stalled (running other work, or the process
was not scheduled) between the tick's due time and now. `stalled(since, until)` sums those stalls, so that

    responsive time = wall time - stalled time

is the time during which a reply *could* have been read. `responsive_timeout` bounds an operation by responsive
time instead of wall time, and `LoopLag.excuses` says whether a timeout that already happened fell mostly in a
stall (then it says nothing about the server).
"""

from __future__ import annotations

import asyncio
import collections
import weakref
from collections.abc import Awaitable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Final, TypeVar

__all__ = ["LoopLag", "loop_lag", "responsive_timeout", "wait_responsive"]

T = TypeVar("T")

PERIOD: Final = 0.01
"""Seconds between two ticks while operations are in flight."""

MIN_STALL: Final = 0.005
"""A tick later than this is recorded as a stall (smaller delays are the loop's ordinary jitter)."""

IDLE_STOP: Final = 1.0
"""The ticking stops this long after the last operation ended (and starts again with the next one)."""

_KEPT: Final = 4096
"""Stalls remembered per loop (a few minutes of a badly overloaded loop; older ones are dropped)."""

_lags: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, LoopLag] = weakref.WeakKeyDictionary()


class LoopLag:
    """The stalls of one event loop, measured by a ticking timer while operations are in flight."""

    __slots__ = ("__weakref__", "_active", "_due", "_handle", "_idle_since", "_loop", "_stalls")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._stalls: collections.deque[tuple[float, float]] = collections.deque(maxlen=_KEPT)
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        self._active = 0
        self._idle_since = 0.0

    def start(self) -> float:
        """An operation starts: keep measuring until the matching `stop`. Returns the loop's time."""
        self._active += 1
        now = self._loop.time()
        if self._handle is None:
            self._due = now + PERIOD
            self._handle = self._loop.call_at(self._due, self._tick)
        return now

    def stop(self) -> None:
        """An operation started with `start` ended."""
        self._active -= 1
        if not self._active:
            self._idle_since = self._loop.time()

    @contextmanager
    def watching(self) -> Iterator[None]:
        """Keep measuring while the block runs (an operation in flight)."""
        self.start()
        try:
            yield
        finally:
            self.stop()

    def _tick(self) -> None:
        now = self._loop.time()
        if now - self._due > MIN_STALL:
            self._stalls.append((self._due, now))
        if not self._active and now - self._idle_since > IDLE_STOP:
            self._handle = None
            return
        self._due = now + PERIOD
        self._handle = self._loop.call_at(self._due, self._tick)

    def stalled(self, since: float, until: float) -> float:
        """Seconds (loop time) between `since` and `until` during which the loop was stalled.

        A stall still going on (the next tick is overdue: the loop is only now getting back to its timers) counts
        from the tick's due time.
        """
        total = 0.0
        if self._handle is not None:
            now = self._loop.time()
            if now - self._due > MIN_STALL:
                total += max(0.0, min(now, until) - max(self._due, since))
        for start, end in reversed(self._stalls):
            if end <= since:
                break
            total += max(0.0, min(end, until) - max(start, since))
        return total

    def now(self) -> float:
        """The loop's clock."""
        return self._loop.time()

    def mostly_stalled(self, started: float) -> bool:
        """Whether the loop was stalled for at least half of the time since `started` (a failure then says more
        about this process than about the server)."""
        now = self._loop.time()
        return self.stalled(started, now) >= (now - started) / 2 > 0

    def excuses(self, started: float, limit: float) -> bool:
        """Whether a timeout of `limit` seconds, for an operation started at `started` and failing now, is the
        client's doing: the loop was responsive for less than `limit` seconds of the operation's life."""
        now = self._loop.time()
        return (now - started) - self.stalled(started, now) < limit


def loop_lag() -> LoopLag:
    """The `LoopLag` of the running event loop (created on first use)."""
    loop = asyncio.get_running_loop()
    lag = _lags.get(loop)
    if lag is None:
        lag = _lags[loop] = LoopLag(loop)
    return lag


class responsive_timeout:
    """`async with responsive_timeout(seconds):` like `asyncio.timeout`, counting only responsive loop time.

    When the deadline comes, the time the loop spent stalled since the block started is added to it, until the
    block has had `seconds` of responsive time; then the block is cancelled and `TimeoutError` raised. A server
    that does not answer still times out after about `seconds` (a responsive loop stalls for no time at all).
    """

    __slots__ = ("_cancelling", "_expired", "_handle", "_lag", "_seconds", "_started", "_task")

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._expired = False
        self._handle: asyncio.TimerHandle | None = None

    async def __aenter__(self) -> responsive_timeout:
        task = asyncio.current_task()
        if task is None:
            raise RuntimeError("responsive_timeout must be used inside a task")
        self._task = task
        self._cancelling = task.cancelling()
        self._lag = lag = loop_lag()
        self._started = lag.start()
        self._handle = lag._loop.call_at(self._started + self._seconds, self._check)
        return self

    def _check(self) -> None:
        loop = self._task.get_loop()
        now = loop.time()
        responsive = (now - self._started) - self._lag.stalled(self._started, now)
        if responsive >= self._seconds - 0.001:
            self._handle = None
            self._expired = True
            self._task.cancel()
        else:
            self._handle = loop.call_at(now + self._seconds - responsive, self._check)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._lag.stop()
        if self._expired and self._task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            raise TimeoutError from exc


async def wait_responsive(awaitable: Awaitable[T], seconds: float | None) -> T:
    """`await awaitable`, bounded by `seconds` of responsive loop time (`None`: no bound)."""
    if seconds is None:
        return await awaitable
    async with responsive_timeout(seconds):
        return await awaitable
