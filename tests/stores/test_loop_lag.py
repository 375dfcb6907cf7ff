"""Event-loop lag: a stall of this process does not use up a timeout; a silent peer still times out."""

from __future__ import annotations

import asyncio
import time

import pytest

from pyai_caching.stores.lag import loop_lag, responsive_timeout


def block(seconds: float) -> None:
    """CPU work that holds the event loop."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def reply_during_a_stall(bound: asyncio.Timeout | responsive_timeout) -> str:
    """Wait for a reply that arrives after 20 ms, while another task holds the loop for 0.6 s."""
    loop = asyncio.get_running_loop()
    reply: asyncio.Future[str] = loop.create_future()
    loop.call_later(0.02, reply.set_result, "reply")
    loop.call_later(0.005, block, 0.6)
    async with bound:
        return await reply


async def test_a_wall_clock_timeout_fires_although_the_reply_arrived() -> None:
    """The problem: asyncio's timeout counts the stall, and fires once the loop comes back."""
    with pytest.raises(TimeoutError):
        await reply_during_a_stall(asyncio.timeout(0.3))


async def test_a_responsive_timeout_does_not_count_the_stall() -> None:
    assert await reply_during_a_stall(responsive_timeout(0.3)) == "reply"


async def test_a_responsive_timeout_still_fires_when_nothing_answers() -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with responsive_timeout(0.2):
            await asyncio.sleep(5)
    assert 0.19 < time.monotonic() - started < 0.6


async def test_a_responsive_timeout_waits_out_stalls_then_fires() -> None:
    loop = asyncio.get_running_loop()
    loop.call_later(0.05, block, 0.4)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        async with responsive_timeout(0.2):
            await asyncio.sleep(5)
    elapsed = time.monotonic() - started
    assert 0.55 < elapsed < 1.2  # 0.2 s of responsive time, plus the 0.4 s stall


async def test_an_outer_cancellation_is_not_turned_into_a_timeout() -> None:
    async def waits() -> None:
        async with responsive_timeout(5):
            await asyncio.sleep(5)

    task = asyncio.create_task(waits())
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_stalls_are_measured_while_watching() -> None:
    lag = loop_lag()
    with lag.watching():
        await asyncio.sleep(0.03)
        started = lag.now()
        block(0.3)
        await asyncio.sleep(0.03)
        assert 0.25 < lag.stalled(started, lag.now()) < 0.4
        assert lag.mostly_stalled(started)
        assert lag.excuses(started, limit=0.2)
        quiet = lag.now()
        await asyncio.sleep(0.2)
        assert lag.stalled(quiet, lag.now()) < 0.05
        assert not lag.excuses(quiet, limit=0.1)
