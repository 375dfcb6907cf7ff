"""HMAC signing: with a secret, only entries written by holders of the secret are served, under their own key."""

from __future__ import annotations

import pytest
import redis
from _security_kit import Echo, answer_to
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import cached_agent_run

SECRET = "a-signing-secret-of-32-bytes-----"
PLANTED = "a planted answer"
SIG_PREFIX = b"pyai_caching-hmac-sha256:"


def entry_keys(client: redis.Redis) -> list[bytes]:
    return sorted(k for k in client.scan_iter(match="pyai_caching:*") if not k.endswith(b":lock"))


def plant(client: redis.Redis, keys: list[bytes], change: bytes, to: bytes) -> None:
    """Rewrite the answer inside each entry, as someone with write access to Redis could."""
    for key in keys:
        raw = client.get(key) or b""
        assert change in raw
        client.set(key, raw.replace(change, to))


async def test_entries_written_with_the_secret_are_signed_and_hit(redis_url: str, redis_client: redis.Redis) -> None:
    echo = Echo()
    agent = echo.agent()
    for _ in range(3):
        assert await cached_agent_run(agent, "q", "t", redis_url=redis_url, secret=SECRET) == answer_to("q")
    assert echo.calls == 1
    keys = entry_keys(redis_client)
    assert len(keys) == 2
    assert all((redis_client.get(key) or b"").startswith(SIG_PREFIX) for key in keys)


async def test_an_entry_planted_without_the_secret_is_a_miss(redis_url: str, redis_client: redis.Redis) -> None:
    echo = Echo()
    agent = echo.agent()
    # Someone who can write Redis but has no secret writes well-formed, unsigned entries under the right keys.
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url) == answer_to("q")
    keys = entry_keys(redis_client)
    plant(redis_client, keys, answer_to("q").encode(), PLANTED.encode())
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url) == PLANTED  # no secret: it is served

    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url, secret=SECRET) == answer_to("q")
    assert echo.calls == 2  # with the secret, the planted entry was a miss
    assert all((redis_client.get(key) or b"").startswith(SIG_PREFIX) for key in keys)  # and was overwritten
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url, secret=SECRET) == answer_to("q")
    assert echo.calls == 2


async def test_a_tampered_signed_entry_is_a_miss(redis_url: str, redis_client: redis.Redis) -> None:
    echo = Echo()
    agent = echo.agent()
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url, secret=SECRET) == answer_to("q")
    keys = entry_keys(redis_client)
    plant(redis_client, keys, answer_to("q").encode(), PLANTED.encode())  # the signature line is kept
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url, secret=SECRET) == answer_to("q")
    assert echo.calls == 2


async def test_an_entry_signed_with_another_secret_is_a_miss(redis_url: str) -> None:
    echo = Echo()
    agent = echo.agent()
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url, secret="another-secret-of-32-bytes-------")
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url, secret=SECRET) == answer_to("q")
    assert echo.calls == 2


async def test_a_signed_entry_copied_under_another_key_is_a_miss(redis_url: str, redis_client: redis.Redis) -> None:
    echo = Echo()
    agent = echo.agent()
    assert await cached_agent_run(agent, "planted question", "t", redis_url=redis_url, secret=SECRET)
    planted = {k: redis_client.get(k) for k in entry_keys(redis_client)}
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url, secret=SECRET) == answer_to("q")
    targets = [k for k in entry_keys(redis_client) if k not in planted]
    # Copy the validly signed entries of "planted question" over those of "q", kind for kind.
    for target in targets:
        kind = target.split(b":")[2]
        [source] = [k for k in planted if k.split(b":")[2] == kind]
        redis_client.set(target, planted[source] or b"")
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url, secret=SECRET) == answer_to("q")
    assert echo.calls == 3  # a miss: the signature covers the key


async def test_the_secret_can_come_from_the_environment(
    redis_url: str, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_CACHE_SECRET", SECRET)
    echo = Echo()
    agent = echo.agent()
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url) == answer_to("q")
    keys = entry_keys(redis_client)
    assert all((redis_client.get(key) or b"").startswith(SIG_PREFIX) for key in keys)
    plant(redis_client, keys, answer_to("q").encode(), PLANTED.encode())
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url) == answer_to("q")
    assert echo.calls == 2


async def test_replaying_an_older_signed_entry_under_its_own_key_is_not_detected(
    redis_url: str, redis_client: redis.Redis
) -> None:
    """A documented limit of signing (SECURITY.md): an old, validly signed entry can be put back under its key."""
    answers = iter(["first answer", "second answer"])

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart(next(answers))])

    agent = Agent(FunctionModel(model))
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url, secret=SECRET) == "first answer"
    old = {k: redis_client.get(k) for k in entry_keys(redis_client)}
    assert (
        await cached_agent_run(agent, "q", "t", redis_url=redis_url, secret=SECRET, cache_mode="refresh")
        == "second answer"
    )
    for key, value in old.items():
        redis_client.set(key, value or b"")
    assert await cached_agent_run(agent, "q", "t", redis_url=redis_url, secret=SECRET) == "first answer"
