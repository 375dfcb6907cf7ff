"""The redis-py clients of a `RedisStore`: one server, a Sentinel-monitored master, or a Redis Cluster.

`ClientConfig.new_client` builds the client of one event loop; `ClientConfig.check` builds the same objects
without any I/O, so that a bad option fails when the store is created rather than on its first operation. The
connections count their timeouts in responsive event-loop time (see `stores.lag`), and calls beyond
`max_connections` queue for a free connection instead of failing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyai_caching.exceptions import ConfigurationError
from pyai_caching.stores.lag import responsive_timeout
from pyai_caching.stores.redis.url import ACCEPTED_FORMS, URL_OWNED_OPTIONS, Target, parse_url

__all__ = ["ClientConfig", "configure"]


class _LagTolerant(AbstractConnection):
    """A connection whose connect and reply timeouts count responsive event-loop time (see `stores.lag`).

    redis-py's own timeouts measure wall time: when this process is busy, a reply that arrived at once is read
    late and the timeout fires anyway; the connection is then dropped and the next command opens a new one, which
    times out too while the process stays busy. Here `connect_timeout` and `socket_timeout` are enforced as time
    during which the loop could have read the reply (redis-py keeps a generous wall-time connect timeout as a
    backstop). Writing a big command (over 64 KiB) is bounded like a reply; a small one never waits.
    """

    def __init__(self, *args: Any, lag_tolerant: tuple[float | None, float | None] = (None, None), **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._reply_budget, self._connect_budget = lag_tolerant

    async def _connect(self) -> None:
        connect: Any = super()._connect  # type: ignore[safe-super]
        if self._connect_budget is None:
            await connect()
            return
        async with responsive_timeout(self._connect_budget):
            await connect()

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        if self._reply_budget is None or kwargs.get("timeout") is not None or len(args) > 1:
            return await super().read_response(*args, **kwargs)
        try:
            async with responsive_timeout(self._reply_budget):
                return await super().read_response(*args, **kwargs)
        except TimeoutError:  # ours (redis-py raises its own `TimeoutError` class)
            raise RedisTimeoutError(f"Timeout reading from {self._host_error()}") from None

    async def send_packed_command(self, command: Any, *args: Any, **kwargs: Any) -> None:
        # A small command fits in the socket's buffer: writing it never waits. A big one (a large entry) may wait
        # for the server to read it: that wait is bounded like a reply.
        big = not isinstance(command, str | bytes) and sum(len(part) for part in command) > _BIG_SEND
        if self._reply_budget is None or not big:
            return await super().send_packed_command(command, *args, **kwargs)
        try:
            async with responsive_timeout(self._reply_budget):
                await super().send_packed_command(command, *args, **kwargs)
        except TimeoutError:
            raise RedisTimeoutError("Timeout writing to socket") from None


class _TolerantConnection(_LagTolerant, Connection):
    pass


class _TolerantSSLConnection(_LagTolerant, SSLConnection):
    pass


class _TolerantUnixConnection(_LagTolerant, UnixDomainSocketConnection):
    pass


class _TolerantSentinelConnection(_LagTolerant, SentinelManagedConnection):
    pass


_TOLERANT: Final[dict[type[AbstractConnection], type[AbstractConnection]]] = {
    Connection: _TolerantConnection,
    SSLConnection: _TolerantSSLConnection,
    UnixDomainSocketConnection: _TolerantUnixConnection,
}
_BACKSTOP: Final = 30.0
"""Least wall-time connect timeout given to redis-py under the responsive one (an event loop stalled that long)."""
_BIG_SEND: Final = 64 * 1024


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """redis-py's Sentinel pool (asks the sentinels for the master on every new connection), with the blocking
    pool's queue: calls beyond `max_connections` wait up to `timeout` for a free connection instead of failing."""


