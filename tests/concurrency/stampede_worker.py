"""A worker process for the cross-process stampede tests: `python stampede_worker.py '<json options>'`.

It runs `calls` concurrent identical `cached_agent_run` calls against a shared Redis and prints one JSON line:
`{"answered": [unix times], "returned": [unix times], "answers": [...], "errors": [...]}`: `answered` is when the
cache handed the request's response to pydantic-ai (seen by an outer capability), `returned` when the call
returned. The model is a `FunctionModel` that counts its
calls in Redis (`INCR <ns>:model_calls`), so the count covers every process, sleeps `sleep` seconds, and pushes
the time it finished to `<ns>:model_done`.

To start at the same moment as its siblings, the worker warms up (one call with its own prompt, so that the
one-time costs of a process are paid), then `INCR <ns>:ready` and waits until `<ns>:go` exists.

Options: `url`, `ns` (namespace and key prefix), `prompt`, `calls`, `sleep`, `lock_ttl` (optional),
`fail` ("error": the model raises on its first call of the run; "hang": it records its start and sleeps for
an hour, for a test to kill the process).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

import redis.asyncio as aioredis
from _agents import last_prompt
from pydantic_ai import Agent
from pydantic_ai.capabilities import AbstractCapability, WrapModelRequestHandler
from pydantic_ai.exceptions import ModelHTTPError
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models import ModelRequestContext
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.tools import RunContext

from pyai_caching import ResponseCache, cached_agent_run


class Probe(AbstractCapability[Any]):
    """Sits outside the cache and notes when the cache answered each model request."""

    def __init__(self) -> None:
        self.answered: list[float] = []

    async def wrap_model_request(
        self, ctx: RunContext[Any], *, request_context: ModelRequestContext, handler: WrapModelRequestHandler
    ) -> ModelResponse:
        response = await handler(request_context)
        self.answered.append(time.time())
        return response


async def main(options: dict[str, Any]) -> None:
    url, ns, prompt = options["url"], options["ns"], options["prompt"]
    fail = options.get("fail")
    client = aioredis.Redis.from_url(url)

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        asked = last_prompt(messages)
        if asked == prompt:
            count = await client.incr(f"{ns}:model_calls")
            if fail == "hang":
                await client.set(f"{ns}:hanging", "1")
                await asyncio.sleep(3600)
            if fail == "error" and count == 1:
                raise ModelHTTPError(status_code=500, model_name="worker", body="planned failure")
        await asyncio.sleep(options["sleep"])
        if asked == prompt:
            await client.rpush(f"{ns}:model_done", repr(time.time()))
        return ModelResponse(parts=[TextPart(f"answer to {asked}")])

    agent = Agent(FunctionModel(model, model_name="worker-model"))
    lock_ttl = options.get("lock_ttl")

    probe = Probe()

    async def one(text: str) -> tuple[float, str | None, str | None]:
        try:
            if lock_ttl is None:
                answer = await cached_agent_run(
                    agent, text, "stampede", redis_url=url, namespace=ns, retry=False, capabilities=[probe]
                )
            else:
                cache = ResponseCache(redis_url=url, namespace=ns, lock_ttl=lock_ttl, retry=None)
                answer = (await agent.run(text, capabilities=[probe, cache])).output
        except Exception as error:
            return time.time(), None, f"{type(error).__name__}: {error}"
        return time.time(), answer, None

    await one(f"warm-up {time.monotonic_ns()}")
    probe.answered.clear()
    await client.incr(f"{ns}:ready")
    while not await client.exists(f"{ns}:go"):  # noqa: ASYNC110 - the event is a key set by another process
        await asyncio.sleep(0.001)
    results = await asyncio.gather(*(one(prompt) for _ in range(options["calls"])))
    print(
        json.dumps(
            {
                "answered": probe.answered,
                "returned": [r[0] for r in results],
                "answers": [r[1] for r in results],
                "errors": [r[2] for r in results if r[2] is not None],
            }
        ),
        flush=True,
    )
    await client.aclose()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(json.loads(sys.argv[1])))
