"""`MemoryStore`: a per-process store for tests and notebooks."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import KW_ONLY, dataclass, field

from pyai_caching.stores.base import DEFAULT_MAX_ENTRY_BYTES, EntryTooLargeError, check_max_entry_bytes

__all__ = ["MemoryStore"]


@dataclass
class MemoryStore:
    """Keeps entries in a dict of this process. Nothing is shared with other processes or survives a restart.

    Expired entries are dropped when they are read or scanned.
    """

    _: KW_ONLY
    max_entry_bytes: int | None = DEFAULT_MAX_ENTRY_BYTES
    """The largest value `set` stores and `get` returns (`EntryTooLargeError` beyond); `None`: no limit."""

    _data: dict[str, tuple[bytes, float | None]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        check_max_entry_bytes(self.max_entry_bytes)

    @property
    def description(self) -> str:
        return "memory"

    def _check_size(self, key: str, value: bytes) -> None:
        if self.max_entry_bytes is not None and len(value) > self.max_entry_bytes:
            raise EntryTooLargeError(key, len(value), self.max_entry_bytes)

    def _live(self, key: str, now: float) -> bytes | None:
        item = self._data.get(key)
        if item is None:
            return None
        value, expires_at = item
        if expires_at is not None and expires_at <= now:
            del self._data[key]
            return None
        return value

    async def get(self, key: str) -> bytes | None:
        value = self._live(key, time.monotonic())
        if value is not None:
            self._check_size(key, value)
        return value

    async def set(self, key: str, value: bytes, *, ttl: float | None) -> None:
        self._check_size(key, value)
        self._data[key] = (bytes(value), None if ttl is None else time.monotonic() + ttl)

    async def delete(self, key: str) -> bool:
        return self._data.pop(key, None) is not None

    async def scan(self, prefix: str) -> AsyncIterator[str]:
        now = time.monotonic()
        for key in [k for k in self._data if k.startswith(prefix)]:
            if self._live(key, now) is not None:
                yield key

    async def clear(self, prefix: str) -> int:
        keys = [k async for k in self.scan(prefix)]
        for key in keys:
            del self._data[key]
        return len(keys)

    async def close(self) -> None:
        return None
