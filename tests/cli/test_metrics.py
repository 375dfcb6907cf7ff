"""`pyai_caching.metrics`: the process-wide counters, updated by real cached calls."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import pytest
from _agents import Counter, make_agent
from _cli_support import PRICES, Person
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from pyai_caching import MemoryStore, RedisStore, cached_agent_run
from pyai_caching.observability import metrics
from pyai_caching.observability.metrics import Counters, Labels

MODEL = "function:test-model"


@pytest.fixture(autouse=True)
def fresh_counters() -> Iterator[None]:
    metrics.reset()
    yield
    metrics.reset()


def dynamic_agent(counter: Counter) -> Agent[Any, Any]:
    """An agent with a system-prompt function: no run-level fast path, every hit is a request-level hit."""
    agent = make_agent(counter, output_type=Person)

    @agent.system_prompt
    def _prompt() -> str:
        return "You extract people."

    return agent


async def test_a_miss_then_a_run_level_hit() -> None:
    store, counter = MemoryStore(), Counter()
    agent = make_agent(counter, output_type=Person)
    for _ in range(2):
        await cached_agent_run(agent, "Ada, 36", "extract", store=store, custom_costs=PRICES)
    assert counter.calls == 1

    snap = metrics.snapshot()
    expected = Counters(
        hits=1,
        run_hits=1,
        misses=1,
        requests=1,
        cost=Decimal("0.0006"),
        cost_saved=Decimal("0.0006"),
    )
    assert snap.total == expected
    assert snap.series == {Labels(namespace="default", task="extract", model=MODEL): expected}
    assert snap.by_task == {"extract": expected}
    assert snap.by_model == {MODEL: expected}
    assert snap.by_namespace == {"default": expected}
    assert snap.total.hit_ratio == 0.5
    assert snap.total.lookups == 2
    assert snap.errors_by_kind == {}


async def test_request_level_hits_per_task_and_namespace() -> None:
    store, counter = MemoryStore(), Counter()
    agent = dynamic_agent(counter)
    for task, namespace in [("a", "default"), ("a", "default"), ("a", "default"), ("b", "tenant")]:
        await cached_agent_run(agent, "Ada, 36", task, store=store, namespace=namespace, custom_costs=PRICES)

    snap = metrics.snapshot()
    assert snap.by_task["a"] == Counters(
        hits=2, misses=1, requests=1, cost=Decimal("0.0006"), cost_saved=Decimal("0.0012")
    )
    assert snap.by_task["b"] == Counters(misses=1, requests=1, cost=Decimal("0.0006"))
    assert snap.by_namespace["tenant"].misses == 1
    assert snap.total.run_hits == 0
    assert json.loads(json.dumps(snap.to_dict()))["total"]["cost_saved"] == "0.0012"


async def test_unknown_prices_are_counted_apart() -> None:
    store, counter = MemoryStore(), Counter()
    agent = make_agent(counter, output_type=Person)
    for _ in range(3):
        await cached_agent_run(agent, "Ada, 36", "unpriced", store=store)

    total = metrics.snapshot().total
    assert (total.requests, total.unpriced_requests, total.cost) == (1, 1, Decimal(0))
    assert (total.hits, total.unpriced_hits, total.cost_saved) == (2, 2, Decimal(0))


async def test_bypass_is_not_counted() -> None:
    counter = Counter()
    await cached_agent_run(make_agent(counter), "hi", "bypassed", store=MemoryStore(), cache_mode="bypass")
    assert counter.calls == 1
    assert metrics.snapshot().total == Counters()


async def test_cache_errors_by_kind(unused_tcp_port: int) -> None:
    dead = RedisStore(f"redis://127.0.0.1:{unused_tcp_port}/0", connect_timeout=0.5)
    counter = Counter()
    output = await cached_agent_run(make_agent(counter, output_type=Person), "Ada", "faulty", store=dead)
    assert output == Person(name="Ada", age=36)  # fail-open: the call still returns the model's answer

    snap = metrics.snapshot()
    assert snap.errors_by_kind.get("get:ConnectionError", 0) >= 1
    assert snap.total.errors == sum(snap.errors_by_kind.values())
    assert snap.by_task["faulty"].errors == snap.total.errors
    assert snap.by_task["faulty"].misses == 1


async def test_unreadable_entries_are_errors_and_misses() -> None:
    store, counter = MemoryStore(), Counter()
    agent = dynamic_agent(counter)
    await cached_agent_run(agent, "Ada", "corrupt", store=store)
    keys = [key async for key in store.scan("pyai_caching:")]
    for key in keys:
        await store.set(key, b'{"format": "pyai_caching", "version": 1, "kind": "response"', ttl=None)
    await cached_agent_run(agent, "Ada", "corrupt", store=store)

    assert counter.calls == 2
    snap = metrics.snapshot()
    assert snap.errors_by_kind == {"decode:EntryDecodeError": 1}
    assert (snap.total.misses, snap.total.hits, snap.total.errors) == (2, 0, 1)


async def test_stampede_waits_become_hits() -> None:
    calls = 0

    async def slow(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.3)
        args = {"name": "Ada", "age": 36}
        return ModelResponse(
            parts=[ToolCallPart(info.output_tools[0].name, args)],
            usage=RequestUsage(input_tokens=100, output_tokens=20),
        )

    agent = Agent(FunctionModel(slow, model_name="test-model"), output_type=Person)
    store = MemoryStore()
    outputs = await asyncio.gather(
        *(cached_agent_run(agent, "Ada", "herd", store=store, custom_costs=PRICES) for _ in range(5))
    )

    assert calls == 1
    assert all(o == Person(name="Ada", age=36) for o in outputs)
    herd = metrics.snapshot().by_task["herd"]
    assert (herd.misses, herd.hits, herd.stampede_waits) == (1, 4, 4)
    assert herd.cost_saved == Decimal("0.0024")
    assert herd.stampede_wait_seconds > 0


def test_updates_from_many_threads_are_all_counted() -> None:
    def work(n: int) -> None:
        for _ in range(2_000):
            metrics.REGISTRY.add_lookup("default", f"t{n % 2}", "m", hit=True, cost_saved=Decimal("0.001"))
            metrics.REGISTRY.add_request("default", f"t{n % 2}", "m", Decimal("0.002"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    total = metrics.snapshot().total
    assert (total.hits, total.requests) == (16_000, 16_000)
    assert (total.cost_saved, total.cost) == (Decimal("16.000"), Decimal("32.000"))


def test_snapshots_are_copies_and_reset_clears() -> None:
    metrics.REGISTRY.add_lookup("default", "t", "m", hit=False)
    before = metrics.snapshot()
    metrics.REGISTRY.add_lookup("default", "t", "m", hit=False)
    assert before.total.misses == 1
    assert metrics.snapshot().total.misses == 2
    with pytest.raises(TypeError):
        before.series[Labels(namespace="x", task=None, model=None)] = Counters()  # type: ignore[index]
    metrics.reset()
    assert metrics.snapshot().total == Counters()
    assert metrics.snapshot().total.hit_ratio is None


async def test_label_sets_beyond_the_cap_are_counted_together(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(metrics.REGISTRY, "max_series", 2)
    monkeypatch.setattr(metrics.REGISTRY, "_warned", False)
    store, counter = MemoryStore(), Counter()
    agent = make_agent(counter, output_type=Person)
    with caplog.at_level("WARNING", logger="pyai_caching"):
        for task in ["a", "b", "c", "d", "a", "d"]:  # one prompt per task: a hit is a hit of the same task
            await cached_agent_run(agent, f"Ada, 36 ({task})", task, store=store, custom_costs=PRICES)

    snap = metrics.snapshot()
    one_miss = Counters(misses=1, requests=1, cost=Decimal("0.0006"))
    miss_then_hit = Counters(
        hits=1, run_hits=1, misses=1, requests=1, cost=Decimal("0.0006"), cost_saved=Decimal("0.0006")
    )
    other = metrics.OTHER_LABEL
    assert snap.series == {
        Labels(namespace="default", task="a", model=MODEL): miss_then_hit,
        Labels(namespace="default", task="b", model=MODEL): one_miss,
        Labels(namespace=other, task=other, model=other): one_miss + miss_then_hit,  # c, then d twice
    }
    assert snap.total == miss_then_hit + one_miss + one_miss + miss_then_hit  # the totals stay exact
    warnings = [r.getMessage() for r in caplog.records if "label sets" in r.getMessage()]
    assert warnings == [
        "metrics: more than 2 label sets (namespace, task, model) in this process; the further ones are counted "
        "together under '(other)' (totals stay exact)"
    ]


def test_the_cap_is_documented_and_generous() -> None:
    assert metrics.MAX_SERIES == metrics.REGISTRY.max_series == 1000
    assert "MAX_SERIES" in (metrics.__doc__ or "")
