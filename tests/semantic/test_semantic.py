"""The semantic cache: a paraphrase is answered from the cache, never across contexts, never at the cost of a call.

Real agents on counting `FunctionModel`s, real stores (memory, embedded SQLite, a throwaway redis-server), and
deterministic embedders: `BagOfWordsModel` (known paraphrases are similar, see `_embedders`) and pydantic-ai's
own `TestEmbeddingModel`, which embeds every text to the same vector, so that only the context key can keep two
requests apart.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import struct
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import redis
from _agents import Counter, make_agent
from _embedders import BagOfWordsModel, bag_of_words_function
from pydantic import BaseModel
from pydantic_ai import Agent, Embedder
from pydantic_ai.embeddings import TestEmbeddingModel
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import (
    ConfigurationError,
    Expense,
    LocalStore,
    MemoryStore,
    ResponseCache,
    SemanticCache,
    cached_agent_run,
)

ROOT = Path(__file__).resolve().parents[2]
ASK = "How do I reset my password?"
PARAPHRASE = "How can I change my passcode"  # similarity 1.0 with ASK under BagOfWordsModel
NEAR = "reset my password and my email"  # similarity 0.816 with ASK
OTHER = "What is the refund policy?"  # similarity 0.0 with ASK


def bag(threshold: float = 0.9, **kwargs: Any) -> SemanticCache:
    return SemanticCache(embedder=Embedder(BagOfWordsModel()), threshold=threshold, **kwargs)


def same_for_all(**kwargs: Any) -> SemanticCache:
    """An embedder for which every prompt means the same: any hit it does not get is the context key's doing."""
    return SemanticCache(embedder=TestEmbeddingModel(), threshold=0.99, **kwargs)


@pytest.fixture(params=["memory", "local", "redis"])
def store_kwargs(request: pytest.FixtureRequest, tmp_path: Path) -> dict[str, Any]:
    if request.param == "memory":
        return {"store": MemoryStore()}
    if request.param == "local":
        return {"store": LocalStore(tmp_path / "cache")}
    return {"redis_url": request.getfixturevalue("redis_url")}


async def run(agent: Agent[Any, Any], prompt: str, store_kwargs: dict[str, Any], **kwargs: Any) -> tuple[Any, Expense]:
    expenses: list[Expense] = []
    output = await cached_agent_run(agent, prompt, "faq", expense_hook=expenses.append, **store_kwargs, **kwargs)
    return output, expenses[-1]


# --- hits and misses ---------------------------------------------------------------------------------------


async def test_a_paraphrase_is_answered_without_a_model_call(store_kwargs: dict[str, Any]) -> None:
    counter = Counter(payload="Use the reset link on the sign-in page.")
    agent = make_agent(counter, instructions="You are a support bot.")
    semantic = bag()

    first, expense = await run(agent, ASK, store_kwargs, semantic=semantic)
    assert counter.calls == 1
    assert expense.semantic_matches == ()

    second, expense = await run(agent, PARAPHRASE, store_kwargs, semantic=semantic)
    assert counter.calls == 1
    assert second == first
    assert expense.hits == 1
    assert expense.misses == 0
    (match,) = expense.semantic_matches
    assert match.prompt == PARAPHRASE
    assert match.matched_prompt == ASK
    assert match.similarity == pytest.approx(1.0)
    assert expense.to_dict()["semantic_hits"] == 1
    assert ASK not in json.dumps(expense.to_dict())  # prompts stay out of what recorders log


async def test_structured_output_is_served_by_meaning(store_kwargs: dict[str, Any]) -> None:
    class Answer(BaseModel):
        name: str
        age: int

    counter = Counter()
    agent = make_agent(counter, Answer)
    assert await cached_agent_run(agent, ASK, "t", semantic=bag(), **store_kwargs) == Answer(name="Ada", age=36)
    assert await cached_agent_run(agent, PARAPHRASE, "t", semantic=bag(), **store_kwargs) == Answer(name="Ada", age=36)
    assert counter.calls == 1


