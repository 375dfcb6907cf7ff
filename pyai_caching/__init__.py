"""pyai_caching: response caching, rate-limit retries and spend tracking for PydanticAI agents."""

from ._version import __version__
from .api import cached_agent_run, cached_agent_run_sync, clear_cache, clear_cache_async
from .capability import DEFAULT_TTL, ResponseCache
from .exceptions import CacheError, CacheMissError, ConfigurationError, PyAICachingError
from .stores import LocalStore, MemoryStore, RedisStore, Store
from .types import CacheMode

__all__ = [
    "DEFAULT_TTL",
    "CacheError",
    "CacheMissError",
    "CacheMode",
    "ConfigurationError",
    "LocalStore",
    "MemoryStore",
    "PyAICachingError",
    "RedisStore",
    "ResponseCache",
    "Store",
    "__version__",
    "cached_agent_run",
    "cached_agent_run_sync",
    "clear_cache",
    "clear_cache_async",
]
