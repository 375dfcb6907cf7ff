"""Cached == uncached: every scenario of `_scenarios`, on every store (see `_harness`)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from pyai_caching.stores import LocalStore, MemoryStore, RedisStore, Store

from ._harness import Scenario, check
from ._scenarios import SCENARIOS


@pytest.fixture(params=["memory", "local", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        yield MemoryStore()
    elif request.param == "local":
        yield LocalStore(tmp_path / "cache")
    else:
        yield RedisStore(request.getfixturevalue("redis_url"))


def test_there_are_at_least_40_scenarios() -> None:
    assert len(SCENARIOS) >= 40
    assert len({s.id for s in SCENARIOS}) == len(SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.id)
async def test_cached_equals_uncached(scenario: Scenario, store: Store) -> None:
    await check(scenario, store)
