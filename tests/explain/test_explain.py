"""Why did this miss? Misses recorded by real agents in real stores, and the report that explains them."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
from _agents import Counter
from pydantic_ai import Agent, Tool
from pydantic_ai.models.function import FunctionModel

from pyai_caching import (
    ConfigurationError,
    LocalStore,
    MemoryStore,
    RedisStore,
    ResponseCache,
    cached_agent_run,
    cached_agent_run_sync,
)
from pyai_caching.explain import (
    MAX_MISSES,
    MISS_TTL,
    REPORT_SCHEMA,
    flush_misses,
    miss_report,
    read_misses,
    render_report,
)
from pyai_caching.explain.log import PAGES, PER_PAGE, head_key, miss_key, miss_prefix
from pyai_caching.stores import Store


@dataclass
class Backend:
    name: str
    store: Store
    raw: redis.Redis | None = None


@pytest.fixture(params=["redis", "local", "memory"])
async def backend(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Backend]:
    if request.param == "memory":
        found = Backend("memory", MemoryStore())
    elif request.param == "local":
        found = Backend("local", LocalStore(tmp_path))
    else:
        url: str = request.getfixturevalue("redis_url")
        found = Backend("redis", RedisStore(url, socket_timeout=5.0), raw=request.getfixturevalue("redis_client"))
    yield found
    await flush_misses()
    await found.store.close()


def text_agent(counter: Counter, **kwargs: Any) -> Agent[None, str]:
    return Agent(FunctionModel(counter, model_name="explain-model"), instructions="Answer briefly.", **kwargs)


async def report(store: Store, **kwargs: Any) -> dict[str, Any]:
    """The `--json` document, after a JSON round trip (what a script reads)."""
    await flush_misses()
    found = await miss_report(store, **kwargs)
    doc: dict[str, Any] = json.loads(json.dumps(found.to_json()))
    return doc


async def test_a_timestamp_in_the_prompt_is_explained_as_a_volatile_token(backend: Backend) -> None:
    counter = Counter(payload="ok")
    agent = text_agent(counter)
    await cached_agent_run(agent, "Now: 2026-03-01T09:15:00Z. Summarize the day.", "digest", store=backend.store)
    await cached_agent_run(agent, "Now: 2026-03-02T17:40:12Z. Summarize the day.", "digest", store=backend.store)
    assert counter.calls == 2

    doc = await report(backend.store, namespace="default")
    latest, first = doc["misses"]
    assert first["verdict"] == "no_other_entry"
    assert first["nearest"] is None
    assert latest["verdict"] == "volatile_token"
    assert latest["nearest"]["key"] == first["key"]
    assert latest["task"] == "digest"
    [difference] = latest["differences"]
    assert (difference["area"], difference["change"]) == ("messages", "changed")
    assert difference["volatile"] == ["timestamp"]
    assert "user-prompt" in difference["ingredient"]
    text = render_report(await miss_report(backend.store, namespace="default"))
    assert "The only difference is a timestamp in message 1, part 1 (user-prompt) content" in text


async def test_a_date_in_the_instructions_is_named_too(backend: Backend) -> None:
    counter = Counter(payload="ok")
    for day in ("Monday, March 2, 2026", "Tuesday, March 3, 2026"):
        agent = Agent(FunctionModel(counter, model_name="explain-model"), instructions=f"Today is {day}.")
        await cached_agent_run(agent, "What should I do?", "planner", store=backend.store)
    doc = await report(backend.store, task="planner")
    latest = doc["misses"][0]
    assert latest["verdict"] == "volatile_token"
    assert [(d["ingredient"], d["volatile"]) for d in latest["differences"]] == [
        ("instructions 1", ["date", "weekday"]),  # the agent's instructions, as sent with the request
        ("message 1 instructions", ["date", "weekday"]),  # and as recorded with the first message
    ]


async def test_a_changed_tool_description_is_named(backend: Backend) -> None:
    counter = Counter(payload="ok")

    def lookup(city: str) -> str:
        return f"sunny in {city}"

    for description in ("Look up the weather of a city.", "Look up today's weather of a city."):
        agent = text_agent(counter, tools=[Tool(lookup, description=description)])
        await cached_agent_run(agent, "Weather in Paris?", "weather", store=backend.store)
    doc = await report(backend.store)
    latest = doc["misses"][0]
    assert latest["verdict"] == "changed"
    assert latest["differences"] == [
        {
            "ingredient": "tool 'lookup' description",
            "area": "tools",
            "change": "changed",
            "volatile": [],
            "before": None,
            "after": None,
        }
    ]
    assert "tool 'lookup' description (changed)" in latest["summary"]


async def test_a_changed_setting_shows_its_values(backend: Backend) -> None:
    counter = Counter(payload="ok")
    agent = text_agent(counter)
    for temperature in (0.0, 0.7):
        await cached_agent_run(
            agent, "Name a colour.", "colours", store=backend.store, model_settings={"temperature": temperature}
        )
    [difference] = (await report(backend.store))["misses"][0]["differences"]
    assert difference == {
        "ingredient": "setting 'temperature'",
        "area": "settings",
        "change": "changed",
        "volatile": [],
        "before": 0.0,
        "after": 0.7,
    }


async def test_keys_in_another_order_hit(backend: Backend) -> None:
    """Canonical JSON sorts keys: a tool schema or settings written in another order are the same request."""
    counter = Counter(payload="ok")

    def convert(amount: float, currency: str) -> str:
        return f"{amount} {currency}"

    schemas = (
        {"type": "object", "properties": {"amount": {"type": "number"}, "currency": {"type": "string"}}},
        {"properties": {"currency": {"type": "string"}, "amount": {"type": "number"}}, "type": "object"},
    )
    settings: tuple[dict[str, Any], ...] = (
        {"temperature": 0.2, "max_tokens": 50},
        {"max_tokens": 50, "temperature": 0.2},
    )
    for schema, setting in zip(schemas, settings, strict=True):
        tool = Tool.from_schema(convert, name="convert", description="Convert money.", json_schema=schema)
        agent = text_agent(counter, tools=[tool])
        assert await cached_agent_run(agent, "Convert 3 EUR.", "money", store=backend.store, model_settings=setting)
    assert counter.calls == 1
    doc = await report(backend.store)
    assert doc["recorded"] == 1  # the first call's miss only


async def test_json_schema(backend: Backend) -> None:
    counter = Counter(payload="ok")
    agent = text_agent(counter)
    prompts = (
        "Request id 0f8fad5b-d9cb-469f-a165-70867728950e: hello",
        "Request id 7c9e6679-7425-40de-944b-e07fc1f90ae7: hello",
    )
    for prompt in prompts:
        await cached_agent_run(agent, prompt, "ids", store=backend.store, namespace="tenant-a")
    doc = await report(backend.store, namespace="tenant-a", last=5)
    assert set(doc) == {"schema", "namespace", "task", "recorded", "entries_compared", "entries_truncated", "misses"}
    assert doc["schema"] == REPORT_SCHEMA
    assert (doc["namespace"], doc["task"], doc["recorded"], doc["entries_compared"]) == ("tenant-a", None, 2, 2)
    assert doc["entries_truncated"] is False
    for miss in doc["misses"]:
        assert set(miss) == {
            "at", "at_unix", "namespace", "task", "model", "key", "stored_now", "verdict", "summary", "nearest",
            "differences", "more_differences",
        }  # fmt: skip
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", miss["at"])
        assert isinstance(miss["at_unix"], float)
        assert (miss["namespace"], miss["model"]) == ("tenant-a", "function:explain-model")
        assert miss["key"].startswith("pyai_caching:tenant-a:r:{")
        assert miss["stored_now"] is True
        assert miss["verdict"] in {"volatile_token", "changed", "same_ingredients", "no_other_entry"}
        assert isinstance(miss["summary"], str)
        assert isinstance(miss["more_differences"], int)
    latest = doc["misses"][0]
    assert set(latest["nearest"]) == {"key", "task", "model", "created_at", "similarity"}
    assert 0 < latest["nearest"]["similarity"] <= 1
    assert latest["differences"][0]["volatile"] == ["uuid"]
    assert (await report(backend.store, namespace="other"))["misses"] == []


async def test_the_record_holds_no_prompt_text(backend: Backend) -> None:
    counter = Counter(payload="ok")
    agent = text_agent(counter)
    prompt = "My card is 4111 1111 1111 1111 and my name is Zebulon Quimby, on 2026-01-05."
    await cached_agent_run(agent, prompt, "private", store=backend.store)
    await flush_misses()
    keys = [key async for key in backend.store.scan(miss_prefix("default"))]
    assert keys
    for key in keys:
        raw = await backend.store.get(key)
        assert raw is not None
        for fragment in ("4111", "Zebulon", "Quimby", "2026-01-05", "Answer briefly"):
            assert fragment.encode() not in raw


async def test_the_log_is_capped_and_expires(backend: Backend) -> None:
    counter = Counter(payload="ok")
    agent = text_agent(counter)
    total = MAX_MISSES + PER_PAGE * 3
    for i in range(total):
        await cached_agent_run(agent, f"Question {i}", "many", store=backend.store)
    await flush_misses()
    keys = {key async for key in backend.store.scan(miss_prefix("default"))}
    assert keys - {head_key("default")} == {miss_key("default", page) for page in range(PAGES)}
    misses = await read_misses(backend.store, "default")
    assert len(misses) == MAX_MISSES  # one process writes its pages in turn: the newest MAX_MISSES are kept
    assert [m.at for m in misses] == sorted((m.at for m in misses), reverse=True)
    doc = await report(backend.store, last=1)
    assert doc["recorded"] == MAX_MISSES
    if backend.raw is not None:
        for key in keys:
            assert 0.99 * MISS_TTL * 1000 < backend.raw.pttl(key) <= MISS_TTL * 1000


async def test_last_and_task_filters(backend: Backend) -> None:
    counter = Counter(payload="ok")
    agent = text_agent(counter)
    for i in range(3):
        await cached_agent_run(agent, f"A {i}", "alpha", store=backend.store)
        await cached_agent_run(agent, f"B {i}", "beta", store=backend.store)
    doc = await report(backend.store, task="beta", last=2)
    assert (doc["recorded"], len(doc["misses"])) == (3, 2)
    assert {m["task"] for m in doc["misses"]} == {"beta"}
    with pytest.raises(ValueError, match="last must be a positive number"):
        await miss_report(backend.store, last=0)


async def test_nothing_is_recorded_when_turned_off(backend: Backend) -> None:
    counter = Counter(payload="ok")
    agent = text_agent(counter)
    await cached_agent_run(agent, "Quiet.", "quiet", store=backend.store, explain_misses=False)
    await agent.run("Quiet too.", capabilities=[ResponseCache(store=backend.store, explain_misses=False)])
    assert counter.calls == 2
    assert await flush_misses() == 0
    assert [key async for key in backend.store.scan(miss_prefix("default"))] == []
    await agent.run("Recorded.", capabilities=[ResponseCache(store=backend.store)])
    assert await flush_misses() == 1
    assert len(await read_misses(backend.store)) == 1


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_explain_misses_is_validated(value: Any) -> None:
    with pytest.raises(ConfigurationError, match="explain_misses must be True or False"):
        ResponseCache(store=MemoryStore(), explain_misses=value)


class _RefusesMissLog(MemoryStore):
    """A store that fails every write of the miss log (and only those)."""

    async def set(self, key: str, value: bytes, *, ttl: float | None) -> None:
        if ":miss:" in key:
            raise ConnectionError("refused")
        await super().set(key, value, ttl=ttl)


async def test_a_failing_miss_log_never_breaks_a_call(caplog: pytest.LogCaptureFixture) -> None:
    store = _RefusesMissLog()
    counter = Counter(payload="ok")
    agent = text_agent(counter)
    with caplog.at_level(logging.DEBUG, logger="pyai_caching"):
        assert await cached_agent_run(agent, "Hello", "t", store=store) == "ok"
        assert await flush_misses() == 1
        assert await cached_agent_run(agent, "Hello", "t", store=store) == "ok"  # the entry itself was stored
    assert counter.calls == 1
    assert "could not record a cache miss in memory (ConnectionError)" in caplog.text
    ours = [r for r in caplog.records if r.name.startswith("pyai_caching")]  # not other libraries' leftovers
    assert [r.getMessage() for r in ours if r.levelno >= logging.WARNING] == []


async def test_a_failing_listener_never_breaks_a_call(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from pyai_caching.engine import ports

    def broken(*args: Any) -> None:
        raise RuntimeError("listener bug")

    monkeypatch.setattr(ports, "miss_listeners", [broken, *ports.miss_listeners])
    store = MemoryStore()
    counter = Counter(payload="ok")
    assert await cached_agent_run(text_agent(counter), "Hello", "t", store=store) == "ok"
    assert "a miss listener failed" in caplog.text
    assert await flush_misses() == 1  # the listeners after the broken one still ran
    assert len(await read_misses(store)) == 1


async def test_a_store_that_is_down_never_breaks_a_call(redis_server_factory: Any) -> None:
    server = redis_server_factory()
    store = RedisStore(server.url(), socket_timeout=0.5)
    counter = Counter(payload="ok")
    agent = text_agent(counter)
    await cached_agent_run(agent, "First", "t", store=store)
    server.close()
    assert await cached_agent_run(agent, "Second", "t", store=store) == "ok"
    await flush_misses()  # the writes fail (logged at DEBUG), nothing raises
    await store.close()


def test_misses_queued_when_asyncio_run_ends_are_written(tmp_path: Path) -> None:
    counter = Counter(payload="ok")
    agent = text_agent(counter)

    async def one_call() -> None:
        await cached_agent_run(agent, "Last words", "t", store=LocalStore(tmp_path))
        # asyncio.run now cancels the miss log's writer, which writes the queued miss before it stops

    asyncio.run(one_call())
    misses = asyncio.run(read_misses(LocalStore(tmp_path), "default"))
    assert [m.task for m in misses] == ["t"]


def test_short_lived_event_loops_and_processes_take_pages_in_turn(tmp_path: Path) -> None:
    """Each `asyncio.run` (and each process) writes the misses it queued when it ends; none overwrites another's."""
    counter = Counter(payload="ok")
    agent = text_agent(counter)

    async def one_call(i: int) -> None:
        await cached_agent_run(agent, f"Loop {i}", "loops", store=LocalStore(tmp_path))

    for i in range(PAGES + 4):  # more loops than pages: the oldest pages are taken again, in turn
        asyncio.run(one_call(i))
    script = (
        "import asyncio, sys\n"
        "from pydantic_ai import Agent\n"
        "from pydantic_ai.models.test import TestModel\n"
        "from pyai_caching import LocalStore, cached_agent_run\n"
        "agent = Agent(TestModel(custom_output_text='ok'))\n"
        "async def main():\n"
        "    store = LocalStore(sys.argv[1])\n"
        "    for i in range(2):\n"
        "        await cached_agent_run(agent, f'{sys.argv[2]} {i}', 'processes', store=store)\n"
        "asyncio.run(main())\n"
    )
    for name in ("first", "second"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path), name], check=True, timeout=60)
    misses = asyncio.run(read_misses(LocalStore(tmp_path), "default"))
    assert [m.task for m in misses[:4]] == ["processes"] * 4
    loops = [m for m in misses if m.task == "loops"]
    assert len(loops) == PAGES - 2  # the newest: the two processes took the two oldest loops' pages


