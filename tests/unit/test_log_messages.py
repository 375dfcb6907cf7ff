"""Log messages do not repeat the logger's name: with `%(name)s: %(message)s` a line reads `pyai_caching: ...` once."""

from __future__ import annotations

import logging

import pytest
from _agents import Counter, make_agent

from pyai_caching import cached_agent_run
from pyai_caching.stores import MemoryStore


async def test_warnings_do_not_repeat_the_logger_name(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="pyai_caching")
    store = MemoryStore()
    agent = make_agent(Counter(payload="x"))
    await cached_agent_run(agent, "q", "t", store=store)
    for key in [k async for k in store.scan("pyai_caching:")]:
        await store.set(key, b"not an entry", ttl=None)  # unreadable: a warning, then overwritten
    await cached_agent_run(agent, "q", "t", store=store)
    messages = [r.getMessage() for r in caplog.records if r.name == "pyai_caching"]
    assert any("unreadable entry" in m for m in messages)
    assert not [m for m in messages if m.startswith("pyai_caching")]
