"""A worker process of the load test: `python storm_worker.py '<json options>'`.

It warms up (imports, schemas, a connection, the run template), prints `ready`, then reads one command per line
on stdin: `<namespace>` runs `calls` concurrent `cached_agent_run` calls over `prompts` distinct prompts in that
namespace and prints one JSON line (model calls made, errors, wrong answers, cache errors counted by the library);
`quit` ends it.

The process is busy the way a loaded service is: each call is preceded by `cpu` seconds of CPU work (handling
the request that needs it). The calls of a burst start in one turn of the event loop, so the first ones send
their Redis commands and then wait while the others do their CPU work: `calls * cpu` seconds, longer than the
Redis timeouts, before the loop comes back to read the replies, which arrived at once. Nothing here slows the
server down.

Options: `url`, `calls`, `prompts`, `model_sleep`, `cpu`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import cached_agent_run
from pyai_caching.observability import metrics


def _prompt_of(messages: list[ModelMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                    return part.content
    return ""


def _burn(seconds: float) -> None:
    """CPU work that holds the event loop (parsing a request, rendering a template, ...)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def main(options: dict[str, Any]) -> None:
    model_calls = 0

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal model_calls
        model_calls += 1
        await asyncio.sleep(options["model_sleep"])
        return ModelResponse(parts=[TextPart(f"answer to {_prompt_of(messages)}")])

    agent = Agent(FunctionModel(model, model_name="storm-model"), instructions="Answer briefly.")

    async def one(i: int, namespace: str) -> str | None:
        prompt = f"question {i % options['prompts']}"
        _burn(options["cpu"])
        try:
            answer = await cached_agent_run(
                agent, prompt, "storm", redis_url=options["url"], namespace=namespace, retry=False
            )
        except Exception as error:
            return f"error {type(error).__name__}: {error}"[:300]
        return None if answer == f"answer to {prompt}" else f"wrong answer {answer!r} to {prompt!r}"

    await asyncio.gather(*(one(i, f"warm-up-{time.monotonic_ns()}") for i in range(2)))
    print("ready", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = (await loop.run_in_executor(None, sys.stdin.readline)).strip()
        if not line or line == "quit":
            return
        calls_before, errors_before = model_calls, metrics.snapshot().total.errors
        problems = await asyncio.gather(*(one(i, line) for i in range(options["calls"])))
        report = {
            "model_calls": model_calls - calls_before,
            "errors": [p for p in problems if p is not None and p.startswith("error")],
            "wrong": [p for p in problems if p is not None and p.startswith("wrong")],
            "cache_errors": metrics.snapshot().total.errors - errors_before,
        }
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(main(json.loads(sys.argv[1])))
