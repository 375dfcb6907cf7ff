"""Streamed hits that stream: the events of a streamed miss are recorded with its response and replayed on a hit.

On a streamed miss, `StreamRecorder` watches the model's stream as the run consumes it: every event the model
produced (part starts, text / thinking / tool-call deltas, in order), with the time the model took for each. When
the stream completes, `StreamRecorder.finish` gives the events in their stored form, for `ResponseEntry.stream`
(such an entry is version 2; entries without events, version 1, are still read).

On a streamed hit, `hit_stream` hands pydantic-ai a `ReplayedStreamedResponse` that yields the recorded events in
order, so `run_stream` (`stream_text(delta=True)`, `stream_output`, `stream_response`), `run_stream_events` and
`iter` (`node.stream`) see the deltas they saw on the miss. pydantic-ai adds the part ends and the final-result
event itself, as on the miss, and the response the stream ends with is the stored one. Optional pacing
(`ResponseCache(replay_pace=...)`) sleeps between events: the recorded gap times the factor.

What is recorded are the model's own events, as `StreamedResponse._get_event_iterator` yields them (before
pydantic-ai's special-token restoration, which the replay applies again when the model's stream did): the recorder
replaces that method on the model's stream object, which is the stream pydantic-ai consumes, unchanged otherwise.

Stored form (JSON, kept small: deltas, never snapshots):

```json
"stream": {"special_tokens": false, "events": [
    [0.21, {"event_kind": "part_start", "index": 0, "part": {"part_kind": "text", "content": "Hello ", ...}}],
    [0.012, 0, "there, "],                 // a plain text delta: [gap, part index, text]
    [0.011, 1, "hmm", "k"],                // a plain thinking delta ("k") or tool-call arguments delta ("a")
    [0.009, {"event_kind": "part_delta", ...}]   // any other event, in full
]}
```

`gap` is the seconds the model took for the event (the time the run held the previous one is not counted; the
first event's counts from when the request was sent).

Consistency, checked twice: when recording, the stored events must rebuild exactly the stored response's parts
(otherwise no events are stored and a hit replays the response as one chunk, as before events were recorded);
when replaying, the decoded events must rebuild the stored response's parts again (a corrupt entry, or events
recorded by a pydantic-ai that built parts differently, replays as one chunk, with a warning).

Secrets: a cassette (`testing/cassette.py`) scrubs entries before writing them. A secret split across deltas is not
matched by any pattern, so `drop_scrubbed_stream` drops the recorded events of an entry whose response or events
scrubbing changed; its hits replay as one chunk. The events kept are those scrubbing left untouched, and they add
up to the response exactly, which scrubbing left untouched too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, replace
from datetime import datetime
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, TypeAdapter
from pydantic_ai.messages import (
    ModelResponse,
    ModelResponsePart,
    ModelResponseState,
    ModelResponseStreamEvent,
    PartDeltaEvent,
    PartStartEvent,
    TextPartDelta,
    ThinkingPartDelta,
    ToolCallPartDelta,
)
from pydantic_ai.models import CompletedStreamedResponse, ModelRequestParameters, StreamedResponse
from pydantic_ai.usage import RequestUsage
from pydantic_core import to_json

from pyai_caching.engine.entries import ResponseEntry
from pyai_caching.engine.pai_compat import ModelResponsePartsManager, StreamRestorer
from pyai_caching.exceptions import ConfigurationError

__all__ = [
    "ReplayedStreamedResponse",
    "StreamRecorder",
    "check_replay_pace",
    "drop_scrubbed_stream",
    "hit_stream",
    "recorded_events",
    "without_stream",
]

logger = logging.getLogger("pyai_caching")

_Gap = Annotated[float, Field(ge=0, allow_inf_nan=False)]
_Plain = tuple[_Gap, int, str]
_Tagged = tuple[_Gap, int, str, Literal["k", "a"]]
_Full = tuple[_Gap, ModelResponseStreamEvent]


@dataclass(kw_only=True)
class _StoredStream:
    """`ResponseEntry.stream`, validated (see the module docstring)."""

    events: list[_Plain | _Tagged | _Full]
    special_tokens: bool = False


Recorded = list[tuple[float, ModelResponseStreamEvent]]
"""Events with the seconds the model took for each, in the order it produced them."""


@lru_cache(maxsize=1)
def _stored_adapter() -> TypeAdapter[_StoredStream]:
    return TypeAdapter(_StoredStream)


@lru_cache(maxsize=1)
def _event_adapter() -> TypeAdapter[ModelResponseStreamEvent]:
    return TypeAdapter(ModelResponseStreamEvent)


@lru_cache(maxsize=1)
def _response_adapter() -> TypeAdapter[ModelResponse]:
    return TypeAdapter(ModelResponse)


def check_replay_pace(value: Any) -> float | None:
    """`replay_pace` must be `None` or a positive, finite factor."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ConfigurationError(
            f"replay_pace must be None (replay a streamed hit as fast as possible) or a positive factor of the "
            f"recorded timing (1.0 = as recorded, 0.5 = twice as fast), got {value!r}"
        )
    return float(value)