@pytest.mark.parametrize(("threshold", "hit"), [(0.8, True), (0.82, False), (0.95, False)])
async def test_the_threshold_decides(threshold: float, hit: bool) -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    store = {"store": MemoryStore()}
    await run(agent, ASK, store, semantic=bag(threshold))
    _, expense = await run(agent, NEAR, store, semantic=bag(threshold))  # cosine 2/sqrt(6) = 0.8165
    assert counter.calls == (1 if hit else 2)
    assert len(expense.semantic_matches) == (1 if hit else 0)
    if hit:
        assert expense.semantic_matches[0].similarity == pytest.approx(2 / 6**0.5, abs=1e-6)


async def test_an_unrelated_prompt_misses_and_the_best_match_wins() -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    store = {"store": MemoryStore()}
    await run(agent, ASK, store, semantic=bag(0.5))
    await run(agent, OTHER, store, semantic=bag(0.5))
    assert counter.calls == 2  # cosine 0.0: a miss
    await run(agent, NEAR, store, semantic=bag(0.5))
    assert counter.calls == 2
    _, expense = await run(agent, "Could you change the passcode?", store, semantic=bag(0.5))
    assert counter.calls == 2
    assert expense.semantic_matches[0].matched_prompt == ASK  # 1.0 beats NEAR's 0.816


async def test_a_threshold_of_one_matches_only_the_same_direction() -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    store = {"store": MemoryStore()}
    await run(agent, ASK, store, semantic=bag(1.0))
    await run(agent, PARAPHRASE, store, semantic=bag(1.0))
    await run(agent, NEAR, store, semantic=bag(1.0))
    assert counter.calls == 2


async def test_a_plain_async_function_is_an_embedder() -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    store = {"store": MemoryStore()}
    semantic = SemanticCache(embedder=bag_of_words_function, threshold=0.9)
    await run(agent, ASK, store, semantic=semantic)
    _, expense = await run(agent, PARAPHRASE, store, semantic=semantic)
    assert counter.calls == 1
    assert len(expense.semantic_matches) == 1


async def test_the_capability_takes_the_same_config() -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    cache = ResponseCache(store=MemoryStore(), semantic=bag())
    first = await agent.run(ASK, capabilities=[cache])
    second = await agent.run(PARAPHRASE, capabilities=[cache])
    assert counter.calls == 1
    assert second.output == first.output
    assert second.usage.input_tokens == 0
    assert second.usage.output_tokens == 0


async def test_off_by_default() -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    store = {"store": MemoryStore()}
    await run(agent, ASK, store)
    await run(agent, PARAPHRASE, store)
    assert counter.calls == 2


# --- never across contexts ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "first", "second"),
    [
        ("instructions", {"instructions": "Answer briefly."}, {"instructions": "Answer in French."}),
        ("system prompt", {"system_prompt": "You are Ada."}, {"system_prompt": "You are Bob."}),
        ("model", {"model_name": "model-a"}, {"model_name": "model-b"}),
        ("settings", {"model_settings": {"temperature": 0.0}}, {"model_settings": {"temperature": 1.0}}),
        ("output type", {"output_type": str}, {"output_type": int}),
        ("tools", {"tool": "search_docs"}, {"tool": "search_web"}),
        ("namespace", {"namespace": "tenant-a"}, {"namespace": "tenant-b"}),
        ("history", {"history": "Hi, I am Ada."}, {"history": "Hi, I am Bob."}),
    ],
)
async def test_no_hit_across_contexts_even_for_the_same_prompt(
    label: str, first: dict[str, Any], second: dict[str, Any]
) -> None:
    counter = Counter(payload="7")
    store = MemoryStore()

    async def call(options: dict[str, Any], prompt: str) -> Expense:
        options = dict(options)
        agent_kwargs: dict[str, Any] = {}
        for name in ("instructions", "system_prompt"):
            if name in options:
                agent_kwargs[name] = options.pop(name)
        model = counter.model(options.pop("model_name", "test-model"))
        agent: Agent[Any, Any] = Agent(model, output_type=options.pop("output_type", str), **agent_kwargs)
        if "tool" in options:

            def lookup(topic: str) -> str:
                """Look a topic up."""
                return topic

            agent.tool_plain(name=options.pop("tool"))(lookup)
        if "history" in options:
            options["message_history"] = [
                ModelRequest(parts=[UserPromptPart(options.pop("history"))]),
                ModelResponse(parts=[TextPart("Hello!")]),
            ]
        _, expense = await run(agent, prompt, {"store": store}, semantic=same_for_all(), **options)
        return expense

    await call(first, ASK)
    assert counter.calls == 1
    # the same context and a different prompt: every prompt is "the same" for this embedder, so it hits
    expense = await call(first, OTHER)
    assert counter.calls == 1, f"control: a different prompt in the same context ({label}) should hit"
    assert len(expense.semantic_matches) == 1
    # a different context and the very same prompt: never
    expense = await call(second, ASK)
    assert counter.calls == 2, f"a semantic hit across different {label}"
    assert expense.semantic_matches == ()


