"""The request-level cache: a `WrapperModel` around the model that serves each attempt.

`ResponseCache.get_wrapper_model` puts a `CachingModel` around the model of every attempt at a model request.
pydantic-ai calls it after every `before_model_request` and `prepare_model_request` hook and every history
processor has run, and with the model that actually sends the attempt (a `ModelFallback` candidate, a
`SelectModel` choice, an `agent.override(model=...)`): so the request a `CachingModel` receives is the request the
model receives, and its key (see `pyai_caching.engine.keys`) is taken from exactly that. A key taken any earlier would
miss the changes those hooks make, and could serve one tenant's answer to another.

On a hit the stored `ModelResponse` is returned as the model's answer; pydantic-ai then runs everything after the
model (`after_model_request` hooks, output validation, output validators and functions, tools) exactly as on a miss.
A streamed miss also records the events the model streamed, and a streamed hit replays them (`engine.stream_replay`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncGenerator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from pydantic_ai.messages import ModelMessage, ModelResponse
from pydantic_ai.models import Model, ModelRequestParameters, StreamedResponse
from pydantic_ai.models.wrapper import WrapperModel
from pydantic_ai.settings import ModelSettings
from pydantic_ai.tools import RunContext

from pyai_caching.engine import overrides as _overrides
from pyai_caching.engine import ports
from pyai_caching.engine.access import StoreAccess, fresh_response
from pyai_caching.engine.canonical import CanonicalRequest, canonical_request, verify_direct_path
from pyai_caching.engine.context import CallRecord
from pyai_caching.engine.entries import EntryMeta, ResponseEntry
from pyai_caching.engine.flight import Fill
from pyai_caching.engine.identity import UNKEYABLE_MODEL
from pyai_caching.engine.keys import KeyKind, entry_key, request_digest
from pyai_caching.engine.pai_compat import current_run_context
from pyai_caching.engine.stream_replay import StreamRecorder, hit_stream
from pyai_caching.exceptions import CacheMissError
from pyai_caching.types import CacheMode

if TYPE_CHECKING:
    from pyai_caching.engine.ports import CacheView

__all__ = ["CachingModel"]

logger = logging.getLogger("pyai_caching")


@dataclass
class _Request:
    """One attempt at a model request, as this cache sees it."""

    access: StoreAccess
    mode: CacheMode
    namespace: str
    record: CallRecord | None
    label: str
    canonical: CanonicalRequest | None = None
    key: str = ""
    probe: Any = None
    """The semantic cache's probe of an exact miss, handed to `remember` after the model answered."""


