"""A process-global override of the store and cache mode every cache call uses.

The pytest plugin activates one for the duration of a test that uses a cassette: every `ResponseCache` and every
`cached_agent_run` then reads and writes the cassette in the test's record mode, whatever store and mode the code
under test configured. The override is resolved when a model request is made (not when a capability is built), so
a capability constructed at import time follows it too.

It is a plain module global, not a `ContextVar`: pytest runs a synchronous fixture and an async test in different
contexts, and the test must still see what the fixture set. Only one override is active at a time; activating
another one while one is active stacks (the previous one comes back when the inner one ends).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pyai_caching.engine.access import StoreAccess
from pyai_caching.engine.keys import validate_namespace
from pyai_caching.stores import Store
from pyai_caching.types import CacheMode

__all__ = ["Override", "activated", "active"]


@dataclass(frozen=True, kw_only=True)
class Override:
    """The store and mode that replace whatever the code under test configured."""

    store: Store
    """Where every entry is read and written while the override is active."""
    mode: CacheMode
    """The cache mode every call uses while the override is active."""
    namespace: str | None = None
    """The namespace every key uses, or `None` to keep the namespace the code under test chose."""
    access: StoreAccess = field(init=False, repr=False, compare=False)
    """The store as the engine sees it: entries never expire, are never signed, and store errors raise."""

    def __post_init__(self) -> None:
        if self.namespace is not None:
            validate_namespace(self.namespace)
        object.__setattr__(self, "access", StoreAccess(store=self.store, ttl=None, on_cache_error="raise"))


_lock = threading.Lock()
_stack: list[Override] = []


def active() -> Override | None:
    """The override in effect, or `None` (the normal case: every call uses its own configuration)."""
    stack = _stack
    return stack[-1] if stack else None


@contextmanager
def activated(store: Store, mode: CacheMode, *, namespace: str | None = None) -> Iterator[Override]:
    """Make `store` and `mode` the ones every cache call of this process uses, until the block ends."""
    override = Override(store=store, mode=mode, namespace=namespace)
    with _lock:
        _stack.append(override)
    try:
        yield override
    finally:
        with _lock:
            # Remove this very override even if blocks ended out of order.
            for i in range(len(_stack) - 1, -1, -1):
                if _stack[i] is override:
                    del _stack[i]
                    break
