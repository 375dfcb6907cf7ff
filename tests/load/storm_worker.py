"""A worker process of the load test: `python storm_worker.py '<json options>'`.

It warms up (imports, schemas, a connection, the run template), prints `ready`, then reads one command per line
on stdin: `<namespace>` runs `calls` concurrent `cached_agent_run` calls over `prompts` distinct prompts in that
namespace and prints one JSON line (model calls made, errors, wrong answers, cache errors counted by the library);
`quit` ends it.

While the calls run, the process is busy the way a real service is: every `stall_every` seconds, `burners`
tasks each do `stall / burners` seconds of CPU work, so one turn of its event loop takes `stall` seconds (longer
than the Redis timeouts) in between the callbacks that send commands and read replies. Replies that arrive
meanwhile are read late. Nothing here slows the server down.

Options: `url`, `calls`, `prompts`, `model_sleep`, `stall`, `stall_every`, `burners`.
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

from pyai_caching import cached_agent_run, metrics


def _prompt_of(messages: list[ModelMessage]) -> str:
    for message in reversed(messages):
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                    return part.content
    return ""


async def _busy(burn: float, every: float) -> None:
    """Keep the event loop busy: `burn` seconds of CPU work, every `every` seconds."""
    while True:
        await asyncio.sleep(every)
        end = time.perf_counter() + burn
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
        # The burners wake together, with the calls' own timers: one loop iteration then runs `stall` seconds of
        # CPU work in between the callbacks that send commands and read replies.
        burners = options["burners"]
        busy = [asyncio.create_task(_busy(options["stall"] / burners, options["stall_every"])) for _ in range(burners)]
        problems = await asyncio.gather(*(one(i, line) for i in range(options["calls"])))
        for task in busy:
            task.cancel()
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