async def test_another_embedder_has_its_own_index() -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    store = {"store": MemoryStore()}
    await run(agent, ASK, store, semantic=SemanticCache(embedder=Embedder(BagOfWordsModel("bow-1")), threshold=0.9))
    await run(agent, PARAPHRASE, store, semantic=SemanticCache(embedder=Embedder(BagOfWordsModel("bow-2"))))
    assert counter.calls == 2


async def test_requests_after_a_tool_call_are_never_matched_by_meaning() -> None:
    """Only a final user prompt is compared: the request that carries the tool's result must match exactly."""

    calls: list[list[ModelMessage]] = []

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        calls.append(messages)
        last = messages[-1]
        if isinstance(last, ModelRequest) and isinstance(last.parts[-1], UserPromptPart):
            return ModelResponse(parts=[ToolCallPart("lookup", {"topic": "password"})])
        return ModelResponse(parts=[TextPart(f"done after {len(messages)} messages")])

    agent: Agent[Any, str] = Agent(FunctionModel(model))
    seen: list[str] = []

    @agent.tool_plain
    def lookup(topic: str) -> str:
        """Look a topic up."""
        seen.append(topic)
        return f"notes on {topic}"

    store = {"store": MemoryStore()}
    await run(agent, ASK, store, semantic=same_for_all())
    assert len(calls) == 2
    _, expense = await run(agent, OTHER, store, semantic=same_for_all())
    # the first request (prompt only) is answered by meaning, the tool runs for real, and the request carrying
    # its result goes to the model: its messages differ from any recorded ones
    assert len(calls) == 3
    assert seen == ["password", "password"]
    assert len(expense.semantic_matches) == 1
    assert expense.hits == 1
    assert expense.misses == 1


# --- refusing, recording, verifying ------------------------------------------------------------------------


async def test_a_caller_can_refuse_a_semantic_hit() -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    store = {"store": MemoryStore()}
    await run(agent, ASK, store, semantic=bag())
    _, expense = await run(agent, PARAPHRASE, store, semantic=bag(), accept_semantic=False)
    assert counter.calls == 2
    assert expense.semantic_matches == ()
    # refusing still records the prompt: a third wording finds it (or ASK) by meaning
    _, expense = await run(agent, "Please recover my password", store, semantic=bag())
    assert counter.calls == 2
    assert len(expense.semantic_matches) == 1
    # the capability form
    cache = ResponseCache(store=store["store"], semantic=dataclasses.replace(bag(), accept_hits=False))
    await agent.run("How to change the password", capabilities=[cache])
    assert counter.calls == 3


async def test_a_semantic_hit_never_becomes_an_exact_entry() -> None:
    """Otherwise a paraphrase would later be served as an exact hit, even to a caller who refuses semantic hits."""
    counter = Counter(payload="answer")
    agent = make_agent(counter, instructions="Be brief.")  # static: the run-level fast path applies
    store = {"store": MemoryStore()}
    await run(agent, ASK, store, semantic=bag())
    await run(agent, PARAPHRASE, store, semantic=bag())
    assert counter.calls == 1
    await run(agent, PARAPHRASE, store, semantic=bag(), accept_semantic=False)
    assert counter.calls == 2
    # ... while an exact repeat is still served by the run-level fast path
    _, expense = await run(agent, ASK, store, semantic=bag())
    assert counter.calls == 2
    assert expense.run_level_hit