def test_misses_of_the_sync_entry_point_are_flushed(tmp_path: Path) -> None:
    counter = Counter(payload="ok")
    agent = text_agent(counter)
    store = LocalStore(tmp_path)
    assert cached_agent_run_sync(agent, "Sync", "sync-task", store=store) == "ok"

    async def read() -> list[str | None]:
        await flush_misses()  # flushes the sync entry points' loop too
        return [m.task for m in await read_misses(store, "default")]

    assert asyncio.run(read()) == ["sync-task"]


async def test_planted_pages_are_ignored(backend: Backend) -> None:
    counter = Counter(payload="ok")
    await cached_agent_run(text_agent(counter), "Real", "t", store=backend.store)
    await flush_misses()
    planted = [
        b"not json",
        b'{"kind": "misses", "version": 1, "misses": [1, {"at": 1e999}, {"at": 5, "key": 3}, {"at": "x"}]}',
        b'{"kind": "misses", "version": 99, "misses": []}',
        b"[" * 100_000,
        json.dumps({"kind": "misses", "version": 1, "misses": [{"at": 7, "key": "k", "fp": {"header": {}}}]}).encode(),
        b'{"kind": "misses", "version": 1, "misses": [{"at": 8, "key": "k", "fp": {"header": {"x": '
        + b"[" * 500
        + b"]" * 500
        + b"}}}]}",
    ]
    real = {key async for key in backend.store.scan(miss_prefix("default"))}
    free = [k for k in (f"pyai_caching:default:miss:{{{i:02x}}}" for i in range(PAGES)) if k not in real]
    for key, value in zip(free, planted, strict=False):
        await backend.store.set(key, value, ttl=60)
    doc = await report(backend.store)
    assert [m["task"] for m in doc["misses"]] == ["t", None]  # the one planted miss of a valid shape is shown


