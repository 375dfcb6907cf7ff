"""The store contract: bytes in, bytes out, nothing else.

Serialization, keys and policy live above this layer; a store only keeps opaque values under string keys.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Final, Protocol, runtime_checkable

from pyai_caching.exceptions import ConfigurationError

__all__ = [
    "DEFAULT_MAX_ENTRY_BYTES",
    "EntryTooLargeError",
    "LockingStore",
    "ReadOnlyStoreError",
    "SlowTransferError",
    "Store",
    "check_max_entry_bytes",
]

DEFAULT_MAX_ENTRY_BYTES: Final = 8 * 1024 * 1024
"""The default largest entry (8 MiB) a store writes, and reads: a bigger one is never transferred whole."""


class EntryTooLargeError(Exception):
    """A value is larger than the store's `max_entry_bytes`: it was not written, or (reading) not downloaded.

    The engine treats it as a miss (reading) or skips the write, with one warning per key.
    """

    def __init__(self, key: str, size: int, limit: int) -> None:
        super().__init__(f"entry {key} is {size:,} bytes, more than max_entry_bytes={limit:,}")
        self.key = key
        """The key of the entry."""
        self.size = size
        """Its size in bytes."""
        self.limit = limit
        """The store's `max_entry_bytes`."""


class ReadOnlyStoreError(Exception):
    """The store can be read but not written (a read-only folder or file): hits are served, writes are skipped."""


class SlowTransferError(Exception):
    """Reading or writing one large value took longer than the store's timeout, while the store itself answered.

    A slow link or a big entry, not an outage: the engine fails this operation open without treating the store
    as down for the other keys.
    """


def check_max_entry_bytes(value: Any) -> int | None:
    """`max_entry_bytes` must be a positive integer (bytes) or `None` (no limit)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigurationError(
            f"max_entry_bytes must be a positive number of bytes or None (no limit), got {value!r}; "
            f"the default is {DEFAULT_MAX_ENTRY_BYTES:,} (8 MiB)"
        )
    return value


@runtime_checkable
class Store(Protocol):
    """A place to keep cache entries.

    Keys are strings made by `pyai_caching.engine.keys` (they start with the library prefix `pyai_caching:`); values
    are opaque bytes. Every method may raise; the engine decides whether a failure is fatal (see
    `on_cache_error`). Implementations must be safe to use from several tasks of one event loop at once.
    """

    @property
    def description(self) -> str:
        """A short human description of the store for logs and errors (never contains a password)."""
        ...

    async def get(self, key: str) -> bytes | None:
        """Return the value stored under `key`, or `None` when there is none (or it expired)."""
        ...

    async def set(self, key: str, value: bytes, *, ttl: float | None) -> None:
        """Store `value` under `key`, replacing any previous value atomically.

        `ttl` is in seconds; `None` means the entry never expires.
        """
        ...

    async def delete(self, key: str) -> bool:
        """Delete `key`; return whether it existed."""
        ...

    def scan(self, prefix: str) -> AsyncIterator[str]:
        """Yield every live key that starts with `prefix` (in no particular order)."""
        ...

    async def clear(self, prefix: str) -> int:
        """Delete every key that starts with `prefix` and return how many were deleted.

        Only keys with that prefix are touched: data of other applications in the same database survives.
        """
        ...

    async def close(self) -> None:
        """Release connections and file handles. The store may be used again afterwards (it reconnects)."""
        ...


@runtime_checkable
class LockingStore(Store, Protocol):
    """A store that can also hold short-lived locks, so that processes sharing it fill each miss only once.

    Optional: the engine uses these methods when a store has them (`RedisStore` does) and otherwise coordinates
    identical misses within one process only. A lock is a key holding a random token that expires by itself, so
    a holder that dies never blocks anyone for longer than the lock's lifetime. Locks are advisory: a holder that
    stalls past the lifetime loses the lock and someone else may fill the same entry too (the last write wins).
    """

    async def acquire_lock(self, key: str, token: str, *, ttl: float) -> bool:
        """Take the lock `key` for `ttl` seconds with `token` if nobody holds it; return whether it was taken."""
        ...

    async def renew_lock(self, key: str, token: str, *, ttl: float) -> bool:
        """Extend the lock to `ttl` seconds from now if it is still held with `token`; return whether it was."""
        ...

    async def release_lock(self, key: str, token: str) -> bool:
        """Delete the lock if it is still held with `token` (never someone else's); return whether it was."""
        ...
