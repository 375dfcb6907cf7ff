"""Whatever sits under an entry's key, a call returns the model's answer: a bad entry is a miss, then overwritten."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable

import pytest
import redis
from _fault_kit import Echo, answer_to, entry_keys, warnings_with

from pyai_caching import cached_agent_run

pytestmark = pytest.mark.faults


def future_version(raw: bytes) -> bytes:
    doc = json.loads(raw)
    doc["version"] = 99
    return json.dumps(doc).encode()


def other_kind(raw: bytes) -> bytes:
    doc = json.loads(raw)
    doc["kind"] = "response" if doc["kind"] == "run" else "run"
    return json.dumps(doc).encode()


BAD_VALUES: dict[str, Callable[[bytes], bytes]] = {
    "corrupt": lambda raw: b"\xff\xfe\x00" + raw[3:],
    "truncated": lambda raw: raw[: len(raw) // 2],
    "empty": lambda raw: b"",
    "foreign json": lambda raw: b'{"format": "another-cache", "value": "a planted answer"}',
    "foreign text": lambda raw: b"a planted answer",
    "future version": future_version,
    "other kind of entry": other_kind,
    "json of the wrong shape": lambda raw: b"[1, 2, 3]",
}


@pytest.mark.parametrize("damage", list(BAD_VALUES))
async def test_a_bad_entry_is_a_miss_then_overwritten(
    damage: str, redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    echo = Echo()
    agent = echo.agent()
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url) == answer_to("q")
    keys = entry_keys(redis_client)
    assert len(keys) == 2  # the request entry and the run entry
    for key in keys:
        redis_client.set(key, BAD_VALUES[damage](redis_client.get(key) or b""))

    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url) == answer_to("q")
    assert echo.calls == 2  # a miss: the bad entries were not served
    for key in keys:
        doc = json.loads(redis_client.get(key) or b"")
        assert doc["version"] == {"response": 1, "run": 2}[doc["kind"]]  # overwritten with a good entry
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url) == answer_to("q")
    assert echo.calls == 2  # and served again
    assert warnings_with(caplog, "unreadable entry")
    assert warnings_with(caplog, "calls go on without the cache") == []  # a bad entry is not an outage


async def test_a_key_of_another_type_is_a_miss_then_overwritten(
    redis_url: str, redis_client: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    echo = Echo()
    agent = echo.agent()
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url, on_cache_error="raise") == answer_to("q")
    keys = entry_keys(redis_client)
    for key in keys:  # a hash where a string entry belongs
        redis_client.delete(key)
        redis_client.hset(key, mapping={"planted": "answer"})

    # Not a store failure: even with on_cache_error="raise" it is a miss.
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url, on_cache_error="raise") == answer_to("q")
    assert echo.calls == 2
    assert all(redis_client.type(key) == b"string" for key in keys)
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url) == answer_to("q")
    assert echo.calls == 2
    assert warnings_with(caplog, "another type")
    assert warnings_with(caplog, "calls go on without the cache") == []


async def test_a_stray_lock_key_without_expiry_does_not_block_calls(redis_url: str, redis_client: redis.Redis) -> None:
    echo = Echo()
    agent = echo.agent()
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url) == answer_to("q")
    [request_key] = [k for k in entry_keys(redis_client) if b":r:" in k]
    redis_client.delete(*entry_keys(redis_client))
    redis_client.hset(request_key + b":lock", mapping={"planted": "forever"})  # never expires
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url) == answer_to("q")
    assert echo.calls == 2
    assert redis_client.exists(request_key + b":lock") == 0  # taken over, then released