# --- recording ------------------------------------------------------------------------------------------------


class StreamRecorder:
    """Records the events of the model's `stream` as the run consumes it (see the module docstring).

    Built right after the model opened the stream, before pydantic-ai iterates it. A stream that was already
    iterated (or cannot be watched) is not recorded: `finish` then returns `None`.
    """

    def __init__(self, stream: StreamedResponse) -> None:
        self._stream = stream
        self._events: Recorded = []
        self._complete = False
        self._watching = False
        if stream._event_iterator is not None:  # another layer already started it: the events would be partial
            return
        produce: Callable[[], AsyncIterator[ModelResponseStreamEvent]] = stream._get_event_iterator
        try:
            # The instance attribute shadows the class's method: `StreamedResponse.__aiter__` calls
            # `self._get_event_iterator()`, so the run consumes the model's events through `_record`.
            setattr(stream, "_get_event_iterator", lambda: self._record(produce()))  # noqa: B010
        except (AttributeError, TypeError):  # pragma: no cover - a stream class with slots or a frozen one
            return
        self._watching = True

    async def _record(self, events: AsyncIterator[ModelResponseStreamEvent]) -> AsyncIterator[ModelResponseStreamEvent]:
        record = self._events.append
        # The first event's gap counts from when the request was sent (pydantic-ai notes it on the stream of the
        # model that sends it): the time to the first event is mostly spent opening the stream.
        sent = self._stream._request_start_ns
        started = time.perf_counter() if sent is None else sent / 1e9
        while True:
            try:
                event = await anext(events)
            except StopAsyncIteration:
                self._complete = True
                return
            record((time.perf_counter() - started, _pristine(event)))
            yield event
            started = time.perf_counter()

    def finish(self, response: ModelResponse, params: ModelRequestParameters) -> dict[str, Any] | None:
        """The recorded events in their stored form, or `None` when there is nothing faithful to store.

        `response` is what the stream ended with; the events must rebuild exactly its parts.
        """
        if not self._watching or not self._complete or response.state != "complete":
            return None
        special_tokens = self._stream._parts_manager.special_token_restorer is not None
        try:
            stored = {
                "events": [_compact(gap, event) for gap, event in self._events],
                "special_tokens": special_tokens,
            }
            decoded = _decode(stored)
            expected = _response_adapter().validate_json(_response_adapter().dump_json(response)).parts
            same = _rebuild(decoded, params, special_tokens) == expected
        except Exception as error:  # an event that cannot be stored or rebuilt: the entry keeps the response only
            # Only the error's type: its message may quote the model's text.
            logger.debug("not recording the stream of this response: %s", type(error).__name__)
            return None
        if not same:
            logger.debug("not recording the stream of this response: its events do not rebuild the response")
            return None
        return stored


def _pristine(event: ModelResponseStreamEvent) -> ModelResponseStreamEvent:
    """A copy of the event as the model produced it, without what pydantic-ai fills in on its way to the run (it
    fills that in again on a replay, and changes the event it passes on)."""
    if isinstance(event, PartStartEvent):
        return replace(event, previous_part_kind=None, canonical_system=None, origin=None)
    return replace(event, origin=None)


def _compact(gap: float, event: ModelResponseStreamEvent) -> list[Any]:
    gap = round(gap, 5)
    if type(event) is PartDeltaEvent:
        delta = event.delta
        if type(delta) is TextPartDelta and delta == TextPartDelta(content_delta=delta.content_delta):
            return [gap, event.index, delta.content_delta]
        if (
            type(delta) is ThinkingPartDelta
            and isinstance(delta.content_delta, str)
            and delta == ThinkingPartDelta(content_delta=delta.content_delta)
        ):
            return [gap, event.index, delta.content_delta, "k"]
        if (
            type(delta) is ToolCallPartDelta
            and isinstance(delta.args_delta, str)
            and delta == ToolCallPartDelta(args_delta=delta.args_delta)
        ):
            return [gap, event.index, delta.args_delta, "a"]
    return [gap, _event_adapter().dump_python(event, mode="json")]


# --- replaying ------------------------------------------------------------------------------------------------


def _decode(stored: Any) -> Recorded:
    """The events of `ResponseEntry.stream`; raises `ValidationError` for anything else."""
    # Through JSON, so that what JSON alone encodes (base64 bytes, dates) is read as on the rest of the entry.
    value = _stored_adapter().validate_json(to_json(stored))
    events: Recorded = []
    for item in value.events:
        if len(item) == 2:
            events.append((item[0], item[1]))
            continue
        gap, index, text, *tag = item
        kind = tag[0] if tag else None
        delta: TextPartDelta | ThinkingPartDelta | ToolCallPartDelta
        if kind is None:
            delta = TextPartDelta(content_delta=text)
        elif kind == "k":
            delta = ThinkingPartDelta(content_delta=text)
        else:
            delta = ToolCallPartDelta(args_delta=text)
        events.append((gap, PartDeltaEvent(index=index, delta=delta)))
    return events


def _special_tokens(stored: Any) -> bool:
    return isinstance(stored, dict) and stored.get("special_tokens") is True