async def test_read_only_mode_serves_by_meaning_and_records_nothing() -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    store = {"store": MemoryStore()}
    await run(agent, ASK, store, semantic=bag())
    _, expense = await run(agent, PARAPHRASE, store, semantic=bag(), cache_mode="read_only")
    assert counter.calls == 1  # the recording call only
    assert len(expense.semantic_matches) == 1


async def test_an_expired_or_deleted_entry_is_skipped_for_the_next_candidate(redis_url: str) -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    store = {"redis_url": redis_url}
    await run(agent, ASK, store, semantic=bag(0.8))
    await run(agent, NEAR, store, semantic=bag(0.8, max_candidates=1))  # hits ASK
    assert counter.calls == 1
    second = "Reset the password, password please"  # cosine 3 / sqrt(10) = 0.949 with ASK
    await run(agent, second, store, semantic=bag(0.95))  # a miss, recorded
    assert counter.calls == 2
    with redis.Redis.from_url(redis_url) as client:
        best = list(client.scan_iter("pyai_caching:default:r:*"))
        assert len(best) == 2
        # delete the entry of ASK: a paraphrase of ASK must fall back to the next candidate, or miss
        entry_of_ask = next(k for k in best if ASK.encode() in client.get(k))  # type: ignore[operator]
        client.delete(entry_of_ask)
    _, expense = await run(agent, PARAPHRASE, store, semantic=bag(0.8, max_candidates=2))
    assert counter.calls == 2
    assert expense.semantic_matches[0].matched_prompt == second
    _, expense = await run(agent, "Could you change my passcode", store, semantic=bag(0.8, max_candidates=1))
    assert counter.calls == 3
    assert expense.semantic_matches == ()


def _streams(client: redis.Redis) -> dict[str, list[Any]]:
    return {k.decode(): client.xrange(k) for k in client.scan_iter("pyai_caching:default:sem:*")}


async def test_an_index_item_pointing_into_another_context_is_never_served(redis_url: str) -> None:
    """The served entry's own stored request must re-hash to the lookup's context key and hold the item's prompt."""
    counter = Counter(payload="answer")
    store = {"redis_url": redis_url}
    await run(make_agent(counter, instructions="Brief."), ASK, store, semantic=bag())
    await run(make_agent(counter, instructions="French."), OTHER, store, semantic=bag())
    assert counter.calls == 2
    with redis.Redis.from_url(redis_url) as client:
        streams = _streams(client)
        brief = next(s for s, rows in streams.items() if rows[0][1][b"p"] == ASK.encode())
        french_fields = next(rows[0][1] for s, rows in streams.items() if s != brief)
        # the brief context's index now holds an item with ASK's vector and the French entry's key and prompt
        forged = {**streams[brief][0][1], b"k": french_fields[b"k"], b"p": french_fields[b"p"]}
        client.delete(brief)
        client.xadd(brief, forged)
    _, expense = await run(make_agent(counter, instructions="Brief."), PARAPHRASE, store, semantic=bag())
    assert counter.calls == 3
    assert expense.semantic_matches == ()


