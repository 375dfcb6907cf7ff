"""Reading and writing entries through a store, failing open.

The cache must never make a call less reliable than calling the model directly: a store that is down, slow,
full or read-only is logged (once per outage, not once per call), counted, and the call goes on without it,
unless the caller asked for `on_cache_error="raise"`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from pydantic_ai.messages import ModelResponse

from ._context import CallRecord
from ._redact import redact_url_in_text
from ._serialization import (
    EntryDecodeError,
    ResponseEntry,
    RunEntry,
    decode_response_entry,
    decode_run_entry,
    encode_entry,
)
from .exceptions import CacheError
from .stores import Store

__all__ = ["OnCacheError", "StoreAccess", "cache_error_count"]

logger = logging.getLogger("pyai_caching")

OnCacheError = Literal["warn", "raise"]
"""What a failed cache operation does: `warn` (fail open, the default) or `raise` (`CacheError`)."""

T = TypeVar("T")

_health_lock = threading.Lock()
_failing: dict[str, bool] = {}
_error_counts: dict[str, int] = {}


def cache_error_count(store: str | None = None) -> int:
    """How many cache operations failed in this process (for one store description, or all)."""
    with _health_lock:
        if store is None:
            return sum(_error_counts.values())
        return _error_counts.get(store, 0)


def _report_failure(store: Store, operation: str, error: BaseException) -> None:
    name = store.description
    with _health_lock:
        _error_counts[name] = _error_counts.get(name, 0) + 1
        first = not _failing.get(name, False)
        _failing[name] = True
    if first:
        logger.warning(
            "pyai_caching: cache %s failed on %s (%s: %s); calls go on without the cache until it recovers",
            operation,
            name,
            type(error).__name__,
            _safe_message(error),
        )
    else:
        logger.debug("pyai_caching: cache %s failed on %s: %s", operation, name, type(error).__name__)


def _report_success(store: Store) -> None:
    name = store.description
    if _failing.get(name):
        with _health_lock:
            was = _failing.pop(name, False)
        if was:
            logger.warning("pyai_caching: cache on %s recovered; caching resumed", name)


def _safe_message(error: BaseException) -> str:
    """The error's message with anything URL-like that could hold a password redacted."""
    return redact_url_in_text(str(error))[:300]


@dataclass
class StoreAccess:
    """A store seen through one call's configuration (namespace, TTL, secret, error policy)."""

    store: Store
    """Where entries live."""
    ttl: float | None
    """Seconds an entry lives; `None` = forever."""
    on_cache_error: OnCacheError = "warn"
    """`warn` fails open; `raise` turns store errors into `CacheError`."""
    secret: bytes | None = None
    """HMAC secret: entries are signed, and entries with a bad signature are misses."""
    timeout: float | None = None
    """Upper bound in seconds for one cache operation (`None`: the store's own timeouts apply)."""

    async def _guard(self, operation: str, awaitable: Awaitable[T], record: CallRecord | None) -> tuple[bool, T | None]:
        try:
            if self.timeout is not None:
                result = await asyncio.wait_for(awaitable, self.timeout)
            else:
                result = await awaitable
        except asyncio.CancelledError:
            raise
        except Exception as error:
            if record is not None:
                record.cache_errors += 1
            _report_failure(self.store, operation, error)
            if self.on_cache_error == "raise":
                raise CacheError(
                    f"cache {operation} failed on {self.store.description}: {type(error).__name__}: "
                    f"{_safe_message(error)}",
                    operation=operation,
                    store=self.store.description,
                ) from None
            return False, None
        _report_success(self.store)
        return True, result

    async def get_raw(self, key: str, record: CallRecord | None = None) -> bytes | None:
        """The stored bytes, or `None` on a miss or a (reported) store failure."""
        _, raw = await self._guard("get", self.store.get(key), record)
        return raw

    async def put_raw(self, key: str, value: bytes, record: CallRecord | None = None) -> bool:
        """Store bytes; return whether it worked."""
        ok, _ = await self._guard("set", self.store.set(key, value, ttl=self.ttl), record)
        return ok

    async def get_response(self, key: str, record: CallRecord | None = None) -> ResponseEntry | None:
        """The request-level entry under `key`, or `None` (a corrupt entry is logged and is a miss)."""
        raw = await self.get_raw(key, record)
        if raw is None:
            return None
        try:
            return decode_response_entry(raw, secret=self.secret)
        except EntryDecodeError as e:
            logger.warning("pyai_caching: ignoring unreadable entry %s (%s); it will be overwritten", key, e)
            return None

    async def get_run(self, key: str, output_type: Any, record: CallRecord | None = None) -> RunEntry[Any] | None:
        """The run-level entry under `key`, decoded into `output_type`, or `None`."""
        raw = await self.get_raw(key, record)
        if raw is None:
            return None
        try:
            return decode_run_entry(raw, output_type, secret=self.secret)
        except EntryDecodeError as e:
            logger.warning("pyai_caching: ignoring unreadable entry %s (%s); it will be overwritten", key, e)
            return None

    async def put_entry(
        self, key: str, entry: ResponseEntry | RunEntry[Any], record: CallRecord | None = None, output_type: Any = None
    ) -> bool:
        """Encode and store an entry."""
        value = encode_entry(entry, secret=self.secret, output_type=output_type)
        return await self.put_raw(key, value, record)


def fresh_response(entry: ResponseEntry) -> ModelResponse:
    """The response to hand to pydantic-ai on a hit: a fresh object (decoded per hit) that bills nothing."""
    from pydantic_ai.usage import RequestUsage

    response = entry.response
    response.usage = RequestUsage()
    return response
