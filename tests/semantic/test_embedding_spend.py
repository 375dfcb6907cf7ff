"""Every embedding call the semantic cache makes is counted in the call's record, priced by pydantic-ai's own means.

Real agents on counting `FunctionModel`s, a real `SemanticCache` with pydantic-ai's `TestEmbeddingModel` (every text
embeds to the same vector, and it reports usage: its estimated input tokens). Named `text-embedding-3-small` by
`openai`, genai-prices prices it at $0.02 per million input tokens; under its own name (`test`) it has no price.

The record is read where user code sees the call in progress: an output validator reads
`pyai_caching.engine.context.current_call` (the same `CallRecord` the call's `Expense` is made from).
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from _agents import Counter, make_agent
from pydantic_ai import Agent, Embedder
from pydantic_ai.embeddings import TestEmbeddingModel
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, ToolReturnPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import MemoryStore, SemanticCache, cached_agent_run
from pyai_caching.engine.context import CallRecord, current_call

ASK = "How do I reset my password?"
PARAPHRASE = "How can I change my passcode"
PRICE_PER_TOKEN = Decimal("0.02") / 1_000_000  # text-embedding-3-small, input


def priced(**kwargs: Any) -> SemanticCache:
    """A semantic cache whose embedder genai-prices knows (and for which every prompt means the same)."""
    model = TestEmbeddingModel("text-embedding-3-small", provider_name="openai")
    return SemanticCache(embedder=Embedder(model), threshold=0.99, **kwargs)


async def tokens(text: str) -> int:
    """The input tokens `TestEmbeddingModel` reports for `text`."""
    return await TestEmbeddingModel().count_tokens(text)


def recording(agent: Agent[Any, Any]) -> list[CallRecord]:
    """The records of the calls of `agent`, one per run, as an output validator sees them."""
    records: list[CallRecord] = []

    @agent.output_validator
    def keep(output: Any) -> Any:
        record = current_call.get()
        assert record is not None
        records.append(record)
        return output

    return records


async def test_a_miss_counts_one_priced_embedding_and_a_semantic_hit_another() -> None:
    counter = Counter(payload="Use the reset link.")
    agent = make_agent(counter)
    records = recording(agent)
    store = MemoryStore()

    await cached_agent_run(agent, ASK, "t", semantic=priced(), store=store)
    await cached_agent_run(agent, PARAPHRASE, "t", semantic=priced(), store=store)

    assert counter.calls == 1
    miss, hit = records
    assert hit.semantic_matches, "the paraphrase was answered by meaning"
    for record, prompt in ((miss, ASK), (hit, PARAPHRASE)):
        used = await tokens(prompt)
        assert used > 0
        # one call per request: the miss's lookup embeds, and recording its answer reuses that vector
        assert record.embedding_calls == 1
        assert record.embedding_tokens == used
        assert record.embedding_cost == PRICE_PER_TOKEN * used
        assert record.unpriced_embedding_calls == 0


async def test_an_exact_hit_embeds_nothing() -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    records = recording(agent)
    store = MemoryStore()
    await cached_agent_run(agent, ASK, "t", semantic=priced(), store=store)
    await cached_agent_run(agent, ASK, "t", semantic=priced(), store=store)
    assert counter.calls == 1
    assert [r.embedding_calls for r in records] == [1, 0]
    assert records[1].embedding_cost == 0


async def test_a_custom_function_is_an_unpriced_call() -> None:
    async def embed(texts: list[str]) -> list[list[float]]:
        return [[1.0, 0.0] for _ in texts]

    agent = make_agent(Counter(payload="answer"))
    records = recording(agent)
    await cached_agent_run(agent, ASK, "t", semantic=SemanticCache(embedder=embed), store=MemoryStore())
    (record,) = records
    assert (record.embedding_calls, record.unpriced_embedding_calls) == (1, 1)
    assert (record.embedding_tokens, record.embedding_cost) == (0, Decimal(0))


async def test_a_model_without_a_price_counts_its_tokens_and_is_unpriced() -> None:
    agent = make_agent(Counter(payload="answer"))
    records = recording(agent)
    semantic = SemanticCache(embedder=TestEmbeddingModel(), threshold=0.99)  # provider "test": no price
    await cached_agent_run(agent, ASK, "t", semantic=semantic, store=MemoryStore())
    (record,) = records
    assert record.embedding_calls == 1
    assert record.embedding_tokens == await tokens(ASK)
    assert (record.embedding_cost, record.unpriced_embedding_calls) == (Decimal(0), 1)


@pytest.mark.parametrize("failure", ["raises", "times out"])
async def test_a_failed_embedding_is_an_unpriced_call(failure: str) -> None:
    async def broken(texts: list[str]) -> list[list[float]]:
        if failure == "raises":
            raise RuntimeError("embedding service unavailable")
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    counter = Counter(payload="answer")
    agent = make_agent(counter)
    records = recording(agent)
    semantic = SemanticCache(embedder=broken, timeout=0.05)
    assert await cached_agent_run(agent, ASK, "t", semantic=semantic, store=MemoryStore()) == "answer"
    (record,) = records
    # the lookup's call failed, so recording the answer tried once more
    assert record.embedding_calls == record.unpriced_embedding_calls == 2
    assert record.embedding_cost == 0


async def test_refusing_semantic_hits_still_counts_the_recording_call() -> None:
    agent = make_agent(Counter(payload="answer"))
    records = recording(agent)
    await cached_agent_run(agent, ASK, "t", semantic=priced(), accept_semantic=False, store=MemoryStore())
    (record,) = records
    assert record.embedding_calls == 1  # no lookup by meaning; the prompt is still recorded
    assert record.embedding_cost == PRICE_PER_TOKEN * await tokens(ASK)


async def test_only_requests_that_end_with_a_prompt_are_embedded() -> None:
    calls = 0

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal calls
        calls += 1
        last = messages[-1]
        if isinstance(last, ModelRequest) and any(isinstance(p, ToolReturnPart) for p in last.parts):
            return ModelResponse(parts=[TextPart("It is sunny.")])
        return ModelResponse(parts=[ToolCallPart("weather", {"city": "Paris"})])

    agent = Agent(FunctionModel(model))

    @agent.tool_plain
    def weather(city: str) -> str:
        return f"sunny in {city}"

    records = recording(agent)
    assert await cached_agent_run(agent, "Weather in Paris?", "t", semantic=priced(), store=MemoryStore())
    assert calls == 2
    (record,) = records
    assert record.misses == 2
    assert record.embedding_calls == 1, "the request carrying the tool's result is not compared by meaning"


async def test_the_expense_shows_the_embedding_calls_and_counts_their_cost() -> None:
    # Issue 16: embedding calls count toward spend and appear in `Expense`, through a real SemanticCache.
    counter = Counter(payload="Use the reset link.")
    agent = make_agent(counter)
    store = MemoryStore()
    expenses: list[Any] = []

    await cached_agent_run(agent, ASK, "t", semantic=priced(), store=store, expense_hook=expenses.append)
    await cached_agent_run(agent, PARAPHRASE, "t", semantic=priced(), store=store, expense_hook=expenses.append)

    miss, hit = expenses
    for expense, prompt in ((miss, ASK), (hit, PARAPHRASE)):
        used = await tokens(prompt)
        assert expense.embedding_calls == 1
        assert expense.embedding_tokens == used
        assert expense.embedding_cost == PRICE_PER_TOKEN * used
        assert expense.unpriced_embedding_calls == 0
    # A semantic hit made no model request, but its embedding was paid for.
    assert hit.hits == 1
    assert hit.misses == 0
    assert hit.total_cost == hit.embedding_cost
