"""Bad input gets a clear `ConfigurationError` before the model is called, and the message names the argument."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

import pytest
from _security_kit import Echo

from pyai_caching import ConfigurationError, MemoryStore, RedisStore, ResponseCache, cached_agent_run

# (argument named in the message, keyword arguments of cached_agent_run that override the good ones)
CALL_TABLE: list[tuple[str, dict[str, Any]]] = [
    ("agent", {"agent": "not an agent"}),
    ("prompt", {"prompt": 42}),
    ("task_name", {"task_name": 7}),
    ("task_name", {"task_name": ""}),
    ("full_result", {"full_result": "yes"}),
    ("cache_whole_run", {"cache_whole_run": 1}),
    ("ttl", {"ttl": 0}),
    ("ttl", {"ttl": -60}),
    ("ttl", {"ttl": "3600"}),
    ("ttl", {"ttl": math.nan}),
    ("ttl", {"ttl": math.inf}),
    ("ttl", {"ttl": True}),
    ("cache_timeout", {"cache_timeout": 0}),
    ("cache_timeout", {"cache_timeout": -0.5}),
    ("cache_timeout", {"cache_timeout": "1"}),
    ("max_wait", {"max_wait": -1}),
    ("max_wait", {"max_wait": "60"}),
    ("initial_wait", {"initial_wait": -1}),
    ("namespace", {"namespace": "a:b"}),
    ("namespace", {"namespace": "a*"}),
    ("namespace", {"namespace": "{x}"}),
    ("namespace", {"namespace": "two words"}),
    ("namespace", {"namespace": ""}),
    ("namespace", {"namespace": "x" * 65}),
    ("namespace", {"namespace": "-leading-dash"}),
    ("namespace", {"namespace": "tenant/1"}),
    ("namespace", {"namespace": 5}),
    ("on_cache_error", {"on_cache_error": "ignore"}),
    ("cache_mode", {"cache_mode": "sometimes"}),
    ("secret", {"secret": 12345}),
    ("secret", {"secret": "too short"}),
    ("redis_url", {"redis_url": 6379, "store": None}),
    ("redis_url", {"redis_url": "http://localhost:6379/0", "store": None}),
    ("redis_url", {"redis_url": "redis://localhost:port/0", "store": None}),
    ("store", {"store": "memory"}),
    ("store", {"redis_url": "redis://localhost:6379/0"}),
    ("deps", {"cache_whole_run": True, "deps": threading.Lock()}),
    ("transcript_history", {"transcript_history": 5}),
    ("retry", {"retry": "often"}),
    ("budget", {"budget": 10}),
]

# (argument named in the message, a constructor call that must fail)
CONSTRUCTOR_TABLE: list[tuple[str, Callable[[], object]]] = [
    ("ttl", lambda: ResponseCache(store=MemoryStore(), ttl=0)),
    ("namespace", lambda: ResponseCache(store=MemoryStore(), namespace="a:b")),
    ("mode", lambda: ResponseCache(store=MemoryStore(), mode="sometimes")),
    ("cache_timeout", lambda: ResponseCache(store=MemoryStore(), cache_timeout=-1)),
    ("lock_ttl", lambda: ResponseCache(store=MemoryStore(), lock_ttl=0)),
    ("lock_ttl", lambda: ResponseCache(store=MemoryStore(), lock_ttl=-1)),
    ("lock_ttl", lambda: ResponseCache(store=MemoryStore(), lock_ttl=None)),  # type: ignore[arg-type]
    ("lock_ttl", lambda: ResponseCache(store=MemoryStore(), lock_ttl=math.inf)),
    ("on_cache_error", lambda: ResponseCache(store=MemoryStore(), on_cache_error="never")),  # type: ignore[arg-type]
    ("socket_timeout", lambda: RedisStore("redis://localhost", socket_timeout=0)),
    ("connect_timeout", lambda: RedisStore("redis://localhost", connect_timeout=-1)),
    ("max_connections", lambda: RedisStore("redis://localhost", max_connections=0)),
]


@pytest.mark.parametrize(
    ("argument", "bad"), CALL_TABLE, ids=[f"{arg}={next(iter(bad.values()))!r}"[:60] for arg, bad in CALL_TABLE]
)
async def test_bad_arguments_of_cached_agent_run(argument: str, bad: dict[str, Any]) -> None:
    echo = Echo()
    call: dict[str, Any] = {"agent": echo.agent(), "prompt": "q", "task_name": "t", "store": MemoryStore(), **bad}
    if call.get("store") is None:
        del call["store"]
    agent, prompt, task_name = call.pop("agent"), call.pop("prompt"), call.pop("task_name")
    with pytest.raises(ConfigurationError) as raised:
        await cached_agent_run(agent, prompt, task_name, **call)
    assert argument in str(raised.value)
    assert isinstance(raised.value, ValueError)
    assert echo.calls == 0  # raised before any model call


@pytest.mark.parametrize(("argument", "make"), CONSTRUCTOR_TABLE, ids=[a for a, _ in CONSTRUCTOR_TABLE])
def test_bad_arguments_of_the_constructors(argument: str, make: Callable[[], object]) -> None:
    with pytest.raises(ConfigurationError) as raised:
        make()
    assert argument in str(raised.value)