async def test_with_a_secret_a_forged_index_item_is_never_served(redis_url: str) -> None:
    counter = Counter(payload="answer")
    store = {"redis_url": redis_url, "secret": "s" * 32}
    agent = make_agent(counter, instructions="Brief.")
    await run(agent, ASK, store, semantic=bag())
    with redis.Redis.from_url(redis_url) as client:
        ((stream, rows),) = _streams(client).items()
        item = rows[0][1]
        assert len(item[b"s"]) == 64
        # the same item, re-added with ASK's vector replaced by the vector of another prompt: the signature breaks
        client.delete(stream)
        other = (await BagOfWordsModel().embed(OTHER, input_type="query")).embeddings[0]
        norm = sum(x * x for x in other) ** 0.5
        client.xadd(stream, {**item, b"v": struct.pack(f"<{len(other)}f", *(x / norm for x in other))})
    _, expense = await run(agent, "refund rules", store, semantic=bag())
    assert counter.calls == 2
    assert expense.semantic_matches == ()
    # the same forgery without a secret would have been served: the control
    counter2 = Counter(payload="answer")
    agent2 = make_agent(counter2, instructions="Brief.")
    store2 = {"redis_url": redis_url}
    await run(agent2, ASK, store2, semantic=bag(), namespace="control")
    with redis.Redis.from_url(redis_url) as client:
        (stream,) = list(client.scan_iter("pyai_caching:control:sem:*"))
        item = client.xrange(stream)[0][1]
        client.delete(stream)
        client.xadd(stream, {**item, b"v": struct.pack(f"<{len(other)}f", *(x / norm for x in other))})
    _, expense = await run(agent2, "refund rules", store2, semantic=bag(), namespace="control")
    assert counter2.calls == 1
    assert len(expense.semantic_matches) == 1


async def test_the_document_index_keeps_the_newest_max_entries() -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    store = {"store": MemoryStore()}
    semantic = bag(0.99, max_entries=2)
    for prompt in (ASK, OTHER, "the email rules"):
        await run(agent, prompt, store, semantic=semantic)
    assert counter.calls == 3
    await run(agent, "Refund money policy", store, semantic=bag(0.9))  # OTHER is still there (cosine 0.949)
    assert counter.calls == 3
    await run(agent, PARAPHRASE, store, semantic=semantic)  # ASK was dropped from the index
    assert counter.calls == 4


# --- failures are misses -----------------------------------------------------------------------------------


async def test_an_embedder_that_raises_is_a_miss_and_the_call_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def broken(texts: list[str]) -> list[list[float]]:
        nonlocal calls
        calls += 1
        raise RuntimeError("embedding service unavailable")

    counter = Counter(payload="answer")
    agent = make_agent(counter)
    store = {"store": MemoryStore()}
    semantic = SemanticCache(embedder=broken, threshold=0.9)
    with caplog.at_level(logging.WARNING, logger="pyai_caching"):
        assert await cached_agent_run(agent, ASK, "t", semantic=semantic, **store) == "answer"
        assert await cached_agent_run(agent, PARAPHRASE, "t", semantic=semantic, **store) == "answer"
    assert counter.calls == 2
    assert calls >= 2
    warnings = [r for r in caplog.records if "embedder" in r.getMessage()]
    assert len(warnings) == 1, "logged once per outage, not once per call"
    assert "embedding service unavailable" in warnings[0].getMessage()
    # exact caching still works
    assert await cached_agent_run(agent, ASK, "t", semantic=semantic, **store) == "answer"
    assert counter.calls == 2


@pytest.mark.parametrize(
    "result",
    [[], [[1.0], [2.0]], [[0.0, 0.0]], [[float("nan"), 1.0]], [["a", "b"]], None],
    ids=["none", "two", "zero", "nan", "text", "not-a-list"],
)
async def test_an_embedder_returning_garbage_is_a_miss(result: Any) -> None:
    async def garbage(texts: list[str]) -> Any:
        return result

    counter = Counter(payload="answer")
    agent = make_agent(counter)
    semantic = SemanticCache(embedder=garbage, threshold=0.5)
    store = {"store": MemoryStore()}
    await cached_agent_run(agent, ASK, "t", semantic=semantic, **store)
    await cached_agent_run(agent, PARAPHRASE, "t", semantic=semantic, **store)
    assert counter.calls == 2


async def test_a_hanging_embedder_times_out_into_a_miss() -> None:
    async def hanging(texts: list[str]) -> list[list[float]]:
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    counter = Counter(payload="answer")
    agent = make_agent(counter)
    semantic = SemanticCache(embedder=hanging, threshold=0.9, timeout=0.05)
    assert await cached_agent_run(agent, ASK, "t", semantic=semantic, store=MemoryStore()) == "answer"
    assert counter.calls == 1


