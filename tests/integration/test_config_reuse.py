"""`cached_agent_run` reuses the cache capability of an earlier call with the same configuration.

Reuse must be invisible: a different store, environment or argument gives a different capability, and a bad
argument is reported on every call, even after a good call with an equal-looking one.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import ConfigurationError, MemoryStore, cached_agent_run


def _counting_agent() -> tuple[Agent[None, str], list[int]]:
    calls = [0]

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls[0] += 1
        return ModelResponse(parts=[TextPart(f"answer {calls[0]}")])

    return Agent(FunctionModel(answer)), calls


async def test_each_explicit_store_keeps_its_own_entries() -> None:
    agent, calls = _counting_agent()
    first, second = MemoryStore(), MemoryStore()
    assert await cached_agent_run(agent, "hi", "t", store=first) == "answer 1"
    assert await cached_agent_run(agent, "hi", "t", store=first) == "answer 1"
    assert await cached_agent_run(agent, "hi", "t", store=second) == "answer 2"
    assert await cached_agent_run(agent, "hi", "t", store=first) == "answer 1"
    assert calls[0] == 2


async def test_a_changed_cache_folder_in_the_environment_is_followed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("LLM_CACHE_REDIS_URL", raising=False)
    monkeypatch.delenv("LLM_CACHE_SECRET", raising=False)
    agent, calls = _counting_agent()
    monkeypatch.setenv("LLM_CACHE_DIR", str(tmp_path / "a"))
    assert await cached_agent_run(agent, "hi", "t") == "answer 1"
    assert await cached_agent_run(agent, "hi", "t") == "answer 1"
    monkeypatch.setenv("LLM_CACHE_DIR", str(tmp_path / "b"))
    assert await cached_agent_run(agent, "hi", "t") == "answer 2"
    assert (tmp_path / "b" / "pyai_caching.sqlite3").exists()
    assert calls[0] == 2


async def test_a_changed_secret_in_the_environment_is_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    agent, calls = _counting_agent()
    store = MemoryStore()
    monkeypatch.delenv("LLM_CACHE_SECRET", raising=False)
    assert await cached_agent_run(agent, "hi", "t", store=store) == "answer 1"
    monkeypatch.setenv("LLM_CACHE_SECRET", "a secret of at least sixteen bytes")
    # The unsigned entry is not trusted once a secret is configured: a miss that overwrites it, signed.
    assert await cached_agent_run(agent, "hi", "t", store=store) == "answer 2"
    assert await cached_agent_run(agent, "hi", "t", store=store) == "answer 2"
    assert calls[0] == 2


@pytest.mark.parametrize(
    ("good", "bad"),
    [
        ({"ttl": 1}, {"ttl": True}),  # equal as numbers, but a bool is not a number of seconds
        ({"ttl": 60}, {"ttl": 0}),
        ({"namespace": "tenant-a"}, {"namespace": "tenant a"}),
        ({"on_cache_error": "warn"}, {"on_cache_error": "ignore"}),
        ({"cache_mode": "read_write"}, {"cache_mode": "sometimes"}),
    ],
    ids=["bool ttl", "zero ttl", "namespace", "on_cache_error", "cache_mode"],
)
async def test_a_bad_argument_is_reported_after_a_good_call(good: dict[str, object], bad: dict[str, object]) -> None:
    agent, _ = _counting_agent()
    store = MemoryStore()
    await cached_agent_run(agent, "hi", "t", store=store, **good)  # type: ignore[arg-type]
    await cached_agent_run(agent, "hi", "t", store=store, **good)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError):
        await cached_agent_run(agent, "hi", "t", store=store, **bad)  # type: ignore[arg-type]


async def test_task_names_and_namespaces_stay_separate() -> None:
    agent, calls = _counting_agent()
    store = MemoryStore()
    assert await cached_agent_run(agent, "hi", "a", store=store, namespace="one") == "answer 1"
    assert await cached_agent_run(agent, "hi", "b", store=store, namespace="one") == "answer 1"
    assert await cached_agent_run(agent, "hi", "a", store=store, namespace="two") == "answer 2"
    assert calls[0] == 2