class _QueueingCluster(RedisCluster):
    """A `RedisCluster` whose commands wait (up to `queue_timeout`) once `queue_size` of them are running, instead
    of failing with `MaxConnectionsError` when a node's connections are all busy; and whose failures to reach the
    cluster at all are `redis.exceptions.ConnectionError`s, so the engine fails open on them like on a dead server.
    """

    def __init__(self, *, queue_size: int, queue_timeout: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._queue = asyncio.Semaphore(queue_size)
        self._queue_timeout = queue_timeout

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        if self._queue.locked():
            try:
                async with asyncio.timeout(self._queue_timeout):
                    await self._queue.acquire()
            except TimeoutError:
                raise RedisConnectionError("No connection available.") from None
        else:
            await self._queue.acquire()  # a free slot: returns at once
        try:
            return await super().execute_command(*args, **kwargs)
        except RedisClusterException as error:  # no reachable node, slots not covered, ...
            raise RedisConnectionError(f"Redis Cluster unavailable: {error}") from error
        finally:
            self._queue.release()


@dataclass(frozen=True, kw_only=True, slots=True)
class ClientConfig:
    """Everything a `RedisStore` builds its clients from (checked by the store before it is made)."""

    target: Target
    """The deployment, as parsed from the URL."""
    options: dict[str, Any]
    """redis-py connection options: the URL's, then the store's defaults, then the caller's keyword arguments."""
    sentinel_options: dict[str, Any]
    """Connection options for the sentinels themselves (`redis+sentinel://` only)."""
    max_connections: int
    """Connections per event loop (per node of a cluster)."""
    pool_timeout: float
    """Seconds a call waits for a free connection."""
    socket_timeout: float | None
    """Seconds to wait for a reply, in responsive event-loop time (`None`: no limit)."""
    connect_timeout: float | None
    """Seconds to wait for a connection, in responsive event-loop time (`None`: no limit)."""

    def check(self) -> None:
        """Build (without any I/O) what the first operation will build, so a bad option fails here."""
        description = self.target.description
        try:
            if self.target.topology == "cluster":
                RedisCluster(startup_nodes=self._startup_nodes(), **self.options)
            else:
                self.target.connection_class(**self.options)
                if self.target.topology == "sentinel":
                    try:
                        Connection(**self.sentinel_options)
                    except (TypeError, ValueError, RedisError) as exc:
                        raise ConfigurationError(f"invalid sentinel_kwargs option for {description}: {exc}") from None
        except (TypeError, ValueError, RedisError, RedisClusterException) as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(f"invalid Redis connection option for {description}: {exc}") from None

    def _startup_nodes(self) -> list[ClusterNode]:
        return [ClusterNode(host, port) for host, port in self.target.nodes]

    def new_client(self) -> tuple[Redis | RedisCluster, Sentinel | None]:
        """A new client (`Redis`, or `RedisCluster` for a cluster), and the `Sentinel` it asks for the master."""
        target = self.target
        if target.topology == "cluster":
            cluster = _QueueingCluster(
                queue_size=self.max_connections,
                queue_timeout=self.pool_timeout,
                startup_nodes=self._startup_nodes(),
                max_connections=self.max_connections,
                **self.options,
            )
            return cluster, None
        # One server, or a Sentinel's master: connections whose timeouts tolerate a busy event loop.
        options = {
            **self.options,
            "socket_timeout": None,  # replies (and big writes) are bounded by the responsive timeouts above
            "socket_connect_timeout": _backstop(self.connect_timeout),
            "lag_tolerant": (self.socket_timeout, self.connect_timeout),
        }
        if target.topology == "sentinel":
            sentinel: Sentinel = cast("Any", Sentinel)(
                list(target.nodes), sentinel_kwargs=self.sentinel_options, **self.options
            )
            master = sentinel.master_for(
                target.service_name,
                connection_pool_class=_BlockingSentinelPool,
                max_connections=self.max_connections,
                timeout=self.pool_timeout,
                **{**options, "connection_class": _TolerantSentinelConnection},
            )
            return cast("Redis", master), sentinel
        pool = BlockingConnectionPool(
            connection_class=_TOLERANT.get(target.connection_class, target.connection_class),
            max_connections=self.max_connections,
            timeout=self.pool_timeout,
            **options,
        )
        return Redis.from_pool(pool), None


def configure(
    url: str,
    *,
    socket_timeout: float,
    connect_timeout: float,
    max_connections: int,
    pool_timeout: float,
    client_name: str | None,
    sentinel_kwargs: Mapping[str, Any] | None,
    connection_kwargs: dict[str, Any],
) -> ClientConfig:
    """The `ClientConfig` of `RedisStore(url, ...)`'s arguments (see there); `ConfigurationError` for a bad one.

    Checks the arguments and the URL, not yet the connection options (`ClientConfig.check` does).
    """
    timeouts = (
        ("socket_timeout", socket_timeout),
        ("connect_timeout", connect_timeout),
        ("pool_timeout", pool_timeout),
    )
    for name, value in timeouts:
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise ConfigurationError(f"{name} must be a positive number of seconds, got {value!r}")
    if isinstance(max_connections, bool) or not isinstance(max_connections, int) or max_connections < 1:
        raise ConfigurationError(f"max_connections must be a positive integer, got {max_connections!r}")
    target = _target(url, connection_kwargs, sentinel_kwargs)
    options: dict[str, Any] = {
        **target.options,
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "client_name": client_name,
        "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        "retry_on_error": [],
        **connection_kwargs,
    }
    sentinel_options: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": connect_timeout,
        "retry": Retry(NoBackoff(), 0),
        "retry_on_error": [],
        **(sentinel_kwargs or {}),
    }
    reply_timeout = _seconds(options.get("socket_timeout"))
    return ClientConfig(
        target=target,
        options=options,
        sentinel_options=sentinel_options,
        max_connections=max_connections,
        pool_timeout=pool_timeout,
        socket_timeout=reply_timeout,
        connect_timeout=_seconds(options.get("socket_connect_timeout")) or reply_timeout,
    )


def _target(url: str, connection_kwargs: dict[str, Any], sentinel_kwargs: Mapping[str, Any] | None) -> Target:
    """The parsed URL, once the keyword arguments are known to agree with it."""
    owned = sorted(URL_OWNED_OPTIONS.intersection(connection_kwargs))
    if owned:
        raise ConfigurationError(
            f"RedisStore does not accept {', '.join(owned)} as keyword arguments: the address, database and "
            f"TLS come from the URL; {ACCEPTED_FORMS}"
        )
    target = parse_url(url)
    tls = target.connection_class is SSLConnection or bool(target.options.get("ssl"))
    misplaced = sorted(name for name in connection_kwargs if name.startswith("ssl_"))
    if misplaced and not tls:
        raise ConfigurationError(
            f"{', '.join(misplaced)} only apply to TLS connections: use a rediss:// (or rediss+cluster://) URL "
            f"instead of {target.description}"
        )
    if sentinel_kwargs is not None and target.topology != "sentinel":
        raise ConfigurationError(f"sentinel_kwargs only applies to redis+sentinel:// URLs, not to {target.description}")
    return target


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


def _backstop(timeout: float | None) -> float | None:
    return None if timeout is None else max(_BACKSTOP, 4 * timeout)
