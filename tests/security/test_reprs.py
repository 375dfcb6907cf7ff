"""No public object's `repr` or `str` shows a password or a secret: every store, the engine, the semantic cache, the
spend ledger, budgets, recorders and retry objects, built with every secret they accept."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai.models.test import TestModel

from pyai_caching import (
    Budget,
    LocalStore,
    LoggingRecorder,
    MemoryStore,
    RedisSpendLedger,
    RedisStore,
    ResponseCache,
    RetryingModel,
    RetryPolicy,
    SemanticCache,
    TaskBudget,
)
from pyai_caching.testing.cassette import CassetteStore

PASSWORD = "pw-R3prRedisPassw0rd"
HMAC_SECRET = "hmac-R3prSigningSecret-0123456789"
API_KEY = "sk-R3prEmbedderApiKey0123456789"
SECRETS = (PASSWORD, HMAC_SECRET, API_KEY)
URL = f"redis://cache:{PASSWORD}@127.0.0.1:6390/0"


class KeyedEmbedder:
    """An embedder object that holds an API key and shows it in its own repr (as careless code does)."""

    def __init__(self) -> None:
        self.api_key = API_KEY

    async def __call__(self, texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0] for _ in texts]

    def __repr__(self) -> str:
        return f"KeyedEmbedder(api_key={self.api_key!r})"


def semantic() -> SemanticCache:
    pytest.importorskip("numpy")
    return SemanticCache(embedder=KeyedEmbedder())


OBJECTS: dict[str, Callable[[Path], Any]] = {
    "RedisStore(url with password)": lambda _: RedisStore(URL),
    "RedisStore(?password=)": lambda _: RedisStore(f"redis://127.0.0.1:6390/0?password={PASSWORD}"),
    "RedisStore(password=)": lambda _: RedisStore("redis://127.0.0.1:6390/0", password=PASSWORD),
    "RedisStore(sentinel)": lambda _: RedisStore(
        f"redis+sentinel://:{PASSWORD}@127.0.0.1:26390/main", sentinel_kwargs={"password": PASSWORD}
    ),
    "RedisStore(cluster)": lambda _: RedisStore(f"redis+cluster://:{PASSWORD}@127.0.0.1:7390"),
    "LocalStore": lambda tmp: LocalStore(tmp),
    "MemoryStore": lambda _: MemoryStore(),
    "CassetteStore": lambda tmp: CassetteStore(tmp / "c.json"),
    "RedisSpendLedger": lambda _: RedisSpendLedger(URL),
    "RedisSpendLedger(store=)": lambda _: RedisSpendLedger(store=RedisStore(URL)),
    "TaskBudget": lambda _: TaskBudget(5, RedisSpendLedger(URL)),
    "Budget": lambda _: Budget("daily", usd=5, tenant=lambda deps: PASSWORD, redis_url=URL),
    "Budget(store=)": lambda _: Budget("daily", tokens=5, store=RedisStore(URL)),
    "LoggingRecorder": lambda _: LoggingRecorder(logger=logging.getLogger("spend"), level=logging.DEBUG),
    "RetryPolicy": lambda _: RetryPolicy(max_wait=5),
    "RetryingModel": lambda _: RetryingModel(TestModel(), RetryPolicy()),
    "SemanticCache": lambda _: semantic(),
    "ResponseCache(store=, semantic=, budget=)": lambda _: ResponseCache(
        store=RedisStore(URL), semantic=semantic(), budget=TaskBudget(1, RedisSpendLedger(URL)), task_name="t"
    ),
    "ResponseCache(budget=[Budget])": lambda _: ResponseCache(
        store=MemoryStore(), budget=[Budget("daily", usd=1, redis_url=URL)], task_name="t"
    ),
}

OBJECTS_OWNED_ELSEWHERE: dict[str, Callable[[Path], Any]] = {
    "ResponseCache(redis_url=, secret=str)": lambda _: ResponseCache(redis_url=URL, secret=HMAC_SECRET),
    "ResponseCache(store=, secret=bytes)": lambda _: ResponseCache(store=MemoryStore(), secret=HMAC_SECRET.encode()),
}


def assert_hidden(obj: Any) -> None:
    for text in (repr(obj), str(obj), f"{obj}", f"{obj!r}"):
        for secret in SECRETS:
            assert secret not in text, f"{secret[:6]}... shown by {type(obj).__name__}: {text[:200]}"


@pytest.mark.parametrize("name", OBJECTS)
def test_reprs_hide_secrets(name: str, tmp_path: Path) -> None:
    assert_hidden(OBJECTS[name](tmp_path))


@pytest.mark.parametrize("name", OBJECTS_OWNED_ELSEWHERE)
def test_response_cache_repr_hides_secrets(name: str, tmp_path: Path) -> None:
    assert_hidden(OBJECTS_OWNED_ELSEWHERE[name](tmp_path))


def test_reprs_still_say_what_they_are() -> None:
    """Hiding a secret keeps the rest: the address of a store, the identity of an embedder."""
    assert repr(RedisSpendLedger(URL)) == "RedisSpendLedger('redis://cache:***@127.0.0.1:6390/0')"
    assert "KeyedEmbedder" in repr(semantic())