def _rebuild(events: Recorded, params: ModelRequestParameters, special_tokens: bool) -> list[ModelResponsePart]:
    """The parts `events` add up to, as the replayed stream builds them."""
    manager = ModelResponsePartsManager(model_request_parameters=params)
    if special_tokens:
        manager.special_token_restorer = StreamRestorer()
    for _, event in events:
        manager.apply_event(event)
    return manager.get_parts()


def recorded_events(stored: Any, response: ModelResponse, params: ModelRequestParameters) -> Recorded | None:
    """The events stored with `response` (`ResponseEntry.stream`), decoded and checked; `None` without usable ones.

    Events that do not decode, or do not rebuild `response`'s parts exactly, are not used (a warning).
    """
    if stored is None:
        return None
    try:
        events = _decode(stored)
        same = _rebuild(events, params, _special_tokens(stored)) == response.parts
    except Exception as e:  # stored data: whatever fails to decode or to rebuild, the response is still served
        logger.warning(
            "replaying a streamed hit as one chunk: its recorded events are unreadable (%s)", type(e).__name__
        )
        return None
    if not same:
        logger.warning("replaying a streamed hit as one chunk: its recorded events do not add up to its response")
        return None
    return events


class ReplayedStreamedResponse(StreamedResponse):
    """A stored response streamed again from the events recorded when the model produced it.

    The events are yielded in order (after the recorded gap times `pace`, when pacing); pydantic-ai adds the part
    ends and the final-result event as on a live stream. Once the replay ends, `get()` is the stored response.
    """

    def __init__(
        self,
        response: ModelResponse,
        events: Recorded,
        *,
        model_request_parameters: ModelRequestParameters,
        pace: float | None = None,
        special_tokens: bool = False,
    ) -> None:
        super().__init__(model_request_parameters)
        self._response = response
        self._events = events
        self._pace = pace
        self.state = response.state
        self.canonical_system = response.canonical_system
        self.provider_response_id = response.provider_response_id
        self.provider_details = response.provider_details
        self.finish_reason = response.finish_reason
        self.metadata = response.metadata
        if special_tokens:
            self._parts_manager.special_token_restorer = StreamRestorer()

    async def _get_event_iterator(self) -> AsyncIterator[ModelResponseStreamEvent]:
        pace = self._pace
        for gap, event in self._events:
            if pace is not None and gap > 0:
                await asyncio.sleep(gap * pace)
            if self._cancelled:
                return
            self._parts_manager.apply_event(event)
            yield event

    async def close_stream(self) -> None:
        # Nothing to close: the replay stops at its next event once cancelled.
        pass

    def get(self) -> ModelResponse:
        if self._finished:
            response = replace(self._response, parts=list(self._response.parts))
        else:
            state: ModelResponseState = "interrupted" if self._cancelled else "incomplete"
            response = replace(self._response, parts=self._parts_manager.get_parts(), state=state)
        if self.failed_attempts:  # a `FallbackModel` that fell back to the model of this stream records them here
            response = replace(response, failed_attempts=[*self.failed_attempts, *(response.failed_attempts or [])])
        return response

    @property
    def usage(self) -> RequestUsage:
        return self._response.usage

    @property
    def model_name(self) -> str:
        return self._response.model_name or ""

    @property
    def provider_name(self) -> str | None:
        return self._response.provider_name

    @property
    def provider_url(self) -> str | None:
        return self._response.provider_url

    @property
    def timestamp(self) -> datetime:
        return self._response.timestamp


def hit_stream(
    stored: Any, response: ModelResponse, params: ModelRequestParameters, pace: float | None
) -> StreamedResponse:
    """The stream a streamed hit hands to pydantic-ai: the recorded events replayed, or the response as one chunk
    (an entry recorded without events: by a non-streamed request, or by an earlier release)."""
    events = recorded_events(stored, response, params)
    if events is None:
        return CompletedStreamedResponse(response, model_request_parameters=params, replay_events=True)
    return ReplayedStreamedResponse(
        response, events, model_request_parameters=params, pace=pace, special_tokens=_special_tokens(stored)
    )


def without_stream(entry: ResponseEntry) -> ResponseEntry:
    """`entry` without its recorded events (version 1): for an entry they would make too large to store."""
    return replace(entry, stream=None, version=1)


# --- scrubbing ------------------------------------------------------------------------------------------------


def drop_scrubbed_stream(original: dict[str, Any], scrubbed: dict[str, Any]) -> dict[str, Any]:
    """`scrubbed` without its recorded events when scrubbing changed its response or its events.

    A secret split across deltas matches no pattern, so deltas cannot be scrubbed safely: an entry scrubbing
    touched keeps only its (scrubbed) response, and its hits replay as one chunk.
    """
    if scrubbed.get("stream") is None:
        return scrubbed
    if scrubbed.get("response") == original.get("response") and scrubbed.get("stream") == original.get("stream"):
        return scrubbed
    logger.debug("dropping the recorded stream events of a scrubbed cassette entry")
    out = {k: v for k, v in scrubbed.items() if k != "stream"}
    if out.get("version") == 2:
        out["version"] = 1
    return out
