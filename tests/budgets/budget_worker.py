"""A worker process for the budget race: `python budget_worker.py <redis url> <budget name> <index> [<lease>]`.

Prints `ready`, waits for a line on stdin, then makes one `cached_agent_run` call (its own prompt, so a miss) under
a $0.010 daily `Budget`. Its model function counts itself in Redis (`INCR <name>:in_model`) and then waits until
`<name>:release` exists, so a test can hold an admitted request in flight while the others are checked. Prints
`admitted` or `denied <spent> <reserved>` and exits 0.
"""

from __future__ import annotations

import asyncio
import sys

import redis.asyncio as aioredis
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from pyai_caching import Budget, BudgetExceededError, MemoryStore, ModelCosts, cached_agent_run

PRICES = {"priced": ModelCosts(2, 10)}  # 1,000 input and 100 output tokens: $0.003


async def main(url: str, name: str, index: str, lease: str = "900") -> None:
    client = aioredis.Redis.from_url(url)

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await client.incr(f"{name}:in_model")
        for _ in range(6000):  # at most a minute: the test releases it once every worker has been checked
            if await client.exists(f"{name}:release"):
                break
            await asyncio.sleep(0.01)
        return ModelResponse(parts=[TextPart("answer")], usage=RequestUsage(input_tokens=1_000, output_tokens=100))

    budget = Budget(name, usd="0.010", period="day", redis_url=url, lease=float(lease))
    agent = Agent(FunctionModel(model, model_name="priced"))
    print("ready", flush=True)
    await asyncio.to_thread(sys.stdin.readline)
    try:
        await cached_agent_run(
            agent, f"prompt {index}", "race", store=MemoryStore(), custom_costs=PRICES, budget=budget
        )
    except BudgetExceededError as error:
        print(f"denied {error.spent} {error.reserved}", flush=True)
    else:
        print("admitted", flush=True)
    await client.aclose()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