class CachingModel(WrapperModel):
    """Answers a request from the cache when the same request was answered before; otherwise sends it and stores
    the answer. Put around the serving model by `ResponseCache`; not meant to be built directly."""

    def __init__(self, wrapped: Model, *, served: Model, cache: CacheView) -> None:
        super().__init__(wrapped)
        self._served = served
        self._cache = cache

    def _begin(
        self, messages: list[ModelMessage], settings: ModelSettings | None, params: ModelRequestParameters
    ) -> _Request:
        cache = self._cache
        access, mode, namespace = cache.access, cache.resolved_mode, cache.resolved_namespace
        override = _overrides.active()
        if override is not None:  # a test cassette (pyai_caching.pytest_plugin) replaces the store and the mode
            access, mode, namespace = override.access, override.mode, override.namespace or namespace
        served = self._served
        request = _Request(access, mode, namespace, cache.own_record(), f"{served.system}:{served.model_name}")
        if request.record is not None:
            request.record.models.append(request.label)
        if mode is not CacheMode.BYPASS:
            request.canonical = canonical_request(served, messages, settings, params)
            if request.canonical.header["model"]["config"] == UNKEYABLE_MODEL:
                _warn_unkeyable(served)
                request.mode = CacheMode.BYPASS
                return request
            request.key = entry_key(
                namespace, KeyKind.REQUEST, request_digest(request.canonical, namespace, extra=cache.key_salt)
            )
            if request.record is not None and request.record.first_request is None:
                request.record.first_request = request.canonical
        return request

    async def _lookup(self, request: _Request) -> ResponseEntry | None:
        """The stored answer to `request`, if any (exact first, then by meaning); raises on a read-only miss."""
        if not request.mode.reads:
            return None
        assert request.canonical is not None
        started = time.time_ns()
        entry = await request.access.get_response(request.key, request.record)
        semantic = self._cache.semantic if _overrides.active() is None else None
        if entry is None and semantic is not None:
            entry, request.probe = await semantic.lookup(
                self._cache, request.access, request.namespace, request.canonical, request.record, request.label
            )
        saved = self._saved(request, entry)
        ports.observer().request_lookup(self._cache, _run_context(), request.key, request.label, started, entry, saved)
        if entry is None and ports.miss_listeners:
            _tell_miss(self._cache, request)
        if entry is None and request.mode is CacheMode.READ_ONLY:
            hint = _explain_miss(request.access, request.canonical) or (
                " Run once with cache_mode='read_write' to record it."
            )
            raise CacheMissError(
                f"no cached response for this request (key {request.key}) and the cache is read-only, so the model "
                f"({request.label}) was not called.{hint}",
                key=request.key,
            )
        return entry

    def _saved(self, request: _Request, entry: ResponseEntry | None) -> Decimal | None:
        """What serving `entry` saves (priced by the capability's one rule), or `None` for a miss or no price."""
        if entry is None:
            return None
        return self._cache.saved_cost(request.label, entry.response.usage, entry.meta.cost)

    def _hit(self, request: _Request, entry: ResponseEntry) -> ModelResponse:
        logger.debug("hit %s (%s)", request.key, request.label)
        _count_hit(request.record, entry, self._saved(request, entry))
        return fresh_response(entry)

    async def _store(
        self,
        request: _Request,
        fill: Fill,
        messages: list[ModelMessage],
        response: ModelResponse,
        cost: Any,
        stream: dict[str, Any] | None = None,
    ) -> bool:
        """Store the model's answer (and index it for the semantic cache); whether it was stored."""
        verify_direct_path(messages)
        if not request.mode.writes or response.state != "complete":
            return False
        assert request.canonical is not None
        entry = ResponseEntry(
            meta=EntryMeta(namespace=request.namespace, model=request.label, task=self._cache.task_name, cost=cost),
            request=_displayable(request.canonical.to_json_obj()),
            response=response,
            stream=stream,
        )
        stored = await fill.put_entry(entry)
        semantic = self._cache.semantic if _overrides.active() is None else None
        if semantic is not None:
            await semantic.remember(
                request.access, request.namespace, request.canonical, request.key, request.probe, request.record
            )
        return stored

    def _fill(self, request: _Request) -> Fill:
        # Stampede protection (`pyai_caching.engine.flight`): of identical concurrent misses, in this process and in the
        # processes sharing the store's locks, one calls the model and the others wait for its entry.
        return Fill(
            request.access,
            request.key,
            request.record,
            wait=request.mode is CacheMode.READ_WRITE,
            lock_ttl=self._cache.lock_ttl,
        )

    def _waited(self, request: _Request, fill: Fill) -> None:
        if fill.waited is not None:
            saved = self._saved(request, fill.entry)
            ports.observer().stampede_wait(
                self._cache, _run_context(), request.key, request.label, fill.waited, fill.entry, saved
            )

    def _sent(self, request: _Request, response: ModelResponse) -> Any:
        cost = self._cache.price(self._served, response)
        _count_miss(request.record, response, cost)
        if request.mode is not CacheMode.BYPASS:  # a bypassed request is not the cache's business
            ports.observer().request_cost(self._cache, _run_context(), request.label, cost)
        return cost

    async def request(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
    ) -> ModelResponse:
        request = self._begin(messages, model_settings, model_request_parameters)
        if request.mode is CacheMode.BYPASS:
            async with self._cache.spending(request.record, _run_context()) as charge:
                response = await self.wrapped.request(messages, model_settings, model_request_parameters)
                charge.settle(self._sent(request, response), response.usage)
            return response
        entry = await self._lookup(request)
        if entry is not None:
            return self._hit(request, entry)
        logger.debug("miss %s (%s)", request.key, request.label)
        async with self._fill(request) as fill:
            self._waited(request, fill)
            if fill.entry is not None:
                return self._hit(request, fill.entry)
            async with self._cache.spending(request.record, _run_context()) as charge:
                started = time.monotonic()
                response = await self.wrapped.request(messages, model_settings, model_request_parameters)
                cost = self._sent(request, response)
                charge.settle(cost, response.usage)
            if await self._store(request, fill, messages, response, cost):
                logger.debug("stored %s after %.1f ms", request.key, (time.monotonic() - started) * 1000)
        return response

    @asynccontextmanager
    async def request_stream(
        self,
        messages: list[ModelMessage],
        model_settings: ModelSettings | None,
        model_request_parameters: ModelRequestParameters,
        run_context: RunContext[Any] | None = None,
    ) -> AsyncGenerator[StreamedResponse]:
        request = self._begin(messages, model_settings, model_request_parameters)
        entry = None if request.mode is CacheMode.BYPASS else await self._lookup(request)
        if entry is not None:
            yield hit_stream(entry.stream, self._hit(request, entry), model_request_parameters, self._cache.replay_pace)
            return
        if request.mode is CacheMode.BYPASS:
            async with self._cache.spending(request.record, run_context or _run_context()) as charge:
                async with self.wrapped.request_stream(
                    messages, model_settings, model_request_parameters, run_context
                ) as stream:
                    yield stream
                response = stream.get()
                charge.settle(self._sent(request, response), response.usage)
            return
        async with self._fill(request) as fill:
            self._waited(request, fill)
            if fill.entry is not None:
                hit = self._hit(request, fill.entry)
                yield hit_stream(fill.entry.stream, hit, model_request_parameters, self._cache.replay_pace)
                return
            async with self._cache.spending(request.record, run_context or _run_context()) as charge:
                async with self.wrapped.request_stream(
                    messages, model_settings, model_request_parameters, run_context
                ) as stream:
                    recorder = StreamRecorder(stream) if request.mode.writes else None
                    yield stream
                response = stream.get()
                cost = self._sent(request, response)
                charge.settle(cost, response.usage)
            events = None if recorder is None else recorder.finish(response, model_request_parameters)
            await self._store(request, fill, messages, response, cost, events)


