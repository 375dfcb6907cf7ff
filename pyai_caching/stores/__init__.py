"""Where cache entries live: the `Store` protocol and its implementations.

- `RedisStore`: Redis, shared by every process that can reach the server.
- `LocalStore`: the embedded default, a SQLite file shared by the processes of one machine.
- `MemoryStore`: a dict of this process, for tests and notebooks.
- `CassetteStore`: one readable JSON file of recorded responses per test (see `pyai_caching.pytest_plugin`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pyai_caching.stores.base import (
    DEFAULT_MAX_ENTRY_BYTES,
    EntryTooLargeError,
    LockingStore,
    ReadOnlyStoreError,
    SlowTransferError,
    Store,
)
from pyai_caching.stores.local import LocalStore
from pyai_caching.stores.memory import MemoryStore
from pyai_caching.stores.redis import RedisStore

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

if TYPE_CHECKING:
    from pyai_caching.testing.cassette import CassetteStore


def __getattr__(name: str) -> Any:
    # The cassette store belongs to the testing feature (it explains misses and scrubs secrets); it stays importable
    # from here, loaded on first use so that the stores layer does not import the feature above it.
    if name == "CassetteStore":
        from pyai_caching.testing import cassette

        return cassette.CassetteStore
    raise AttributeError(f"module 'pyai_caching.stores' has no attribute {name!r}")
