"""OpenTelemetry: cached calls add attributes to pydantic-ai's model-request spans, or open their own short span."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from _agents import Counter, make_agent
from _cli_support import PRICES, Person
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.instrumented import InstrumentationSettings
from pydantic_ai.usage import RequestUsage

from pyai_caching import MemoryStore, RedisStore, cached_agent_run

PROMPT = "Ada Lovelace, born 1815, secret-marker-7c1"


@pytest.fixture(scope="module")
def provider() -> TracerProvider:
    """The global SDK tracer provider (set once per process; reused if another test module set one)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    created = TracerProvider()
    trace.set_tracer_provider(created)
    return created


@pytest.fixture
def spans(provider: TracerProvider) -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    processor = SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    yield exporter
    processor.shutdown()


def ours(exporter: InMemorySpanExporter) -> list[tuple[str, dict[str, Any]]]:
    """Every finished span with `pyai_caching.*` attributes: (name, those attributes)."""
    found = []
    for span in exporter.get_finished_spans():
        attributes = {k: v for k, v in (span.attributes or {}).items() if k.startswith("pyai_caching.")}
        if attributes:
            found.append((span.name, attributes))
    return found


def dynamic_agent(counter: Counter) -> Agent[Any, Any]:
    agent = make_agent(counter, output_type=Person)

    @agent.system_prompt
    def _prompt() -> str:
        return "You extract people."

    return agent


async def digests(store: MemoryStore, kind: str) -> list[str]:
    return [key.split("{")[1][:12] async for key in store.scan("pyai_caching:") if f":{kind}:" in key]


async def test_lookup_spans_outside_an_instrumented_run(spans: InMemorySpanExporter) -> None:
    store = MemoryStore()
    agent = dynamic_agent(Counter())
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("user-request") as parent:
        for _ in range(2):
            await cached_agent_run(agent, PROMPT, "extract", store=store, custom_costs=PRICES)

    found = ours(spans)
    assert [name for name, _ in found] == ["pyai_caching.lookup", "pyai_caching.lookup"]
    (miss, hit) = (a for _, a in found)
    (prefix,) = await digests(store, "r")
    common = {
        "pyai_caching.level": "request",
        "pyai_caching.key_prefix": prefix,
        "pyai_caching.store": "memory",
        "pyai_caching.namespace": "default",
        "pyai_caching.task": "extract",
        "pyai_caching.model": "function:test-model",
    }
    assert {k: miss[k] for k in common} == common
    assert {k: hit[k] for k in common} == common
    assert (miss["pyai_caching.hit"], hit["pyai_caching.hit"]) == (False, True)
    assert hit["pyai_caching.cost_saved"] == pytest.approx(0.0006)
    assert "pyai_caching.cost_saved" not in miss
    assert miss["pyai_caching.wait_ms"] >= 0
    lookups: list[ReadableSpan] = [s for s in spans.get_finished_spans() if s.name == "pyai_caching.lookup"]
    assert all(s.parent is not None and s.parent.span_id == parent.get_span_context().span_id for s in lookups)
    # Never any content: no attribute holds the prompt.
    assert not any("secret-marker" in str(v) for _, a in found for v in a.values())


async def test_a_run_level_hit_opens_a_lookup_span(spans: InMemorySpanExporter) -> None:
    store = MemoryStore()
    agent = make_agent(Counter(), output_type=Person)
    for _ in range(2):
        await cached_agent_run(agent, PROMPT, "extract", store=store, custom_costs=PRICES)

    run_spans = [a for name, a in ours(spans) if a["pyai_caching.level"] == "run"]
    (prefix,) = await digests(store, "run")
    assert len(run_spans) == 1
    assert run_spans[0]["pyai_caching.hit"] is True
    assert run_spans[0]["pyai_caching.key_prefix"] == prefix
    assert run_spans[0]["pyai_caching.cost_saved"] == pytest.approx(0.0006)


async def test_an_instrumented_run_gets_attributes_on_its_model_request_spans(
    spans: InMemorySpanExporter, provider: TracerProvider
) -> None:
    store = MemoryStore()
    agent = dynamic_agent(Counter())
    agent.instrument = InstrumentationSettings(tracer_provider=provider)
    for _ in range(2):
        await cached_agent_run(agent, PROMPT, "extract", store=store, custom_costs=PRICES)

    found = ours(spans)
    assert [name for name, _ in found] == ["chat test-model", "chat test-model"]  # no extra span of ours
    miss, hit = (a for _, a in found)
    assert miss["pyai_caching.hit"] is False
    assert miss["pyai_caching.cost"] == pytest.approx(0.0006)
    assert hit["pyai_caching.hit"] is True
    assert hit["pyai_caching.cost_saved"] == pytest.approx(0.0006)
    assert "pyai_caching.cost" not in hit
    assert hit["pyai_caching.key_prefix"] == miss["pyai_caching.key_prefix"]


async def test_cache_failures_are_events_on_the_current_span(
    spans: InMemorySpanExporter, provider: TracerProvider, unused_tcp_port: int
) -> None:
    dead = RedisStore(f"redis://127.0.0.1:{unused_tcp_port}/0", connect_timeout=0.5)
    agent = dynamic_agent(Counter())
    agent.instrument = InstrumentationSettings(tracer_provider=provider)
    await cached_agent_run(agent, PROMPT, "faulty", store=dead)

    (chat,) = [s for s in spans.get_finished_spans() if s.name == "chat test-model"]
    events = [e for e in chat.events if e.name == "pyai_caching.error"]
    assert events
    assert events[0].attributes == {"pyai_caching.error.kind": "get:ConnectionError"}
    assert (chat.attributes or {})["pyai_caching.hit"] is False


async def test_a_stampede_wait_is_a_span_of_its_own(spans: InMemorySpanExporter) -> None:
    async def slow(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        await asyncio.sleep(0.2)
        part = ToolCallPart(info.output_tools[0].name, {"name": "Ada", "age": 36})
        return ModelResponse(parts=[part], usage=RequestUsage(input_tokens=100, output_tokens=20))

    agent = Agent(FunctionModel(slow, model_name="test-model"), output_type=Person)
    store = MemoryStore()
    await asyncio.gather(*(cached_agent_run(agent, PROMPT, "herd", store=store) for _ in range(3)))

    waits = [a for name, a in ours(spans) if name == "pyai_caching.stampede_wait"]
    assert len(waits) == 2
    assert all(a["pyai_caching.hit"] is True for a in waits)
    assert all(a["pyai_caching.stampede_wait_ms"] > 0 for a in waits)
