"""Single-flight: of identical concurrent operations in one event loop, the first leads and the others wait for it.

One mechanism serves three places: identical reads of one key share one `GET` (`engine.access`), identical misses
share one model call (`engine.flight`, which adds cross-process locks), and identical run-level calls share one run
of the agent graph (`pyai_caching._run`). What a follower does with the leader's result is the caller's business:
the leader may land with nothing, and followers then do the work themselves.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["Flight", "SingleFlight"]

T = TypeVar("T")


class Flight(Generic[T]):
    """One operation under way: its followers wait for `result`."""

    __slots__ = ("_landed", "result")

    def __init__(self) -> None:
        self._landed = asyncio.Event()
        self.result: T | None = None
        """What the leader landed with (`None`: nothing; a follower then does the work itself)."""

    async def wait(self) -> T | None:
        """Wait until the leader lands; a follower that gives up (cancelled) does not disturb the others."""
        await self._landed.wait()
        return self.result


class SingleFlight(Generic[T]):
    """The flights under way, by key, per event loop (a flight never spans two loops: its event belongs to one)."""

    __slots__ = ("_loops",)

    def __init__(self) -> None:
        self._loops: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[Hashable, Flight[T]]] = (
            weakref.WeakKeyDictionary()
        )

    def _flights(self) -> dict[Hashable, Flight[T]]:
        loop = asyncio.get_running_loop()
        flights = self._loops.get(loop)
        if flights is None:
            flights = self._loops[loop] = {}
        return flights

    def under_way(self, key: Hashable) -> Flight[T] | None:
        """The flight of `key` under way in this event loop, if any."""
        return self._flights().get(key)

    def take_off(self, key: Hashable) -> Flight[T]:
        """Lead `key` (the caller checked that no flight is under way); every `take_off` must be followed by `land`."""
        flight: Flight[T] = Flight()
        self._flights()[key] = flight
        return flight

    def land(self, key: Hashable, flight: Flight[T], result: T | None) -> None:
        """End `flight` with `result` and wake its followers; a later flight of the same key may take off."""
        flights = self._flights()
        if flights.get(key) is flight:
            del flights[key]
        flight.result = result
        flight._landed.set()
