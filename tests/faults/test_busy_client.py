"""A busy process is not a slow server, and one timeout does not make a waiting call pay for the model.

The load version of this (several processes, hundreds of calls) is `tests/load/test_storm.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import pytest
from _fault_kit import Echo, answer_to, eventually, warnings_with
from _redis_servers import RedisServer
from pydantic_ai import Agent
from pydantic_ai.models.function import FunctionModel

from pyai_caching import ResponseCache, cached_agent_run
from pyai_caching.observability import metrics
from pyai_caching.stores import RedisStore

pytestmark = pytest.mark.faults


def burn(seconds: float) -> None:
    """CPU work that holds the event loop."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def test_a_busy_event_loop_is_not_a_slow_server(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """120 calls start at once, each after 10 ms of CPU work: the loop reads the replies 1.2 s after they arrive,
    more than twice the socket timeout. They are all hits, on connections opened in the middle of it."""
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    server = redis_server_factory()
    echo = Echo()
    agent = echo.agent()
    prompts = [f"question {i}" for i in range(20)]
    for prompt in prompts:
        await cached_agent_run(agent, prompt, "t", redis_url=server.url())
    calls, errors = echo.calls, metrics.snapshot().total.errors
    store = RedisStore(server.url())  # no connection yet: they are opened under load

    async def one(i: int) -> str:
        burn(0.01)
        return await cached_agent_run(agent, prompts[i % 20], "t", store=store)

    started = time.monotonic()
    answers = await asyncio.gather(*(one(i) for i in range(120)))
    print(f"\n120 busy calls took {time.monotonic() - started:.2f} s")
    assert answers == [answer_to(prompts[i % 20]) for i in range(120)]
    assert echo.calls == calls  # all hits
    assert metrics.snapshot().total.errors == errors
    assert warnings_with(caplog, "failed on") == []
    await store.close()


async def test_a_waiter_whose_poll_times_out_keeps_waiting(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """Redis stops answering for 0.7 s while a call waits for another process's entry: one of its polls times out.
    It keeps waiting and gets the entry; it does not call the model."""
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    server = redis_server_factory()
    echo = Echo(sleep=2.0)
    # Two stores on one server stand for two processes: they share the Redis lock, not an in-process flight.
    model = FunctionModel(echo, model_name="echo")
    holder = Agent(model, capabilities=[ResponseCache(store=RedisStore(server.url()), retry=None)])
    waiter = Agent(model, capabilities=[ResponseCache(store=RedisStore(server.url()), retry=None)])
    client = server.client()

    holding = asyncio.create_task(holder.run("the question"))
    await eventually(lambda: bool(client.keys("pyai_caching:*:lock")), what="the holder to take the lock")
    waiting = asyncio.create_task(waiter.run("the question"))
    await asyncio.sleep(0.1)  # the waiter polls
    server.pause()
    try:
        await asyncio.sleep(0.7)  # its next poll hangs and times out (0.5 s); the one after hangs until...
    finally:
        server.resume()  # ...now, and gets its answer
    results = await asyncio.gather(holding, waiting)

    assert [r.output for r in results] == [answer_to("the question")] * 2
    assert echo.calls == 1
    assert warnings_with(caplog, "TimeoutError")  # the fault happened: a poll timed out (and was reported)
    client.close()
