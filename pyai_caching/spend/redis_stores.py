"""The Redis stores of the spend features (ledger, budgets): one per URL, with bookkeeping timeouts."""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Final

from pyai_caching.engine.registry import REDIS_URL_ENV, resolve_store
from pyai_caching.exceptions import ConfigurationError
from pyai_caching.stores.redis import RedisStore

__all__ = ["spend_store"]

_KEPT: Final = 64
"""Stores kept for reuse (least recently used first out); a ledger or budget keeps its own store alive anyway."""

_lock = threading.Lock()
_stores: OrderedDict[str, RedisStore] = OrderedDict()


def spend_store(redis_url: str | None, store: RedisStore | None, what: str, *, why: str) -> RedisStore:
    """The `RedisStore` of `redis_url` (default `LLM_CACHE_REDIS_URL`), or `store` itself.

    `what` names the caller in errors (`"RedisSpendLedger"`), `why` says why it needs Redis.
    """
    if store is not None:
        if redis_url is not None:
            raise ConfigurationError(f"{what}: pass either redis_url= or store=, not both")
        if not isinstance(store, RedisStore):
            raise ConfigurationError(f"{what}: store must be a RedisStore, got {type(store).__name__}")
        return store
    url = redis_url or os.environ.get(REDIS_URL_ENV)
    if not url:
        raise ConfigurationError(f"{what} needs Redis: pass redis_url='redis://...' or set {REDIS_URL_ENV} ({why})")
    resolve_store(url)  # validates the URL (ConfigurationError without the password)
    with _lock:
        found = _stores.get(url)
        if found is None:
            # Bookkeeping, not the hot path: it waits longer than the cache's fail-fast 0.5 s before it gives up on
            # an increment (a lost increment is a wrong total; a slow one only delays the caller).
            found = _stores[url] = RedisStore(url, socket_timeout=5.0, connect_timeout=2.0)
        _stores.move_to_end(url)
        while len(_stores) > _KEPT:
            _stores.popitem(last=False)
    return found