def _displayable(value: Any) -> Any:
    """The request record as a person reads it: text that is not valid UTF-8 (a lone surrogate, which `agent.run`
    accepts in a prompt) shown escaped. Only the record changes; the key is taken from the exact text."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {k: _displayable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_displayable(v) for v in value]
    return value


_warned_unkeyable: set[str] = set()


def _warn_unkeyable(model: Model) -> None:
    name = type(model).__qualname__
    if name not in _warned_unkeyable:
        _warned_unkeyable.add(name)
        logger.warning(
            "not caching requests of %s: it holds state that cannot be part of a key (an object, not plain data), "
            "so no stored answer can be shown to fit it; give it plain attributes to make it cacheable",
            name,
        )


def _run_context() -> RunContext[Any] | None:
    context: RunContext[Any] | None = current_run_context()
    return context


def _explain_miss(access: StoreAccess, canonical: CanonicalRequest) -> str | None:
    """The store's own explanation of a miss (`CassetteStore.explain_miss`: nearest entry and diff), if it has one."""
    explain = getattr(access.store, "explain_miss", None)
    if not callable(explain):
        return None
    try:
        text = explain(canonical.to_json_obj())
    except Exception:
        logger.debug("%s could not explain a miss", access.store.description, exc_info=True)
        return None
    return f"\n{text}" if isinstance(text, str) and text else None


def _tell_miss(cache: CacheView, request: _Request) -> None:
    assert request.canonical is not None
    for listener in ports.miss_listeners:
        try:
            listener(cache, request.key, request.canonical, request.label)
        except Exception:  # a listener must never break a call; its own tests show its bugs
            logger.exception("a miss listener failed (%r); the call goes on", listener)


def _count_hit(record: CallRecord | None, entry: ResponseEntry, saved: Decimal | None) -> None:
    if record is not None:
        record.hits += 1
        record.saved_usage.incr(entry.response.usage)
        record.saved_usage.requests += 1
        if saved is None:
            record.unpriced_hits += 1
        else:
            record.saved_cost += saved


def _count_miss(record: CallRecord | None, response: ModelResponse, cost: Any) -> None:
    if record is not None:
        record.misses += 1
        record.usage.incr(response.usage)
        record.usage.requests += 1
        if cost is None:
            record.unpriced_requests += 1
        else:
            record.cost += cost