async def test_terminal_output_is_escaped(backend: Backend) -> None:
    counter = Counter(payload="ok")
    agent = text_agent(counter)
    task = "evil\x1b]0;owned\x07\x9b2J\u202e"
    for day in ("2026-01-01", "2026-01-02"):
        await cached_agent_run(agent, f"Day {day}", task, store=backend.store)
    await flush_misses()
    text = render_report(await miss_report(backend.store))
    assert not re.search("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202e]", text)
    assert "evil\\x1b]0;owned\\x07\\x9b2J\\u202e" in text


async def test_a_new_cache_version_is_named(backend: Backend) -> None:
    counter = Counter(payload="ok")
    agent = text_agent(counter)
    for version in (None, "tools-2"):
        await cached_agent_run(agent, "Same prompt", "versions", store=backend.store, cache_version=version)
    latest = (await report(backend.store))["misses"][0]
    assert latest["verdict"] == "same_ingredients"
    assert latest["differences"] == []
    assert "the key differs by cache_version" in latest["summary"]


async def test_another_model_shows_both_names(backend: Backend) -> None:
    counter = Counter(payload="ok")
    for name in ("model-a", "model-b"):
        agent = Agent(FunctionModel(counter, model_name=name))
        await cached_agent_run(agent, "Which model?", "models", store=backend.store)
    differences = (await report(backend.store))["misses"][0]["differences"]
    named = {d["ingredient"]: (d["before"], d["after"]) for d in differences}
    assert named["model name"] == ("model-a", "model-b")
    assert named["model config"] == (None, None)  # the model's own attributes: a digest, not shown