async def test_a_dead_redis_is_a_miss_like_any_cache_failure(redis_server_factory: Any) -> None:
    server = redis_server_factory()
    url = server.url()
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    await run(agent, ASK, {"redis_url": url}, semantic=bag())
    server.stop()
    _, expense = await run(agent, PARAPHRASE, {"redis_url": url}, semantic=bag())
    assert counter.calls == 2
    assert expense.semantic_matches == ()


# --- two processes, one Redis ------------------------------------------------------------------------------

_CHILD = textwrap.dedent(
    """
    import asyncio, json, sys
    sys.path[:0] = [{tests!r}, {semantic!r}]
    from _agents import Counter, make_agent
    from _embedders import BagOfWordsModel
    from pydantic_ai import Embedder
    from pyai_caching import SemanticCache, cached_agent_run

    async def main():
        args = json.loads(sys.argv[1])
        counter = Counter(payload=args["payload"])
        agent = make_agent(counter, instructions="You are a support bot.")
        semantic = SemanticCache(embedder=Embedder(BagOfWordsModel()), threshold=0.9)
        expenses = []
        output = await cached_agent_run(
            agent, args["prompt"], "faq", redis_url=args["url"], semantic=semantic, expense_hook=expenses.append
        )
        matches = [m.matched_prompt for m in expenses[-1].semantic_matches]
        print(json.dumps({{"calls": counter.calls, "output": output, "matched": matches}}))

    asyncio.run(main())
    """
)


def _child(url: str, prompt: str, payload: str) -> dict[str, Any]:
    code = _CHILD.format(tests=str(ROOT / "tests"), semantic=str(ROOT / "tests" / "semantic"))
    proc = subprocess.run(
        [sys.executable, "-c", code, json.dumps({"url": url, "prompt": prompt, "payload": payload})],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


async def test_two_processes_share_the_index_through_redis(redis_url: str) -> None:
    counter = Counter(payload="parent answer")
    agent = make_agent(counter, instructions="You are a support bot.")
    store = {"redis_url": redis_url}
    # the parent records ASK and loads the context's index into its memory
    await run(agent, ASK, store, semantic=bag())
    _, expense = await run(agent, PARAPHRASE, store, semantic=bag())
    assert counter.calls == 1
    assert len(expense.semantic_matches) == 1

    # a new process finds the parent's prompt by meaning
    child = await asyncio.to_thread(_child, redis_url, "Please recover my password", "child answer")
    assert child == {"calls": 0, "output": "parent answer", "matched": [ASK]}

    # a new process records a new prompt; the parent's in-memory index picks it up on its next lookup
    child = await asyncio.to_thread(_child, redis_url, OTHER, "refund answer")
    assert child == {"calls": 1, "output": "refund answer", "matched": []}
    output, expense = await run(agent, "refund rules?", store, semantic=bag())
    assert output == "refund answer"
    assert counter.calls == 1
    assert [m.matched_prompt for m in expense.semantic_matches] == [OTHER]


async def test_the_redis_index_is_a_capped_expiring_stream(redis_url: str, redis_client: redis.Redis) -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    await run(agent, ASK, {"redis_url": redis_url}, semantic=bag(), ttl=60)
    (stream,) = list(redis_client.scan_iter("pyai_caching:default:sem:*"))
    assert redis_client.type(stream) == b"stream"
    assert 0 < redis_client.pttl(stream) <= 60_000
    assert stream.decode().endswith("}")
    assert ":sem:{" in stream.decode()


# --- configuration -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"threshold": 0}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"threshold": float("nan")}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"max_candidates": 0}, "max_candidates"),
        ({"max_entries": 0}, "max_entries"),
        ({"timeout": 0}, "timeout"),
        ({"name": ""}, "name"),
        ({"index": "hnsw"}, "index"),
        ({"accept_hits": "no"}, "accept_hits"),
    ],
)
def test_bad_configuration_names_the_argument(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        SemanticCache(embedder=bag_of_words_function, **kwargs)


@pytest.mark.parametrize("embedder", [42, "text-embedding-3-small", None])
def test_a_bad_embedder_is_a_configuration_error(embedder: Any) -> None:
    with pytest.raises(ConfigurationError, match="embedder"):
        SemanticCache(embedder=embedder)


def test_a_model_name_becomes_an_embedder() -> None:
    semantic = SemanticCache(embedder="openai:text-embedding-3-small")  # nothing is contacted until used
    assert semantic.threshold == 0.95


async def test_bad_semantic_arguments_fail_before_any_model_call() -> None:
    counter = Counter()
    agent = make_agent(counter)
    with pytest.raises(ConfigurationError, match="semantic"):
        await cached_agent_run(agent, ASK, "t", store=MemoryStore(), semantic=0.95)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="accept_semantic"):
        await cached_agent_run(agent, ASK, "t", store=MemoryStore(), semantic=bag(), accept_semantic="no")  # type: ignore[arg-type]
    assert counter.calls == 0


