"""The cache is never a new point of failure: faults injected for real into throwaway redis-server processes.

Each test counts the calls made, the calls that returned the right answer and the exceptions callers saw (0 in
the default fail-open mode), and checks that caching resumes by itself once the fault is gone.
"""

from __future__ import annotations

import asyncio
import logging
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import redis
from _fault_kit import Echo, StoreWaits, answer_to, entry_keys, eventually, warnings_with
from _redis_servers import RedisServer

from pyai_caching import CacheError, RedisStore, cached_agent_run
from pyai_caching.observability import metrics

pytestmark = pytest.mark.faults


@dataclass
class Load:
    """Calls made by a load, and what came back."""

    calls: int = 0
    right: int = 0
    errors: list[BaseException] = field(default_factory=list)
    durations: list[float] = field(default_factory=list)


async def run_load(
    agent: object, url: str, load: Load, stop: asyncio.Event, *, workers: int = 4, prompts: int = 12, **options: object
) -> None:
    """`workers` tasks calling `cached_agent_run` in a loop over `prompts` distinct prompts until `stop` is set."""

    async def worker(n: int) -> None:
        i = 0
        while not stop.is_set():
            prompt = f"question {(n * 5 + i) % prompts}"
            i += 1
            load.calls += 1
            started = time.monotonic()
            try:
                answer = await cached_agent_run(agent, prompt, "load", redis_url=url, retry=False, **options)  # type: ignore[arg-type]
            except Exception as error:
                load.errors.append(error)
                continue
            load.durations.append(time.monotonic() - started)
            if answer == answer_to(prompt):
                load.right += 1

    await asyncio.gather(*(worker(n) for n in range(workers)))


