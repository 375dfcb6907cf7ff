"""What the cache learns of a store's failures belongs to that store object: two stores that describe themselves
alike (every `MemoryStore` is "memory"; a password is shown as `***`) do not share an outage or a warning, and what
is kept about failed stores stays bounded."""

from __future__ import annotations

import gc
import logging
import weakref
from collections.abc import Callable

import pytest
from _fault_kit import Echo, answer_to, warnings_with
from _redis_servers import RedisServer

from pyai_caching import RedisStore, cached_agent_run
from pyai_caching.engine import health
from pyai_caching.observability import metrics
from pyai_caching.stores import MemoryStore

pytestmark = pytest.mark.faults

DOWN = "calls go on without the cache"


def skipped() -> int:
    """Operations skipped at once because their store was treated as down."""
    kinds = metrics.snapshot().errors_by_kind
    return sum(count for kind, count in kinds.items() if kind.endswith(":StoreSkipped"))


async def test_a_store_with_a_wrong_password_does_not_take_down_its_namesake(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    server = redis_server_factory(password="right-password")
    good = RedisStore(server.url(), socket_timeout=5.0, connect_timeout=5.0)
    bad = RedisStore(server.url().replace("right-password", "wrong-password"), socket_timeout=5.0)
    assert good.description == bad.description  # the passwords are hidden: the descriptions alike
    echo = Echo()
    metrics.reset()

    for prompt in ("one", "two", "three"):  # refused every time: the bad store is treated as down
        assert await cached_agent_run(echo.agent(), prompt, "t", store=bad, retry=False) == answer_to(prompt)
    assert skipped() > 0
    assert len(warnings_with(caplog, DOWN)) == 1

    for _ in range(2):  # meanwhile, its namesake caches as usual: nothing skipped, the second call is a hit
        assert await cached_agent_run(echo.agent(), "four", "t", store=good) == answer_to("four")
    assert echo.prompts.count("four") == 1
    assert metrics.snapshot().total.hits == 1
    assert warnings_with(caplog, "recovered") == []  # the good store's successes say nothing about the bad one
    await good.close()
    await bad.close()


async def test_each_memory_store_warns_once_of_its_own_entries_too_large(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    first, second = MemoryStore(max_entry_bytes=100), MemoryStore(max_entry_bytes=100)
    assert first.description == second.description == "memory"
    echo = Echo()
    for store in (first, second, first, second):
        assert await cached_agent_run(echo.agent(), "q", "t", store=store) == answer_to("q")
    assert echo.calls == 4  # nothing was stored
    assert len(warnings_with(caplog, "not storing")) == 2  # one per store, not one per description


def test_a_failed_store_that_is_dropped_is_not_kept_alive() -> None:
    # (Through `cached_agent_run` the store stays referenced by the cache of recent configurations, so its failures
    # are noted directly here.)
    store = MemoryStore()
    for _ in range(health.DOWN_AFTER):
        health.report_failure(store, "get", ConnectionError("refused"), 0.0, announce=False, outage=True)
    assert health.is_down(store)
    gone = weakref.ref(store)
    del store
    gc.collect()
    assert gone() is None
    # A new store, even at the address the old one had, starts healthy.
    assert not any(health.is_down(MemoryStore()) for _ in range(100))


async def test_what_is_kept_of_failed_stores_is_bounded(
    unused_tcp_port: int, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(health, "_STORES_KEPT", 3)
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    url = f"redis://127.0.0.1:{unused_tcp_port}/0"  # nothing listens there: refused
    stores = [RedisStore(url) for _ in range(5)]  # all kept alive: the oldest are forgotten all the same
    echo = Echo()

    async def fail_on(store: RedisStore) -> None:
        assert await cached_agent_run(echo.agent(), "q", "t", store=store, retry=False) == answer_to("q")

    for store in stores:
        await fail_on(store)
    assert len(warnings_with(caplog, DOWN)) == 5  # one outage per store
    assert len(health._healths) == 3
    await fail_on(stores[-1])  # still remembered: its outage was announced already
    assert len(warnings_with(caplog, DOWN)) == 5
    await fail_on(stores[0])  # forgotten to make room: it starts afresh, with a warning of its own
    assert len(warnings_with(caplog, DOWN)) == 6
    assert len(health._healths) == 3
    for store in stores:
        await store.close()
