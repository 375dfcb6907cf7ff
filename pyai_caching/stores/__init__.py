"""Where cache entries live: the `Store` protocol and its implementations.

- `RedisStore`: Redis, shared by every process that can reach the server.
- `LocalStore`: the embedded default, a SQLite file shared by the processes of one machine.
- `MemoryStore`: a dict of this process, for tests and notebooks.
- `CassetteStore`: one readable JSON file of recorded responses per test (see `pyai_caching.pytest_plugin`).
"""

from __future__ import annotations

from ._base import (
    DEFAULT_MAX_ENTRY_BYTES,
    EntryTooLargeError,
    LockingStore,
    ReadOnlyStoreError,
    SlowTransferError,
    Store,
)
from .cassette import CassetteStore
from .local import LocalStore
from .memory import MemoryStore
from .redis import RedisStore

__all__ = [
    "DEFAULT_MAX_ENTRY_BYTES",
    "CassetteStore",
    "EntryTooLargeError",
    "LocalStore",
    "LockingStore",
    "MemoryStore",
    "ReadOnlyStoreError",
    "RedisStore",
    "SlowTransferError",
    "Store",
]