async def test_redis_stopped_and_restarted_during_a_load_of_calls(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    server = redis_server_factory()
    url = server.url()
    client = server.client()
    echo = Echo(sleep=0.002)
    errors_before = metrics.snapshot().total.errors
    load, stop = Load(), asyncio.Event()
    # The server is stopped, not hung: connections are refused at once. The cache timeout only bounds the odd
    # operation caught by the restart; it is generous so that an operation slowed by a starved CPU is not taken for
    # a second outage.
    task = asyncio.create_task(run_load(echo.agent(), url, load, stop, cache_timeout=2.0))

    await eventually(lambda: load.calls >= 40, what="40 calls before the outage")
    assert entry_keys(client)  # caching works before the outage
    await asyncio.to_thread(server.stop)
    at_stop = load.calls
    await eventually(lambda: load.calls >= at_stop + 40, what="40 calls during the outage")
    await asyncio.to_thread(server.start)  # same port, empty data
    # Calls that were under way when the server came back still fail, and each failure holds operations off for
    # a second more: how many calls that takes depends on the machine, so wait for the recovery itself.
    await eventually(lambda: bool(warnings_with(caplog, "recovered")), what="the recovery to be reported")
    at_recovery = load.calls
    await eventually(lambda: bool(entry_keys(client)), what="entries written after the restart")
    await eventually(lambda: load.calls >= at_recovery + 40, what="40 calls after the recovery")
    stop.set()
    await task

    written_after_recovery = len(entry_keys(client))
    print(
        f"\ncalls {load.calls}, right answers {load.right}, exceptions {len(load.errors)}, "
        f"entries written after recovery {written_after_recovery}, model calls {echo.calls}"
    )
    assert load.errors == []
    assert load.right == load.calls
    assert written_after_recovery > 0
    assert metrics.snapshot().total.errors > errors_before  # the failures were counted
    assert len(warnings_with(caplog, "calls go on without the cache")) == 1  # once per outage, not per call
    assert len(warnings_with(caplog, "recovered")) == 1
    client.close()


async def test_a_paused_redis_adds_at_most_about_the_cache_timeout(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    server = redis_server_factory()
    # The store's own socket timeout is 30 s: only `cache_timeout` can keep a call short, and the time bounds below
    # sit an order of magnitude away from both the 0.2 s it costs and the 30 s it prevents.
    store = RedisStore(server.url(), socket_timeout=30.0)
    echo = Echo(sleep=0.05)
    agent = echo.agent()
    timeout = 0.2
    assert await cached_agent_run(agent, "warm", "t", store=store, cache_timeout=timeout) == answer_to("warm")

    waits = StoreWaits()
    server.pause()  # SIGSTOP: the port accepts connections, nothing answers
    try:
        durations, waited = [], []
        for i in range(6):  # one after another: each call would pay every timeout of its own
            started = time.monotonic()
            answer = await cached_agent_run(agent, f"paused {i}", "t", store=store, cache_timeout=timeout)
            durations.append(time.monotonic() - started)
            waited.append(waits.since_last())
            assert answer == answer_to(f"paused {i}")
        started = time.monotonic()
        answers = await asyncio.gather(
            *(cached_agent_run(agent, f"burst {i}", "t", store=store, cache_timeout=timeout) for i in range(10))
        )
        burst = time.monotonic() - started
        waited_in_burst = waits.since_last()
    finally:
        server.resume()
    assert answers == [answer_to(f"burst {i}") for i in range(10)]
    added = [d - echo.sleep for d in durations]
    shown = ", ".join(f"{a * 1000:.0f}" for a in added)
    print(f"\ntime a paused Redis added to each call: {shown} ms; a burst of 10 calls took {burst:.2f} s")
    # The first call meets the hung server and pays two timeouts (two failures in a row make the store skipped);
    # the calls after it skip the store (one probes it again once a second has passed, which a slow machine may
    # reach: at most one wait per call, or per burst, after the first).
    assert 1 <= waited[0] <= 2
    assert all(w <= 2 for w in waited), waited
    assert waited_in_burst <= 2
    assert max(added) < 3.0
    assert burst < 3.0
    assert len(warnings_with(caplog, "calls go on without the cache")) == 1

    # Resumed: caching comes back by itself (after at most the one-second pause between probes).
    client = server.client()
    before = len(entry_keys(client))

    async def cached_again() -> bool:
        await cached_agent_run(agent, f"after {time.monotonic()}", "t", store=store, cache_timeout=timeout)
        return len(entry_keys(client)) > before

    await eventually(cached_again, within=10, what="caching to resume")
    client.close()
    await store.close()


async def test_default_timeouts_bound_a_hung_redis_too(redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory()
    url = server.url()
    echo = Echo()
    agent = echo.agent()
    await cached_agent_run(agent, "warm", "t", redis_url=url)
    waits = StoreWaits()
    server.pause()
    try:
        started = time.monotonic()
        assert await cached_agent_run(agent, "hung", "t", redis_url=url) == answer_to("hung")
        elapsed = time.monotonic() - started
    finally:
        server.resume()
    # RedisStore's socket timeout (0.5 s), paid at most twice: two failures in a row make the store down, not one.
    assert 1 <= waits.since_last() <= 2
    assert elapsed < 5.0  # without a socket timeout, redis-py would wait for the hung server forever


async def test_maxmemory_with_noeviction_fails_writes_open_and_reads_keep_working(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    server = redis_server_factory("--maxmemory-policy", "noeviction")
    url = server.url()
    client = server.client()
    echo = Echo()
    agent = echo.agent()
    assert await cached_agent_run(agent, "stored before", "t", redis_url=url) == answer_to("stored before")
    stored = set(entry_keys(client))

    # Another application fills the memory up to `maxmemory`: with `noeviction`, every write is refused.
    for i in range(30):
        client.set(f"another-app:filler:{i}", b"x" * 100_000)
    client.config_set("maxmemory", client.info("memory")["used_memory"] // 2)
    with pytest.raises(redis.exceptions.OutOfMemoryError):
        client.set("another-app:probe", b"x")
    calls_before = echo.calls
    answers = [await cached_agent_run(agent, f"full {i}", "t", redis_url=url) for i in range(5)]
    assert answers == [answer_to(f"full {i}") for i in range(5)]
    assert echo.calls == calls_before + 5
    assert set(entry_keys(client)) == stored  # nothing could be written
    assert await cached_agent_run(agent, "stored before", "t", redis_url=url) == answer_to("stored before")
    assert echo.calls == calls_before + 5  # reads keep working: that one was a hit
    assert len(warnings_with(caplog, "calls go on without the cache")) == 1
    assert warnings_with(caplog, "recovered") == []  # a read that works does not end an outage of writes

    client.delete(*client.keys("another-app:filler:*"))
    assert await cached_agent_run(agent, "after freeing", "t", redis_url=url) == answer_to("after freeing")
    assert len(entry_keys(client)) > len(stored)
    assert len(warnings_with(caplog, "recovered")) == 1
    client.close()


async def test_a_read_only_replica_fails_writes_open(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    primary = redis_server_factory()
    replica = redis_server_factory("--replicaof", "127.0.0.1", str(primary.port))
    replica_client = replica.client()
    await eventually(
        lambda: replica_client.info("replication").get("master_link_status") == "up",
        what="the replica to sync",
    )
    echo = Echo()
    agent = echo.agent()
    assert await cached_agent_run(agent, "from the primary", "t", redis_url=primary.url()) == answer_to(
        "from the primary"
    )
    await eventually(lambda: bool(entry_keys(replica_client)), what="the entry to reach the replica")

    calls = echo.calls
    answers = await asyncio.gather(
        *(cached_agent_run(agent, f"new {i}", "t", redis_url=replica.url()) for i in range(5))
    )
    answers += [await cached_agent_run(agent, f"new {i}", "t", redis_url=replica.url()) for i in range(5, 8)]
    assert answers == [answer_to(f"new {i}") for i in range(8)]
    assert echo.calls == calls + 8  # nothing could be stored on the replica
    assert await cached_agent_run(agent, "from the primary", "t", redis_url=replica.url()) == answer_to(
        "from the primary"
    )
    assert echo.calls == calls + 8  # but what the primary stored is served from the replica
    readonly = warnings_with(caplog, "calls go on without the cache")
    assert len(readonly) == 1
    assert "READONLY" in readonly[0] or "ReadOnly" in readonly[0]
    assert warnings_with(caplog, "recovered") == []
    replica_client.close()


async def test_on_cache_error_raise_gives_a_cache_error_without_the_password(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pyai_caching")
    password = "pw-Sup3r/S3cret@x"
    server = redis_server_factory(password=password)
    url = server.url()
    assert "Sup3r" in url  # percent-encoded, but there
    echo = Echo()
    agent = echo.agent()
    assert await cached_agent_run(agent, "up", "t", redis_url=url, on_cache_error="raise") == answer_to("up")
    await asyncio.to_thread(server.stop)
    with pytest.raises(CacheError) as raised:
        await cached_agent_run(agent, "down", "t", redis_url=url, on_cache_error="raise")
    assert raised.value.operation == "get"
    assert echo.calls == 1  # raised before the model was called
    text = "".join(traceback.format_exception(raised.value)) + repr(raised.value) + str(raised.value.store)
    for shown in (text, caplog.text):
        assert "Sup3r" not in shown
        assert "S3cret" not in shown

    # Fail-open is the default: the same outage costs nothing but the cache.
    assert await cached_agent_run(agent, "down", "t", redis_url=url) == answer_to("down")
    assert "Sup3r" not in caplog.text


async def test_an_outage_warns_once_per_outage(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    server = redis_server_factory()
    url = server.url()
    agent = Echo().agent()
    for outage in range(2):
        await asyncio.to_thread(server.stop)
        for i in range(15):
            assert await cached_agent_run(agent, f"{outage}-{i}", "t", redis_url=url) == answer_to(f"{outage}-{i}")
        await asyncio.to_thread(server.start)

        async def recovered(outage: int = outage) -> bool:
            await cached_agent_run(agent, f"{outage}-after-{time.monotonic()}", "t", redis_url=url)
            return len(warnings_with(caplog, "recovered")) == outage + 1

        await eventually(recovered, what="the recovery")
    assert len(warnings_with(caplog, "calls go on without the cache")) == 2


async def test_a_restarted_redis_is_used_again_without_an_error(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """A restart breaks every pooled connection; the first operations after it reconnect instead of failing."""
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    server = redis_server_factory()
    url = server.url()
    echo = Echo(sleep=0.01)
    agent = echo.agent()
    await asyncio.gather(*(cached_agent_run(agent, f"before {i}", "t", redis_url=url) for i in range(8)))
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)
    answers = await asyncio.gather(*(cached_agent_run(agent, f"after {i}", "t", redis_url=url) for i in range(8)))
    assert answers == [answer_to(f"after {i}") for i in range(8)]
    assert warnings_with(caplog, "failed on") == []
    client = server.client()
    assert len(entry_keys(client)) == 16  # request and run entries of the 8 calls after the restart
    client.close()


async def test_on_cache_error_raise_reports_each_failure_once_by_the_exception(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """With `raise`, the `CacheError` is the report: nothing is logged as a warning for the same failure."""
    caplog.set_level(logging.DEBUG, logger="pyai_caching")
    server = redis_server_factory()
    url = server.url()
    echo = Echo()
    agent = echo.agent()
    assert await cached_agent_run(agent, "up", "t", redis_url=url, on_cache_error="raise") == answer_to("up")
    await asyncio.to_thread(server.stop)
    for i in range(3):
        with pytest.raises(CacheError):
            await cached_agent_run(agent, f"down {i}", "t", redis_url=url, on_cache_error="raise")
    ours = [r for r in caplog.records if r.name.startswith("pyai_caching")]  # not other libraries' leftovers
    assert [r.getMessage() for r in ours if r.levelno >= logging.WARNING] == []

    # A fail-open call of the same outage still warns (once): nobody was told otherwise.
    for i in range(3):
        assert await cached_agent_run(agent, f"open {i}", "t", redis_url=url) == answer_to(f"open {i}")
    assert len(warnings_with(caplog, "calls go on without the cache")) == 1
