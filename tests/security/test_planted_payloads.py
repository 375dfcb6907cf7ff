"""Entries are data, never code: whatever someone plants under an entry's key, nothing of it executes."""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest
from _security_kit import Echo, answer_to

from pyai_caching import LocalStore, RedisStore, cached_agent_run
from pyai_caching.stores import Store


class CreatesFile:
    """Unpickling this calls `open(path, "w")`: the file appearing is the proof that the payload ran."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def payloads(marker: Path) -> dict[str, bytes]:
    code = f"__import__('builtins').open({str(marker)!r}, 'w')"
    return {
        "pickle protocol 0": pickle.dumps(CreatesFile(marker), protocol=0),
        "pickle protocol 2": pickle.dumps(CreatesFile(marker), protocol=2),
        "pickle protocol 5": pickle.dumps(CreatesFile(marker), protocol=5),
        "pickle behind a signature line": b"pyai_caching-hmac-sha256:"
        + b"0" * 64
        + b"\n"
        + pickle.dumps(CreatesFile(marker)),
        "jsonpickle": json.dumps(
            {"py/reduce": [{"py/function": "builtins.open"}, {"py/tuple": [str(marker), "w"]}]}
        ).encode(),
        "yaml python tag": f"!!python/object/apply:builtins.open [{str(marker)!r}, w]".encode(),
        "python expression": code.encode(),
        "expression inside a well-formed envelope": json.dumps(
            {
                "format": "pyai_caching",
                "version": 1,
                "kind": "response",
                "meta": {"namespace": "default", "model": code},
                "response": {"parts": [{"part_kind": code, "content": code}], "kind": code},
            }
        ).encode(),
    }


def test_the_payloads_are_live(tmp_path: Path) -> None:
    """Unpickled, the payload does create its file (so the tests below prove something)."""
    marker = tmp_path / "unpickled"
    opened = pickle.loads(payloads(marker)["pickle protocol 2"])  # deliberately: the payload is live
    opened.close()
    assert marker.exists()


@pytest.fixture(params=["redis", "local"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "redis":
        return RedisStore(request.getfixturevalue("redis_url"))
    return LocalStore(tmp_path / "cache")


@pytest.mark.parametrize("payload", list(payloads(Path("x"))))
async def test_a_planted_payload_executes_nothing_and_is_a_miss(payload: str, store: Store, tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    echo = Echo()
    agent = echo.agent()
    assert await cached_agent_run(agent, "q", "t", store=store) == answer_to("q")
    keys = [key async for key in store.scan("pyai_caching:")]
    assert len(keys) == 2  # request entry and run entry
    for key in keys:
        await store.set(key, payloads(marker)[payload], ttl=None)

    assert await cached_agent_run(agent, "q", "t", store=store) == answer_to("q")
    assert echo.calls == 2  # a miss
    assert not marker.exists()  # nothing ran
    for key in keys:  # overwritten with entries of this library
        raw = await store.get(key)
        assert raw is not None
        assert json.loads(raw)["format"] == "pyai_caching"
    await store.close()
