"""Which store a call uses: an explicit store, a Redis URL, `LLM_CACHE_REDIS_URL`, or the embedded `LocalStore`.

Stores are kept per URL (or folder) for the life of the process, so every call reuses one connection pool per
event loop instead of opening connections per call.
"""

from __future__ import annotations

import logging
import os
import threading

from pyai_caching._util.urls import invalid_url_message, scheme_problem
from pyai_caching.exceptions import ConfigurationError
from pyai_caching.stores import LocalStore, RedisStore, Store

__all__ = ["CACHE_DIR_ENV", "REDIS_URL_ENV", "check_redis_url", "resolve_store"]

logger = logging.getLogger("pyai_caching")

REDIS_URL_ENV = "LLM_CACHE_REDIS_URL"
"""Environment variable read when no `redis_url` or `store` is given."""

CACHE_DIR_ENV = "LLM_CACHE_DIR"
"""Environment variable for the folder of the embedded store."""

_lock = threading.Lock()
_stores: dict[tuple[str, str], Store] = {}


def check_redis_url(url: str) -> None:
    """Raise `ConfigurationError` with a short message (and the nearest valid URL) for a URL of no Redis scheme."""
    problem = scheme_problem(url)
    if problem is not None:
        raise ConfigurationError(invalid_url_message(url, problem))


def resolve_store(redis_url: str | None = None, store: Store | None = None) -> Store:
    """Return the store a call should use; raise `ConfigurationError` for a bad URL before any model call."""
    if store is not None:
        if redis_url is not None:
            raise ConfigurationError("pass either store= or redis_url=, not both")
        if not isinstance(store, Store):
            raise ConfigurationError(
                f"store must implement pyai_caching.stores.Store (get/set/delete/scan/clear/close), "
                f"got {type(store).__name__}"
            )
        return store
    if redis_url is not None and not isinstance(redis_url, str):
        raise ConfigurationError(f"redis_url must be a string, got {type(redis_url).__name__}")
    url = redis_url or os.environ.get(REDIS_URL_ENV) or None
    if url:
        key = ("redis", url)
        with _lock:
            found = _stores.get(key)
            if found is None:
                try:
                    check_redis_url(url)
                    found = _stores[key] = RedisStore(url)
                except ConfigurationError as e:
                    raise ConfigurationError(f"{'redis_url' if redis_url else REDIS_URL_ENV}: {e}") from None
                logger.info("using Redis store %s", found.description)
        return found
    directory = os.environ.get(CACHE_DIR_ENV) or ""
    key = ("local", directory)
    with _lock:
        found = _stores.get(key)
        if found is None:
            found = _stores[key] = LocalStore(directory or None)
            logger.info(
                "no Redis URL configured (%s); using the embedded store %s",
                REDIS_URL_ENV,
                found.description,
            )
    return found


async def close_all() -> None:
    """Close every store this registry opened (for the current event loop)."""
    with _lock:
        stores = list(_stores.values())
    for s in stores:
        await s.close()
