"""What `pyai-caching demo` runs (the command itself is in `demo`): the main job end to end, with no server and no
API key.

A real pydantic-ai `Agent` with structured output (`UserProfile`) on a `FunctionModel` that takes as long as a
real model and reports token usage, called three times through `cached_agent_run`: the first call misses and
calls the model, the next two are answered from the store (the first hit of an agent in a process goes through
pydantic-ai's agent run and teaches the process the agent's request; the second shows the run-level fast path).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Final

from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.usage import RequestUsage

from pyai_caching.api import cached_agent_run
from pyai_caching.engine.keys import namespace_prefix
from pyai_caching.spend.costs import ModelCosts
from pyai_caching.spend.recorders import Expense, RedisSpendLedger
from pyai_caching.stores import RedisStore, Store

__all__ = ["DEMO_MODEL", "DEMO_NAMESPACE", "DemoCall", "DemoResult", "UserProfile", "demo_agent", "run_demo"]

DEMO_NAMESPACE: Final = "pyai_caching-demo"
"""The namespace the demo writes to, and empties first so that its first call is a miss."""

DEMO_MODEL: Final = "demo-model"
"""The name of the demo's model."""

DEMO_PROMPT: Final = "Ada Lovelace, 36, mathematician and writer. Loves poetry, horses and the Analytical Engine."

DEMO_USAGE: Final = RequestUsage(input_tokens=1_250, output_tokens=310)
"""What the demo model reports per request (a typical extraction call)."""

DEMO_PRICES: Final = (Decimal("3.00"), Decimal("15.00"))
"""USD per million input and output tokens the demo prices its model at (`custom_costs`, as for a model that
genai-prices does not know; these are a mid-size commercial model's prices)."""

_PROFILE: Final = {
    "name": "Ada Lovelace",
    "age": 36,
    "occupation": "mathematician and writer",
    "interests": ["poetry", "horses", "the Analytical Engine"],
}


class UserProfile(BaseModel):
    """A person's profile, extracted from free text."""

    name: str
    age: int
    occupation: str
    interests: list[str]


def demo_agent(latency: float) -> Agent[None, UserProfile]:
    """An agent whose model answers after `latency` seconds with a `UserProfile` and 1,250 + 310 tokens."""

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await asyncio.sleep(latency)
        tool = info.output_tools[0].name
        return ModelResponse(parts=[ToolCallPart(tool, dict(_PROFILE))], usage=DEMO_USAGE)

    return Agent(
        FunctionModel(model, model_name=DEMO_MODEL),
        output_type=UserProfile,
        instructions="Extract the user's profile from the text.",
    )


@dataclass(frozen=True, kw_only=True)
class DemoCall:
    """One call of the demo."""

    number: int
    """1, 2, 3: the order of the call."""
    hit: bool
    """Answered from the cache."""
    seconds: float
    """Wall-clock time of the call."""
    requests: int
    """Model requests made."""
    input_tokens: int
    """Input tokens billed."""
    output_tokens: int
    """Output tokens billed."""
    cost: Decimal | None
    """What the call cost in USD (`None`: unknown)."""
    saved: Decimal | None
    """What the call saved in USD (a hit: the stored entry's cost; `None`: unknown)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "call": self.number,
            "cache": "hit" if self.hit else "miss",
            "seconds": round(self.seconds, 6),
            "model_requests": self.requests,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": None if self.cost is None else str(self.cost),
            "saved": None if self.saved is None else str(self.saved),
        }


@dataclass(frozen=True, kw_only=True)
class DemoResult:
    """What the demo did."""

    store: str
    """The store's description."""
    calls: list[DemoCall]
    """The calls, in order."""
    output: UserProfile
    """What both calls returned."""
    same_output: bool
    """Both calls returned equal outputs."""

    @property
    def speedup(self) -> float | None:
        """How many times faster the last hit was than the miss."""
        miss, hit = self.calls[0], self.calls[-1]
        return miss.seconds / hit.seconds if hit.hit and hit.seconds > 0 else None

    @property
    def saved(self) -> Decimal | None:
        """What the hits saved in USD (`None`: unknown)."""
        total = Decimal(0)
        for call in self.calls:
            if call.saved is None:
                return None
            total += call.saved
        return total


async def run_demo(store: Store, *, latency: float = 0.8, calls: int = 3) -> DemoResult:
    """Call the demo agent `calls` times through `cached_agent_run` on `store` and measure each call.

    On a `RedisStore` the calls are also recorded in its spend ledger (namespace `pyai_caching-demo`).
    """
    await store.clear(namespace_prefix(DEMO_NAMESPACE))
    agent = demo_agent(latency)
    prices = {DEMO_MODEL: ModelCosts(*DEMO_PRICES)}
    # On Redis, the calls go to the spend ledger too, so that `pyai-caching spend` has something to show.
    ledger = [RedisSpendLedger(store=store)] if isinstance(store, RedisStore) else []
    made: list[DemoCall] = []
    outputs: list[UserProfile] = []
    for number in range(1, calls + 1):
        expenses: list[Expense] = []
        started = time.perf_counter()
        output = await cached_agent_run(
            agent,
            DEMO_PROMPT,
            "make_profile",
            store=store,
            namespace=DEMO_NAMESPACE,
            custom_costs=prices,
            expense_hook=[expenses.append, *ledger],
        )
        seconds = time.perf_counter() - started
        (expense,) = expenses
        made.append(
            DemoCall(
                number=number,
                hit=expense.hits > 0 and expense.misses == 0,
                seconds=seconds,
                requests=expense.misses,
                input_tokens=expense.usage.input_tokens,
                output_tokens=expense.usage.output_tokens,
                cost=expense.cost,
                saved=expense.cost_saved,
            )
        )
        outputs.append(output)
    return DemoResult(
        store=store.description, calls=made, output=outputs[-1], same_output=all(o == outputs[0] for o in outputs)
    )
