"""The Redis fill lock through the public API, under retries and faults.

Two `RedisStore` objects on one server stand for two processes: each store is a holder of its own (the
single-flight of one process is per store object), so the second call meets the first one's lock in Redis exactly
as another process would. The model is gated: each call waits until the test lets it go on (and answer, or raise
its scripted error), so every step happens in a known order and nothing depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import tenacity
from _redis_servers import RedisServer
from pydantic_ai import Agent
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import RateLimitError, RedisStore, ResponseCache, RetryPolicy
from pyai_caching.observability import metrics
from pyai_caching.retry import is_retryable

LOCKS = "pyai_caching:*:lock"


def rate_limit(retry_after: float) -> ModelHTTPError:
    error = ModelHTTPError(status_code=429, model_name="gated", body={"error": "rate limited"})
    error.retry_after = retry_after
    return error


@dataclass
class GatedModel:
    """Each call waits for its own gate, then raises the next scripted error, or answers once they are used up."""

    errors: list[BaseException] = field(default_factory=list)
    gates: list[asyncio.Event] = field(default_factory=list)
    """One per call, in order: its length is the number of calls; set one to let that call go on."""

    async def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        gate = asyncio.Event()
        self.gates.append(gate)
        await gate.wait()
        if self.errors:
            raise self.errors.pop(0)
        return ModelResponse(parts=[TextPart("done")])

    async def let_go(self, call: int) -> None:
        """Wait until call number `call` (from 1) is made, then let it go on."""
        await until(lambda: len(self.gates) >= call, f"model call {call} is made")
        self.gates[call - 1].set()

    def agent(self) -> Agent[None, str]:
        return Agent(FunctionModel(self, model_name="gated"))


@dataclass
class Holder:
    """One caller with a store (a connection pool named `name`) of its own."""

    name: str
    store: RedisStore
    cache: ResponseCache

    @classmethod
    def on(cls, url: str, name: str, *, lock_ttl: float, retry: RetryPolicy | None = None, **store: Any) -> Holder:
        task = f"{name}-{uuid.uuid4().hex[:8]}"  # metrics are per process: a task name of its own to read them
        redis_store = RedisStore(url, client_name=task, **store)
        cache = ResponseCache(store=redis_store, task_name=task, lock_ttl=lock_ttl, retry=retry)
        return cls(name=task, store=redis_store, cache=cache)

    def run(self, model: GatedModel) -> asyncio.Task[Any]:
        return asyncio.create_task(model.agent().run("the question", capabilities=[self.cache]))

    def waits_on_the_lock(self, client: redis.Redis) -> bool:
        """Its connection's last command was a lock script: it found the lock taken and is polling."""
        return any(c["name"] == self.name and c["cmd"] == "evalsha" for c in client.client_list())

    def counters(self) -> metrics.Counters:
        return metrics.snapshot().by_task[self.name]


async def until(condition: Callable[[], bool], what: str, *, within: float = 20.0) -> None:
    """Poll `condition` until it holds; fail after `within` seconds (a bound for a hung test, not a figure)."""
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"still not true after {within} s: {what}"
        await asyncio.sleep(0.005)


def debug_logs(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.name == "pyai_caching")


# --- retries while holding the lock -------------------------------------------------------------------------