# --- reporting ---------------------------------------------------------------------------------------------


async def test_semantic_hits_are_counted_in_the_metrics() -> None:
    from pyai_caching.observability import metrics

    counter = Counter(payload="answer")
    agent = make_agent(counter)
    store = {"store": MemoryStore(), "namespace": "metrics-semantic"}
    before = metrics.snapshot().by_namespace.get("metrics-semantic")
    assert before is None or before.semantic_hits == 0
    await run(agent, ASK, store, semantic=bag())
    await run(agent, PARAPHRASE, store, semantic=bag())
    await run(agent, ASK, store, semantic=bag())  # an exact (run-level) hit
    counters = metrics.snapshot().by_namespace["metrics-semantic"]
    assert (counters.hits, counters.semantic_hits, counters.misses) == (2, 1, 1)
    assert counters.to_dict()["semantic_hits"] == 1


async def test_a_semantic_hit_marks_the_model_request_span() -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from pydantic_ai.models.instrumented import InstrumentationSettings

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    agent.instrument = InstrumentationSettings(tracer_provider=provider)
    store = {"store": MemoryStore()}
    await run(agent, ASK, store, semantic=bag())
    exporter.clear()
    await run(agent, PARAPHRASE, store, semantic=bag())
    marked = [s for s in exporter.get_finished_spans() if (s.attributes or {}).get("pyai_caching.semantic")]
    assert len(marked) == 1
    attributes = marked[0].attributes or {}
    assert attributes["pyai_caching.semantic.similarity"] == pytest.approx(1.0)
    assert attributes["pyai_caching.hit"] is True
    # Our attributes never carry the prompt (pydantic-ai's own request span does, per its `include_content`).
    ours = {k: v for k, v in attributes.items() if k.startswith("pyai_caching")}
    assert ours
    assert not any(ASK in str(v) or PARAPHRASE in str(v) for v in ours.values())


async def test_a_deleted_index_forgets_its_prompts_in_every_process(redis_url: str, redis_client: redis.Redis) -> None:
    counter = Counter(payload="answer")
    agent = make_agent(counter)
    store = {"redis_url": redis_url}
    await run(agent, ASK, store, semantic=bag())
    await run(agent, PARAPHRASE, store, semantic=bag())  # loads the index into this process
    assert counter.calls == 1
    (stream,) = list(redis_client.scan_iter("pyai_caching:default:sem:*"))
    redis_client.delete(stream)  # the entries stay; the index is gone
    await run(agent, "Please recover my password", store, semantic=bag())
    assert counter.calls == 2


def test_without_numpy_the_error_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import pyai_caching.semantic.vectors as semantic_module

    monkeypatch.setitem(sys.modules, "numpy", None)  # what `import numpy` sees when numpy is not installed
    monkeypatch.setattr(semantic_module, "_np", None)
    with pytest.raises(ImportError, match=r"pip install 'pyai-caching\[semantic\]'"):
        SemanticCache(embedder=bag_of_words_function)
