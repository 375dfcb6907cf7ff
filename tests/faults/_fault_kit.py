"""Helpers of the fault-injection tests: a counting model, polling with a deadline, log counting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest
import redis
from _agents import answer_to, last_prompt
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

PREFIX = "pyai_caching:"


@dataclass
class Echo:
    """A model that answers `answer to <prompt>` after `sleep` seconds and counts its calls."""

    sleep: float = 0.0
    calls: int = 0
    prompts: list[str] = field(default_factory=list)

    async def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        prompt = last_prompt(messages)
        self.prompts.append(prompt)
        if self.sleep:
            await asyncio.sleep(self.sleep)
        return ModelResponse(parts=[TextPart(answer_to(prompt))])

    def agent(self) -> Agent[None, str]:
        return Agent(FunctionModel(self, model_name="echo"))


class StoreWaits:
    """Counts the cache operations that waited on the store and failed (a timeout, a refused connection), as opposed
    to those skipped at once because the store had just failed (`pyai_caching.metrics`, errors by kind)."""

    def __init__(self) -> None:
        self._seen = self._waited()

    @staticmethod
    def _waited() -> int:
        from pyai_caching.observability import metrics

        kinds = metrics.snapshot().errors_by_kind
        return sum(count for kind, count in kinds.items() if not kind.endswith(":StoreSkipped"))

    def since_last(self) -> int:
        """How many operations waited and failed since the last call (or since this object was made)."""
        now = self._waited()
        waited, self._seen = now - self._seen, now
        return waited


async def eventually(check: Callable[[], bool | Awaitable[bool]], *, within: float = 15.0, what: str = "") -> None:
    """Poll `check` every 10 ms until it is true; fail after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = check()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within} s waiting for {what or check}")
        await asyncio.sleep(0.01)


def our_keys(client: redis.Redis) -> list[bytes]:
    return sorted(client.scan_iter(match=f"{PREFIX}*"))


def entry_keys(client: redis.Redis) -> list[bytes]:
    """Keys of entries (lock keys and the miss log of `pyai-caching explain` left aside)."""
    return [k for k in our_keys(client) if not k.endswith(b":lock") and b":miss:{" not in k]


def warnings_with(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("pyai_caching") and r.levelname == "WARNING" and text in r.getMessage()
    ]