async def test_a_holder_retrying_rate_limits_keeps_the_lock_and_the_waiter_gets_its_answer(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # Two 429s asking for 0.4 s each: the holder spends 0.8 s retrying, longer than the lock's 0.3 s lifetime.
    # Without renewal during those waits, the waiter would take the lock and call the model itself.
    model = GatedModel(errors=[rate_limit(0.4), rate_limit(0.4)])
    holder = Holder.on(redis_url, "holder", lock_ttl=0.3, retry=RetryPolicy(initial_wait=0.01, max_wait=10))
    waiter = Holder.on(redis_url, "waiter", lock_ttl=0.3)
    first = holder.run(model)
    await until(lambda: len(model.gates) == 1, "the holder called the model")
    second = waiter.run(model)
    await until(lambda: waiter.waits_on_the_lock(redis_client), "the waiter found the lock taken")

    for call in (1, 2, 3):  # two rate-limited attempts, then the answer
        await model.let_go(call)
    assert (await asyncio.wait_for(first, 30)).output == "done"
    assert (await asyncio.wait_for(second, 30)).output == "done"
    assert len(model.gates) == 3, "the waiter never called the model"
    assert (holder.counters().misses, holder.counters().hits) == (1, 0)
    served = waiter.counters()
    assert (served.stampede_waits, served.hits, served.misses) == (1, 1, 0)
    assert redis_client.keys(LOCKS) == []
    await holder.store.close()
    await waiter.store.close()


async def test_a_holder_that_runs_out_of_retries_releases_the_lock_at_once(
    redis_url: str, redis_client: redis.Redis
) -> None:
    # The lock would live 60 s: the waiter can only go on before that because the failing holder released it.
    model = GatedModel(errors=[rate_limit(0), rate_limit(0)])
    two_attempts = tenacity.AsyncRetrying(
        retry=tenacity.retry_if_exception(is_retryable), stop=tenacity.stop_after_attempt(2)
    )
    holder = Holder.on(redis_url, "holder", lock_ttl=60, retry=RetryPolicy(retrying=two_attempts))
    waiter = Holder.on(redis_url, "waiter", lock_ttl=60)
    first = holder.run(model)
    await until(lambda: len(model.gates) == 1, "the holder called the model")
    second = waiter.run(model)
    await until(lambda: waiter.waits_on_the_lock(redis_client), "the waiter found the lock taken")

    await model.let_go(1)
    await model.let_go(2)
    with pytest.raises(RateLimitError) as caught:
        await asyncio.wait_for(first, 30)
    assert caught.value.attempts == 2
    await model.let_go(3)  # the waiter's own call: it took over the released lock
    assert (await asyncio.wait_for(second, 30)).output == "done"
    assert len(model.gates) == 3
    assert redis_client.keys(LOCKS) == []
    await holder.store.close()
    await waiter.store.close()


# --- renewal failures ---------------------------------------------------------------------------------------


async def test_a_holder_whose_lock_was_deleted_stops_renewing_and_never_touches_the_next_holders_lock(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pyai_caching")
    model = GatedModel()
    first_holder = Holder.on(redis_url, "first", lock_ttl=0.3)
    second_holder = Holder.on(redis_url, "second", lock_ttl=0.3)
    first = first_holder.run(model)
    await until(lambda: len(model.gates) == 1, "the first holder called the model")
    [lock] = redis_client.keys(LOCKS)
    redis_client.delete(lock)  # an operator's FLUSHDB, an eviction: the lock is gone while the model runs
    await until(lambda: "lost lock" in debug_logs(caplog), "the first holder's renewal found its lock gone")

    # Nothing holds the lock now: the next caller takes it and calls the model too (documented: the model may be
    # called twice, never a wrong answer served).
    second = second_holder.run(model)
    await until(lambda: len(model.gates) == 2, "the second holder called the model")
    second_token = redis_client.get(lock)
    assert second_token is not None

    model.gates[0].set()
    assert (await first).output == "done"
    assert redis_client.get(lock) == second_token, "the first holder's release left the second holder's lock alone"
    ttl_before = redis_client.pttl(lock)
    await until(lambda: redis_client.pttl(lock) > ttl_before, "the second holder renews its own lock")
    model.gates[1].set()
    assert (await second).output == "done"
    assert redis_client.keys(LOCKS) == []
    assert len(model.gates) == 2
    await first_holder.store.close()
    await second_holder.store.close()


async def test_a_renewal_that_fails_while_the_server_hangs_is_retried_and_the_lock_kept(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="pyai_caching")
    server = redis_server_factory()
    # Renewals every second (a third of the lifetime) that give up after 0.1 s: a renewal attempted while the server
    # is stopped fails well before the lock (renewed at most a second before the pause) could expire, 2 s later.
    lock_ttl = 3.0
    model = GatedModel()
    holder = Holder.on(server.url(), "holder", lock_ttl=lock_ttl, socket_timeout=0.1)
    waiter = Holder.on(server.url(), "waiter", lock_ttl=lock_ttl)
    first = holder.run(model)
    await until(lambda: len(model.gates) == 1, "the holder called the model")
    with server.client() as client:
        [lock] = client.keys(LOCKS)
        token = client.get(lock)

        server.pause()  # SIGSTOP: the connection hangs, the renewal times out
        try:
            await until(lambda: "could not renew lock" in debug_logs(caplog), "a renewal failed", within=10)
        finally:
            server.resume()
        left = client.pttl(lock)
        await until(lambda: client.pttl(lock) > left, "a renewal after the failure extended the lock")
        assert client.get(lock) == token, "the holder kept its lock through the failed renewal"

        second = waiter.run(model)
        await until(lambda: waiter.waits_on_the_lock(client), "the waiter found the lock taken")
        model.gates[0].set()
        assert (await first).output == (await second).output == "done"
        assert len(model.gates) == 1
        assert client.keys(LOCKS) == []
    await holder.store.close()
    await waiter.store.close()
