"""Big entries: an answer over `max_entry_bytes` is returned but not stored; a planted huge value is never
downloaded; one big entry crawling over a slow link never makes the store down for the other keys."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
from _agents import last_prompt
from _fault_kit import answer_to, entry_keys, warnings_with
from _redis_servers import RedisServer
from _slow_link import SlowLink
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import cached_agent_run
from pyai_caching.observability import metrics
from pyai_caching.stores import LocalStore, MemoryStore, RedisStore, Store

pytestmark = pytest.mark.faults


@dataclass
class Sized:
    """A model whose answer to a prompt starting with `big` is `big_size` characters long; counts its calls."""

    big_size: int
    calls: dict[str, int] = field(default_factory=dict)

    def answer(self, prompt: str) -> str:
        return "x" * self.big_size if prompt.startswith("big") else answer_to(prompt)

    async def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        prompt = last_prompt(messages)
        self.calls[prompt] = self.calls.get(prompt, 0) + 1
        return ModelResponse(parts=[TextPart(self.answer(prompt))])

    def agent(self) -> Agent[None, str]:
        return Agent(FunctionModel(self, model_name="sized"))


@pytest.fixture(params=["memory", "local", "redis"])
async def small_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A store that keeps values up to 50 kB."""
    limit = 50_000
    if request.param == "memory":
        store: Store = MemoryStore(max_entry_bytes=limit)
    elif request.param == "local":
        store = LocalStore(tmp_path, max_entry_bytes=limit)
    else:
        store = RedisStore(request.getfixturevalue("redis_url"), max_entry_bytes=limit)
    yield store
    await store.close()


async def test_an_answer_over_the_limit_is_returned_not_stored_with_one_warning(
    small_store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    model = Sized(big_size=80_000)
    agent = model.agent()
    for _ in range(3):
        for prompt in ("big one", "big two", "small"):
            assert await cached_agent_run(agent, prompt, "t", store=small_store) == model.answer(prompt)
    assert model.calls == {"big one": 3, "big two": 3, "small": 1}  # the big ones were never stored
    assert len(warnings_with(caplog, "not storing")) == 1
    assert "max_entry_bytes=50,000" in warnings_with(caplog, "not storing")[0]
    assert warnings_with(caplog, "calls go on without the cache") == []  # not a store failure
    assert metrics.snapshot().errors_by_kind.get("set:EntryTooLargeError", 0) >= 6


async def test_a_planted_huge_value_is_never_downloaded(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    server = redis_server_factory()
    client = server.client()
    model = Sized(big_size=0)
    agent = model.agent()
    assert await cached_agent_run(agent, "question", "t", redis_url=server.url()) == answer_to("question")
    keys = entry_keys(client)
    assert len(keys) == 2  # the run entry and the request entry
    planted = b"{" * 20_000_000  # more than the default max_entry_bytes (8 MiB); could be a valid entry as well
    for key in keys:
        client.set(key, planted)

    sent_before = client.info("stats")["total_net_output_bytes"]
    assert await cached_agent_run(agent, "question", "t", redis_url=server.url()) == answer_to("question")
    sent = client.info("stats")["total_net_output_bytes"] - sent_before
    print(f"\nbytes Redis sent for a call whose entries hold 2 x 20 MB: {sent:,}")
    assert sent < 200_000
    assert model.calls == {"question": 2}  # a miss: the model answered again...
    assert all(client.strlen(key) < 100_000 for key in keys)  # ...and its answer replaced the planted values
    assert await cached_agent_run(agent, "question", "t", redis_url=server.url()) == answer_to("question")
    assert model.calls == {"question": 2}
    assert len(warnings_with(caplog, "not downloaded")) == 1
    client.close()


async def test_a_huge_row_planted_in_the_local_file_is_a_miss(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    model = Sized(big_size=0)
    store = LocalStore(tmp_path)
    assert await cached_agent_run(model.agent(), "question", "t", store=store) == answer_to("question")
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        db.execute("UPDATE entries SET value = zeroblob(20000000)")
        db.commit()
    assert await cached_agent_run(model.agent(), "question", "t", store=store) == answer_to("question")
    assert await cached_agent_run(model.agent(), "question", "t", store=store) == answer_to("question")
    assert model.calls == {"question": 2}
    assert len(warnings_with(caplog, "not downloaded")) == 1
    await store.close()


async def test_a_slow_read_of_one_big_entry_does_not_make_the_store_down(
    redis_server_factory: Callable[..., RedisServer], caplog: pytest.LogCaptureFixture
) -> None:
    """3 MB answers over a 4 MB/s link: reading one takes longer than socket_timeout (0.5 s)."""
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    server = redis_server_factory()
    model = Sized(big_size=3_000_000)
    agent = model.agent()
    small = [f"small {i}" for i in range(5)]
    for prompt in ["big", *small]:  # cached over a fast link
        assert await cached_agent_run(agent, prompt, "t", redis_url=server.url()) == model.answer(prompt)
    calls = dict(model.calls)

    with SlowLink(server.port, bytes_per_second=4_000_000) as link:
        url = link.url()
        # One after the other: the big entry times out, and the small ones right after it are still hits.
        assert await cached_agent_run(agent, "big", "t", redis_url=url) == model.answer("big")
        for prompt in small:
            assert await cached_agent_run(agent, prompt, "t", redis_url=url) == model.answer(prompt)

        # At the same time: big entries crawl while small ones are served.
        async def smalls() -> None:
            for _ in range(4):
                for prompt in small:
                    assert await cached_agent_run(agent, prompt, "t", redis_url=url) == model.answer(prompt)
                await asyncio.sleep(0.05)

        answers = await asyncio.gather(
            cached_agent_run(agent, "big", "t", redis_url=url),
            smalls(),
            cached_agent_run(agent, "big", "t", redis_url=url),
        )
        assert answers[0] == answers[2] == model.answer("big")

    assert all(model.calls[prompt] == calls[prompt] for prompt in small)  # every small one was a hit
    assert warnings_with(caplog, "calls go on without the cache") == []  # the store was never treated as down
    assert len(warnings_with(caplog, "other keys are not affected")) >= 1


async def test_big_entries_on_a_fast_link_are_served(redis_url: str, redis_client: redis.Redis) -> None:
    model = Sized(big_size=3_000_000)
    agent = model.agent()
    for _ in range(3):
        assert await cached_agent_run(agent, "big", "t", redis_url=redis_url) == model.answer("big")
    assert model.calls == {"big": 1}
    assert max(redis_client.strlen(key) for key in entry_keys(redis_client)) > 3_000_000
