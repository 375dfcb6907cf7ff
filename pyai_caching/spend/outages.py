"""Which errors mean "Redis cannot be reached now" (an outage), the only ones a spend limit may fail open on."""

from __future__ import annotations

import builtins
from typing import Final

from redis.exceptions import (
    AuthenticationError,
    AuthorizationError,
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["MAYBE_OUTAGE", "is_outage"]

MAYBE_OUTAGE: Final = (RedisError, RedisClusterException, OSError, builtins.TimeoutError)
"""What to catch before asking `is_outage` (anything else is never one)."""

_OUTAGES: Final = (
    RedisConnectionError,  # refused, reset, loading, too many clients
    RedisTimeoutError,
    builtins.TimeoutError,
    OSError,
    ReadOnlyError,  # a replica after a failover, until clients move to the new master
    OutOfMemoryError,  # maxmemory reached with a no-eviction policy: it cannot count until memory is freed
    ClusterDownError,
    TryAgainError,
    RedisClusterException,
)


def is_outage(error: BaseException) -> bool:
    """`True` for a server that is down, unreachable, too slow, failing over or full; `False` for anything else: a
    wrong password or ACL (configuration), a script error or a wrong reply (a bug), which must not be ignored."""
    if isinstance(error, AuthenticationError | AuthorizationError):
        return False
    return isinstance(error, _OUTAGES)
