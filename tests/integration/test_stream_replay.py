"""Streamed hits replay the recorded events: entries, old entries, damaged events, pacing, cassettes, scrubbing.

The delta-by-delta comparison of uncached, miss and hit on every surface and store is in
`tests/differential/test_streamed_hits.py`; these tests pin down the rest of the feature.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage
from pydantic_ai.models.function import AgentInfo, DeltaThinkingPart, FunctionModel
from pydantic_ai.profiles import ModelProfile
from pydantic_ai.usage import RequestUsage

from pyai_caching import ResponseCache
from pyai_caching.exceptions import ConfigurationError
from pyai_caching.stores import CassetteStore, LocalStore, MemoryStore, Store

HELLO = ("Hello ", "there, ", "how are ", "you ", "today?")


@dataclass
class Chunks:
    """A streamed model that yields fixed text chunks (after `gap` seconds each) and counts its calls."""

    chunks: Sequence[str] = HELLO
    gap: float = 0.0
    think: bool = False
    calls: int = 0

    async def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[Any]:
        self.calls += 1
        if self.think:
            yield {0: DeltaThinkingPart(content="Hmm, ")}
            yield {0: DeltaThinkingPart(content="let me see.")}
        for chunk in self.chunks:
            if self.gap:
                await asyncio.sleep(self.gap)
            yield chunk

    def answer(self, messages: list[ModelMessage], info: AgentInfo) -> Any:
        from pydantic_ai.messages import ModelResponse, TextPart

        self.calls += 1
        return ModelResponse(parts=[TextPart("".join(self.chunks))])


def agent(model: Chunks, **kwargs: Any) -> Agent[None, str]:
    return Agent(FunctionModel(model.answer, stream_function=model, model_name="chunks", **kwargs))


async def deltas(model: Chunks, cache: ResponseCache | None, prompt: str = "hi", **kwargs: Any) -> list[str]:
    caps = [] if cache is None else [cache]
    async with agent(model, **kwargs).run_stream(prompt, capabilities=caps) as stream:
        return [d async for d in stream.stream_text(delta=True, debounce_by=None)]


async def arrivals(model: Chunks, cache: ResponseCache) -> tuple[list[str], list[float]]:
    """The text deltas of a streamed run and when each arrived (seconds since the run started)."""
    started = time.perf_counter()
    seen: list[str] = []
    times: list[float] = []
    async with agent(model).run_stream("hi", capabilities=[cache]) as stream:
        async for delta in stream.stream_text(delta=True, debounce_by=None):
            seen.append(delta)
            times.append(time.perf_counter() - started)
    return seen, times


@dataclass
class Raw:
    """The one entry of a store, as JSON."""

    store: Store
    keys: list[str] = field(default_factory=list)

    async def entry(self) -> tuple[str, dict[str, Any]]:
        self.keys = [k async for k in self.store.scan("")]
        [key] = [k for k in self.keys if ":r:" in k]
        raw = await self.store.get(key)
        assert raw is not None
        return key, json.loads(raw)

    async def put(self, key: str, entry: dict[str, Any]) -> None:
        await self.store.set(key, json.dumps(entry).encode(), ttl=None)


# --- what is stored -------------------------------------------------------------------------------------------


async def test_a_streamed_miss_stores_its_deltas_in_a_version_2_entry() -> None:
    store = MemoryStore()
    model = Chunks(think=True)
    assert await deltas(model, ResponseCache(store=store)) == list(HELLO)
    _, entry = await Raw(store).entry()
    assert entry["version"] == 2
    events = entry["stream"]["events"]
    assert entry["stream"]["special_tokens"] is False
    # part starts in full, then each delta as [gap, part index, text] (a thinking delta tagged "k")
    assert events[0][1]["event_kind"] == "part_start"
    assert events[0][1]["part"]["content"] == "Hmm, "
    assert events[1][1:] == [0, "let me see.", "k"]
    assert events[2][1]["part"] == {**events[2][1]["part"], "content": "Hello ", "part_kind": "text"}
    assert [e[1:] for e in events[3:]] == [[1, "there, "], [1, "how are "], [1, "you "], [1, "today?"]]
    assert all(isinstance(e[0], float | int) and e[0] >= 0 for e in events)


async def test_stored_deltas_are_small() -> None:
    store = MemoryStore()
    words = tuple(f"w{i} " for i in range(300))
    await deltas(Chunks(chunks=words), ResponseCache(store=store))
    _, entry = await Raw(store).entry()
    stream = json.dumps(entry["stream"])
    text = "".join(words)
    # deltas, not snapshots: the stream holds the text once, plus a few bytes per delta
    assert stream.count("w299") == 1
    assert len(stream) < len(text) + 25 * len(words) + 1000, len(stream)


async def test_a_non_streamed_miss_stores_a_version_1_entry_without_events() -> None:
    store = MemoryStore()
    model = Chunks()
    result = await agent(model).run("hi", capabilities=[ResponseCache(store=store)])
    assert result.output == "".join(HELLO)
    _, entry = await Raw(store).entry()
    assert entry["version"] == 1
    assert "stream" not in entry, "entries without events read the same in earlier releases"


async def test_events_that_would_make_the_entry_too_large_are_left_out() -> None:
    words = tuple(f"word{i} " for i in range(200))
    sized = MemoryStore()
    await deltas(Chunks(chunks=words), ResponseCache(store=sized))
    _, entry = await Raw(sized).entry()
    with_events = len(json.dumps(entry))
    del entry["stream"]
    without = len(json.dumps(entry))
    assert without < with_events // 2

    store = MemoryStore()
    model = Chunks(chunks=words)
    limit = (with_events + without) // 2
    assert await deltas(model, ResponseCache(store=store, max_entry_bytes=limit)) == list(words)
    _, entry = await Raw(store).entry()
    assert entry["version"] == 1
    assert "stream" not in entry
    assert await deltas(model, ResponseCache(store=store, max_entry_bytes=limit)) == ["".join(words)]
    assert model.calls == 1


# --- entries without usable events: one chunk, the right output -------------------------------------------------


@pytest.mark.parametrize("how", ["earlier release", "non-streamed miss"])
async def test_an_entry_without_events_replays_as_one_chunk(how: str, tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "cache")
    model = Chunks()
    raw = Raw(store)
    if how == "earlier release":
        await deltas(model, ResponseCache(store=store))
        key, entry = await raw.entry()
        del entry["stream"]
        entry["version"] = 1
        await raw.put(key, entry)
    else:
        await agent(model).run("hi", capabilities=[ResponseCache(store=store)])
    calls = model.calls
    assert await deltas(model, ResponseCache(store=store)) == ["".join(HELLO)]
    assert model.calls == calls


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda events: events.__setitem__(3, [0.0, 1, "THERE, "]), id="a delta that is not the text"),
        pytest.param(lambda events: events.pop(4), id="a delta missing"),
        pytest.param(lambda events: events.insert(0, [0.0, 7, "x"]), id="a delta before its part"),
        pytest.param(lambda events: events.append([-1.0, 1, "!"]), id="a negative gap"),
        pytest.param(lambda events: events.append(["soon", 1, "!"]), id="not a number"),
        pytest.param(lambda events: events.append([0.0, {"event_kind": "nope"}]), id="an unknown event"),
    ],
)
async def test_damaged_events_replay_as_one_chunk_with_a_warning(damage: Any, caplog: pytest.LogCaptureFixture) -> None:
    store = MemoryStore()
    model = Chunks(think=True)
    await deltas(model, ResponseCache(store=store))
    raw = Raw(store)
    key, entry = await raw.entry()
    damage(entry["stream"]["events"])
    await raw.put(key, entry)
    calls = model.calls
    with caplog.at_level(logging.WARNING, logger="pyai_caching"):
        async with agent(model).run_stream("hi", capabilities=[ResponseCache(store=store)]) as stream:
            seen = [d async for d in stream.stream_text(delta=True, debounce_by=None)]
            output = await stream.get_output()
    assert seen == ["".join(HELLO)]
    assert output == "".join(HELLO)
    assert model.calls == calls
    assert "replaying a streamed hit as one chunk" in caplog.text


async def test_signed_entries_keep_their_events() -> None:
    store = MemoryStore()
    model = Chunks()
    assert await deltas(model, ResponseCache(store=store, secret="a-signing-secret-of-32-bytes!!!!")) == list(HELLO)
    assert await deltas(model, ResponseCache(store=store, secret="a-signing-secret-of-32-bytes!!!!")) == list(HELLO)
    assert model.calls == 1


async def test_the_final_response_of_a_hit_is_the_stored_one() -> None:
    store = MemoryStore()
    model = Chunks(think=True)
    async with agent(model).run_stream("hi", capabilities=[ResponseCache(store=store)]) as stream:
        await stream.get_output()
        miss = stream.all_messages()[-1]
    async with agent(model).run_stream("hi", capabilities=[ResponseCache(store=store)]) as stream:
        await stream.get_output()
        hit = stream.all_messages()[-1]
    assert model.calls == 1
    assert hit.state == "complete"
    # everything but the usage (a hit bills nothing) and the ids of the run
    same = {"usage": RequestUsage(), "run_id": None, "conversation_id": None}
    assert replace(hit, **same) == replace(miss, **same)
    assert miss.usage.output_tokens > 0


async def test_a_hit_whose_consumer_stops_early_leaves_the_entry_intact() -> None:
    store = MemoryStore()
    model = Chunks()
    await deltas(model, ResponseCache(store=store))
    async with agent(model).run_stream("hi", capabilities=[ResponseCache(store=store)]) as stream:
        async for delta in stream.stream_text(delta=True, debounce_by=None):
            assert delta == "Hello "
            break
    assert await deltas(model, ResponseCache(store=store)) == list(HELLO)
    assert model.calls == 1


async def test_concurrent_identical_streamed_misses_call_the_model_once_and_all_stream() -> None:
    store = MemoryStore()
    model = Chunks(gap=0.01)
    results = await asyncio.gather(*(deltas(model, ResponseCache(store=store)) for _ in range(4)))
    assert model.calls == 1
    assert results == [list(HELLO)] * 4


async def test_special_tokens_are_restored_as_on_the_miss() -> None:
    # A model whose requests carry special tokens broken by a joiner copies the joiner into its answer;
    # pydantic-ai removes it from the stream. The replay must give the same deltas.
    profile = ModelProfile(may_tokenize_special_tokens_in_content=True)
    chunks = ("Use <", "\u200d|im_", "start|> to ", "begin a <\u200dstart_of", "_turn> turn.")
    plain = await deltas(Chunks(chunks=chunks), None, profile=profile)
    store = MemoryStore()
    model = Chunks(chunks=chunks)
    miss = await deltas(model, ResponseCache(store=store), profile=profile)
    hit = await deltas(model, ResponseCache(store=store), profile=profile)
    assert model.calls == 1
    assert "".join(plain) == "Use <|im_start|> to begin a <start_of_turn> turn."
    assert miss == plain
    assert hit == plain
    _, entry = await Raw(store).entry()
    assert entry["stream"]["special_tokens"] is True


# --- pacing ---------------------------------------------------------------------------------------------------


async def test_replay_pace_scales_the_recorded_gaps() -> None:
    store = MemoryStore()
    model = Chunks(gap=0.08)
    await deltas(model, ResponseCache(store=store))
    _, entry = await Raw(store).entry()
    gaps = [e[0] for e in entry["stream"]["events"]]
    assert len(gaps) == 5
    assert all(g >= 0.07 for g in gaps), gaps  # the model's own time for each chunk

    fast, fast_times = await arrivals(model, ResponseCache(store=store))
    half, half_times = await arrivals(model, ResponseCache(store=store, replay_pace=0.5))
    full, full_times = await arrivals(model, ResponseCache(store=store, replay_pace=1.0))
    assert model.calls == 1
    assert fast == half == full == list(HELLO)

    def spacing(times: list[float]) -> list[float]:
        return [b - a for a, b in zip([0.0, *times], times, strict=False)]

    # Sleeps last at least what they were asked for: every delta comes no sooner than its scaled gap (a small
    # allowance for the clock), so a paced replay takes at least the scaled recorded time.
    for factor, times in ((0.5, half_times), (1.0, full_times)):
        for gap, spent in zip(gaps, spacing(times), strict=True):
            assert spent >= gap * factor - 0.005, (factor, gap, spent)
        assert times[-1] >= sum(gaps) * factor - 0.01
    # Unpaced, the replay does not wait for the recorded gaps (generous: under half of them).
    assert fast_times[-1] < sum(gaps) / 2


@pytest.mark.parametrize("value", [0, -1.0, True, float("inf"), float("nan"), "fast", [1.0]])
def test_replay_pace_must_be_a_positive_factor(value: Any) -> None:
    with pytest.raises(ConfigurationError) as caught:
        ResponseCache(store=MemoryStore(), replay_pace=value)
    message = str(caught.value)
    assert "replay_pace must be None" in message
    assert "positive factor of the recorded timing" in message


@pytest.mark.parametrize("value", [None, 1, 0.25, 3.0])
def test_replay_pace_accepts_none_and_positive_factors(value: Any) -> None:
    assert ResponseCache(store=MemoryStore(), replay_pace=value).replay_pace == value


# --- cassettes ------------------------------------------------------------------------------------------------


async def test_a_cassette_records_and_replays_the_deltas(tmp_path: Path) -> None:
    path = tmp_path / "cassette.json"
    model = Chunks(think=True)
    assert await deltas(model, ResponseCache(store=CassetteStore(path))) == list(HELLO)
    [entry] = json.loads(path.read_text())["entries"]
    assert entry["version"] == 2
    expected = [[1, "there, "], [1, "how are "], [1, "you "], [1, "today?"]]
    assert [e[1:] for e in entry["stream"]["events"][3:]] == expected
    replay = ResponseCache(store=CassetteStore(path), mode="read_only")
    assert await deltas(model, replay) == list(HELLO)
    assert model.calls == 1


async def test_a_secret_split_across_deltas_never_reaches_the_cassette(tmp_path: Path) -> None:
    path = tmp_path / "cassette.json"
    secret = "sk-proj-" + "A1b2C3d4E5f6G7h8" * 2
    chunks = ("Your key is ", secret[:10], secret[10:22], secret[22:], " - keep it safe.")
    model = Chunks(chunks=chunks)
    assert "".join(await deltas(model, ResponseCache(store=CassetteStore(path)))) == "".join(chunks)
    text = path.read_text()
    for fragment in (secret, secret[:10], secret[10:22], secret[22:]):
        assert fragment not in text
    [entry] = json.loads(text)["entries"]
    assert "stream" not in entry, "scrubbing changed the response: its deltas are dropped"
    assert entry["version"] == 1
    replayed = await deltas(model, ResponseCache(store=CassetteStore(path), mode="read_only"))
    assert replayed == ["Your key is <scrubbed> - keep it safe."]
    assert model.calls == 1


async def test_a_scrub_hook_that_changes_the_response_drops_the_deltas(tmp_path: Path) -> None:
    path = tmp_path / "cassette.json"

    def hide_names(entry: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps(entry).replace("there", "[name]"))

    model = Chunks()
    await deltas(model, ResponseCache(store=CassetteStore(path, scrub=hide_names)))
    [entry] = json.loads(path.read_text())["entries"]
    assert "stream" not in entry
    assert "there" not in path.read_text()
    replayed = await deltas(model, ResponseCache(store=CassetteStore(path), mode="read_only"))
    assert replayed == ["Hello [name], how are you today?"]


async def test_a_scrub_hook_that_leaves_the_response_alone_keeps_the_deltas(tmp_path: Path) -> None:
    path = tmp_path / "cassette.json"

    def drop_settings(entry: dict[str, Any]) -> None:
        entry["meta"]["task"] = None

    model = Chunks()
    await deltas(model, ResponseCache(store=CassetteStore(path, scrub=drop_settings)))
    [entry] = json.loads(path.read_text())["entries"]
    assert entry["version"] == 2
    assert entry["stream"]["events"]
    assert await deltas(model, ResponseCache(store=CassetteStore(path), mode="read_only")) == list(HELLO)
