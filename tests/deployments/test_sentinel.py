"""Sentinel: the store finds the master through the sentinels, and follows a failover without a restart."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import pytest
from _agents import Counter, make_agent
from _deployments import ACL_PASSWORD, ACL_PASSWORD_IN_URL, ACL_USER, MINIMAL_ACL
from _redis_topologies import SentinelGroup, wait_until
from _scenario import exercise_everything

from pyai_caching import CacheError, RedisStore, cached_agent_run

pytestmark = pytest.mark.deployments


def namespace() -> str:
    return f"sentinel-{uuid.uuid4().hex[:12]}"


async def test_hits_and_misses_through_the_sentinels(sentinel_group: SentinelGroup) -> None:
    counter = Counter(payload="from the master")
    agent = make_agent(counter)
    ns = namespace()
    url = sentinel_group.url(db=2)
    assert RedisStore(url).description == url
    options: dict[str, Any] = {"redis_url": url, "namespace": ns, "on_cache_error": "raise"}
    assert await cached_agent_run(agent, "hello", "sentinel", **options) == "from the master"
    assert await cached_agent_run(agent, "hello", "sentinel", **options) == "from the master"
    assert counter.calls == 1
    master = sentinel_group.server_on(sentinel_group.master_port())
    with master.client(db=2) as client:
        assert client.keys(f"pyai_caching:{ns}:*")


async def test_an_acl_user_of_the_master_through_the_sentinels(sentinel_group: SentinelGroup) -> None:
    # ACL users are not replicated: define the user on every data node, as an operator would.
    for server in sentinel_group.servers:
        with server.client() as admin:
            admin.execute_command("ACL", "SETUSER", ACL_USER, "reset", "on", f">{ACL_PASSWORD}", *MINIMAL_ACL)
    nodes = sentinel_group.url().removeprefix("redis+sentinel://")
    await exercise_everything(f"redis+sentinel://{ACL_USER}:{ACL_PASSWORD_IN_URL}@{nodes}")


async def test_an_unknown_service_name_is_a_clear_error(sentinel_group: SentinelGroup) -> None:
    url = sentinel_group.url().replace("/mymaster/", "/nosuchmaster/")
    counter = Counter(payload="model answer")
    with pytest.raises(CacheError, match="No master found for 'nosuchmaster'"):
        await cached_agent_run(make_agent(counter), "hi", "sentinel", redis_url=url, on_cache_error="raise")
    assert counter.calls == 0


async def test_a_failover_during_a_stream_of_calls(
    failover_group: SentinelGroup, caplog: pytest.LogCaptureFixture
) -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    ns = namespace()
    store = RedisStore(failover_group.url())  # one store for the whole test: no restart, no reconfiguration

    async def call(prompt: str) -> None:
        assert await cached_agent_run(agent, prompt, "sentinel", store=store, namespace=ns) == "answer"

    await call("before the failover")
    old_master = failover_group.server_on(failover_group.master_port())
    (replica,) = [server for server in failover_group.servers if server is not old_master]
    with replica.client() as client:
        wait_until(lambda: client.keys(f"pyai_caching:{ns}:*"), 5.0, "the replica to copy the entry")

    caplog.set_level(logging.WARNING, logger="pyai_caching")
    failover_group.kill_master()
    killed_at = time.monotonic()

    # A stream of calls while the sentinels notice and promote the replica. Every call returns the model's
    # answer (the cache fails open); each new prompt is asked twice, and the stream stops at the first repeat
    # answered from the cache: caching has resumed.
    misses_during_failover = 0
    resumed_after: float | None = None
    for i in range(2000):
        calls = counter.calls
        await call(f"during the failover {i}")
        await call(f"during the failover {i}")
        if counter.calls == calls + 1:
            resumed_after = time.monotonic() - killed_at
            break
        misses_during_failover += 1
        assert time.monotonic() - killed_at < 30.0, f"caching did not resume:\n{failover_group.logs()}"
        await asyncio.sleep(0.02)
    assert resumed_after is not None
    assert misses_during_failover > 0  # the stream did run through the outage

    # The replica was promoted... (sentinels learn the new master from each other, so poll until the one asked
    # knows: the client above may already have been told by another sentinel)
    await asyncio.to_thread(
        wait_until, lambda: failover_group.master_port() == replica.port, 10.0, "every sentinel to name the new master"
    )
    with replica.client() as client:  # ...and the entries written since live on it
        assert len(client.keys(f"pyai_caching:{ns}:*")) >= 2
    calls = counter.calls
    await call("before the failover")  # written to the old master, replicated, still a hit
    assert counter.calls == calls

    messages = [record.getMessage() for record in caplog.records]
    assert any("calls go on without the cache" in message for message in messages)
    assert any("recovered; caching resumed" in message for message in messages)
    print(f"caching resumed {resumed_after:.1f} s after the master was killed ({misses_during_failover} rounds)")
    await store.close()
