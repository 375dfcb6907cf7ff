"""`RedisStore`: a store shared by every process that can reach one Redis deployment.

Built on redis-py's asyncio clients; the URL alone picks the deployment:

* `redis://`, `rediss://` (TLS), `unix://`: one server (`redis.asyncio.Redis`);
* `redis+sentinel://host:26379[,host:26379]/service_name[/db]`: the master of a Sentinel-monitored group
  (`redis.asyncio.sentinel.Sentinel.master_for`). Every new connection asks the sentinels where the master is,
  so after a failover the store follows the new master by itself;
* `redis+cluster://host:port[,host:port]` and `rediss+cluster://` (TLS): a Redis Cluster
  (`redis.asyncio.cluster.RedisCluster`). Keys that must live together share a `{hash tag}` (see
  `pyai_caching.engine.keys.entry_key`), `scan` and `clear` visit every primary, and `clear` deletes slot by slot.

Each running event loop gets its own client and connections, created on first use in that loop and closed when
the loop shuts down (`asyncio.run` and `asyncio.Runner` finalize it) or when `close()` is called in it. Timeouts
are short and redis-py retries nothing but a broken connection, once and at once (a restarted server leaves every
pooled connection broken; the retry reconnects): on a dead or stalled server a call fails after about
`socket_timeout` seconds (a call queued for a free connection waits at most `pool_timeout` more), and a refused
connection fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Literal, TypeVar, cast
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection, UnixDomainSocketConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedConnection
from redis.backoff import NoBackoff
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyai_caching._util.urls import invalid_url_message
from pyai_caching.exceptions import ConfigurationError
from pyai_caching.stores.base import (
    DEFAULT_MAX_ENTRY_BYTES,
    EntryTooLargeError,
    SlowTransferError,
    check_max_entry_bytes,
)
from pyai_caching.stores.lag import loop_lag, responsive_timeout

__all__ = ["RedisStore"]

T = TypeVar("T")

_ACCEPTED_FORMS: Final = (
    "accepted forms: redis://[[user]:password@]host[:port][/db], "
    "rediss://[[user]:password@]host[:port][/db][?ssl_ca_certs=PATH&ssl_certfile=PATH&ssl_keyfile=PATH"
    "&ssl_cert_reqs=required|optional|none] (TLS), "
    "unix://[[user]:password@]/path/to/redis.sock[?db=N], "
    "redis+sentinel://[[user]:password@]host[:26379][,host[:port]...]/service_name[/db] (Sentinel), "
    "redis+cluster://[[user]:password@]host[:port][,host[:port]...] (Cluster; rediss+cluster:// for TLS); "
    "percent-encode special characters in the user and password (for example '@' as %40, '/' as %2F)"
)
_SSL_OPTIONS: Final = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_CERT_REQS: Final = ("required", "optional", "none")
_URL_OWNED_OPTIONS: Final = frozenset(
    {
        "host",
        "port",
        "path",
        "db",
        "unix_socket_path",
        "connection_class",
        "connection_pool",
        "decode_responses",
        "startup_nodes",
        "ssl",
    }
)
_SCHEMES: Final = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster", "rediss+cluster")
_SENTINEL_PORT: Final = 26379
_REDIS_PORT: Final = 6379
_SCAN_COUNT: Final = 1000
_DELETE_BATCH: Final = 500
_GLOB_SPECIAL: Final = re.compile(r"([\\*?\[\]])")
# Locks (see `LockingStore`). Ours always expire, so a lock key without an expiry was written by something else:
# it is replaced rather than waited on forever. Each script touches only its one key, so it runs on Redis Cluster.
# Every command a script calls must be in the documented minimal ACL rule (tests/deployments/test_acl.py checks it).
# An acquire retried after its reply was lost with the connection finds its own token and succeeds.
_ACQUIRE_LOCK: Final = """
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
if redis.call('PTTL', KEYS[1]) == -1
  or (redis.call('TYPE', KEYS[1]).ok == 'string' and redis.call('GET', KEYS[1]) == ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RENEW_LOCK: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE_LOCK: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
# Reads check the size in the same round trip: a value longer than ARGV[1] is not sent, only its length is.
_READ: Final = """
local size = redis.call('STRLEN', KEYS[1])
if size > tonumber(ARGV[1]) then return size end
return redis.call('GET', KEYS[1])
"""
INLINE_BYTES: Final = 1024 * 1024
"""Values up to this size are read in one round trip. A bigger one costs two: its size, then the value itself,
so that a timeout while it is being transferred is known to be a slow transfer of that value, not an outage."""
_NO_LIMIT: Final = 2**53
_EXCUSED_RETRIES: Final = 3
"""How many times one command is sent again after a timeout that the busy event loop, not the server, caused."""

_Topology = Literal["server", "sentinel", "cluster"]


@dataclass(frozen=True, slots=True)
class _Target:
    """Where and how to connect, as parsed from the URL (the password stays out of `description`)."""

    description: str
    """The URL with the password replaced by `***`."""
    options: dict[str, Any]
    """Connection options taken from the URL: address, database, credentials, TLS."""
    connection_class: type[AbstractConnection] = Connection
    """redis-py's connection class (one server only)."""
    topology: _Topology = "server"
    """One server, a Sentinel-monitored master, or a Redis Cluster."""
    nodes: tuple[tuple[str, int], ...] = ()
    """The sentinels (Sentinel) or the startup nodes (Cluster)."""
    service_name: str = ""
    """The name the sentinels monitor the master under (Sentinel only)."""


@dataclass(slots=True)
class _LoopClient:
    client: Redis | RedisCluster
    guard: AsyncGenerator[None, None]
    scripts: dict[str, AsyncScript] = field(default_factory=dict)


class _LagTolerant(AbstractConnection):
    """A connection whose connect and reply timeouts count responsive event-loop time (see `stores._lag`).

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


class RedisStore:
    """Keeps entries in Redis as plain strings (`SET key value PX ttl`), one client per event loop.

    ```python
    store = RedisStore("redis://:password@localhost:6379/0")
    store = RedisStore("redis+sentinel://sentinel-1:26379,sentinel-2:26379/mymaster/0")
    store = RedisStore("redis+cluster://node-1:6379,node-2:6379")
    ```

    Store methods raise redis-py's exceptions unchanged (`redis.exceptions.ConnectionError`, `TimeoutError`,
    `ResponseError` for a `WRONGTYPE` key, ...); the engine decides what a failure means. Only keys under the
    prefix given to `scan` and `clear` are ever touched: the database may be shared with other applications.
    """

    def __init__(
        self,
        url: str,
        *,
        socket_timeout: float = 0.5,
        connect_timeout: float = 0.5,
        max_connections: int = 50,
        pool_timeout: float = 5.0,
        client_name: str | None = "pyai_caching",
        sentinel_kwargs: Mapping[str, Any] | None = None,
        max_entry_bytes: int | None = DEFAULT_MAX_ENTRY_BYTES,
        **connection_kwargs: Any,
    ) -> None:
        """Validate the configuration; no connection is made until the first operation.

        Args:
            url: `redis://[[user]:password@]host[:port][/db]`, `rediss://...` (TLS, with optional `ssl_ca_certs`,
                `ssl_certfile`, `ssl_keyfile` and `ssl_cert_reqs` query parameters; certificates are verified
                unless `ssl_cert_reqs=none`), `unix://[[user]:password@]/path/to/redis.sock[?db=N]`,
                `redis+sentinel://[[user]:password@]host[:26379][,host[:port]...]/service_name[/db]` (the user and
                password are the master's) or `redis+cluster://[[user]:password@]host[:port][,host[:port]...]`
                (`rediss+cluster://` for TLS, with the same `ssl_*` parameters). A `db` query parameter may stand
                in for the database in the path.
            socket_timeout: Seconds to wait for a reply before raising `redis.exceptions.TimeoutError`.
            connect_timeout: Seconds to wait for a connection to be established.
            max_connections: Connections per event loop (per node of a cluster); calls beyond that wait for a
                free one.
            pool_timeout: Seconds a call waits for a free connection when all `max_connections` are busy, before
                raising `redis.exceptions.ConnectionError`. Generous on purpose: a burst of thousands of calls
                on a healthy server must queue, not fail. (On a server that hangs, the calls holding connections
                fail after `socket_timeout` and free them; calls queued behind them give up after this long.)
            client_name: Name shown by `CLIENT LIST`, or `None` to send no name.
            sentinel_kwargs: Connection options for the sentinels themselves (`redis+sentinel://` only), for
                example `{"password": "..."}` when they require one. By default they get the timeouts above
                and no credentials.
            max_entry_bytes: The largest value `set` writes and `get` reads (8 MiB by default; `None`: no limit).
                `get` checks the size on the server in the same round trip (a Lua script: `STRLEN`, then `GET`
                only if it fits), so a bigger value is never downloaded: `EntryTooLargeError` is raised instead.
            **connection_kwargs: Passed to redis-py's connection (for example `password=` to keep it out of
                the URL, `health_check_interval=`, `ssl_ca_certs=`, `ssl_ca_data=`; for a cluster, also
                `RedisCluster` options such as `require_full_coverage=`). They win over the defaults above,
                except the address, which only the URL sets.

        Raises:
            ConfigurationError: The URL or an option is invalid. The message never contains the password.
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
        owned = sorted(_URL_OWNED_OPTIONS.intersection(connection_kwargs))
        if owned:
            raise ConfigurationError(
                f"RedisStore does not accept {', '.join(owned)} as keyword arguments: the address, database and "
                f"TLS come from the URL; {_ACCEPTED_FORMS}"
            )
        target = _parse_url(url)
        tls = target.connection_class is SSLConnection or bool(target.options.get("ssl"))
        misplaced = sorted(name for name in connection_kwargs if name.startswith("ssl_"))
        if misplaced and not tls:
            raise ConfigurationError(
                f"{', '.join(misplaced)} only apply to TLS connections: use a rediss:// (or rediss+cluster://) URL "
                f"instead of {target.description}"
            )
        if sentinel_kwargs is not None and target.topology != "sentinel":
            raise ConfigurationError(
                f"sentinel_kwargs only applies to redis+sentinel:// URLs, not to {target.description}"
            )
        self._max_entry_bytes = check_max_entry_bytes(max_entry_bytes)
        self._description = target.description
        self._target = target
        self._max_connections = max_connections
        self._pool_timeout = pool_timeout
        self._options: dict[str, Any] = {
            **target.options,
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
            "client_name": client_name,
            "retry": Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
            "retry_on_error": [],
            **connection_kwargs,
        }
        self._sentinel_options: dict[str, Any] = {
            "socket_timeout": socket_timeout,
            "socket_connect_timeout": connect_timeout,
            "retry": Retry(NoBackoff(), 0),
            "retry_on_error": [],
            **(sentinel_kwargs or {}),
        }
        self._check_options()
        self._socket_timeout = _seconds(self._options.get("socket_timeout"))
        self._connect_timeout = _seconds(self._options.get("socket_connect_timeout")) or self._socket_timeout
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def _check_options(self) -> None:
        """Build (without any I/O) what the first operation will build, so a bad option fails here."""
        try:
            if self._target.topology == "cluster":
                RedisCluster(startup_nodes=self._startup_nodes(), **self._options)
            else:
                self._target.connection_class(**self._options)
                if self._target.topology == "sentinel":
                    try:
                        Connection(**self._sentinel_options)
                    except (TypeError, ValueError, RedisError) as exc:
                        raise ConfigurationError(
                            f"invalid sentinel_kwargs option for {self._description}: {exc}"
                        ) from None
        except (TypeError, ValueError, RedisError, RedisClusterException) as exc:
            if isinstance(exc, ConfigurationError):
                raise
            raise ConfigurationError(f"invalid Redis connection option for {self._description}: {exc}") from None

    def _startup_nodes(self) -> list[ClusterNode]:
        return [ClusterNode(host, port) for host, port in self._target.nodes]

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> RedisStore:
        """Same as `RedisStore(url, **kwargs)`."""
        return cls(url, **kwargs)

    @property
    def description(self) -> str:
        """The URL with the password replaced by `***`, for example `redis://user:***@127.0.0.1:6379/0`."""
        return self._description

    def __repr__(self) -> str:
        return f"RedisStore({self._description!r})"

    @property
    def database(self) -> int:
        """The number of the database the store uses (always 0 on a cluster)."""
        return int(self._options.get("db") or 0)

    @property
    def max_entry_bytes(self) -> int | None:
        """The largest value this store writes and reads, in bytes (`None`: no limit)."""
        return self._max_entry_bytes

    async def get(self, key: str) -> bytes | None:
        """The value of `key` if it is at most `max_entry_bytes` long (checked on the server, in the same round trip).

        Raises `EntryTooLargeError` for a longer value (which is not downloaded), `SlowTransferError` when a value
        over 1 MiB could not be downloaded within `socket_timeout` although the server answered, and
        `redis.exceptions.ResponseError` (`WRONGTYPE`) if the key holds something other than a string.
        """
        limit = _NO_LIMIT if self._max_entry_bytes is None else self._max_entry_bytes
        found = await self._script(_READ, [key], [min(limit, INLINE_BYTES)])
        if not isinstance(found, int):
            return cast("bytes | None", found)
        if found > limit:
            raise EntryTooLargeError(key, found, limit)
        try:
            found = await self._script(_READ, [key], [limit])
        except RedisTimeoutError as error:
            raise SlowTransferError(
                f"reading {key} ({found:,} bytes) from {self._description} took more than socket_timeout="
                f"{self._socket_timeout} s although the server answered (a slow link?)"
            ) from error
        if isinstance(found, int):  # it was replaced by a bigger value in between
            raise EntryTooLargeError(key, found, limit)
        return cast("bytes | None", found)

    async def set(self, key: str, value: bytes, *, ttl: float | None) -> None:
        """`SET key value PX ms` (no expiry when `ttl` is `None`): an atomic replace of any previous value.

        A `ttl` of zero or less deletes the key, since such an entry would already have expired. A value over
        `max_entry_bytes` raises `EntryTooLargeError` (nothing is sent), and one over 1 MiB that could not be sent
        within `socket_timeout` raises `SlowTransferError`.
        """
        if self._max_entry_bytes is not None and len(value) > self._max_entry_bytes:
            raise EntryTooLargeError(key, len(value), self._max_entry_bytes)
        if ttl is not None and ttl <= 0:
            await self._call(lambda client: client.unlink(key))
            return
        px = None if ttl is None else math.ceil(ttl * 1000)
        try:
            await self._call(lambda client: client.set(key, value, px=px))
        except RedisTimeoutError as error:
            if len(value) <= INLINE_BYTES:
                raise
            raise SlowTransferError(
                f"writing {key} ({len(value):,} bytes) to {self._description} took more than socket_timeout="
                f"{self._socket_timeout} s (a slow link?)"
            ) from error

    async def delete(self, key: str) -> bool:
        """`UNLINK key`; return whether the key existed."""
        removed: int = await self._call(lambda client: client.unlink(key))
        return removed > 0

    async def scan(self, prefix: str) -> AsyncIterator[str]:
        """`SCAN MATCH <prefix>* COUNT 1000` (on every primary of a cluster), with glob characters in `prefix`
        escaped; each key is yielded once."""
        client = await self._client()
        seen: set[bytes] = set()
        async for raw in client.scan_iter(match=_match_prefix(prefix), count=_SCAN_COUNT):
            if raw not in seen:
                seen.add(raw)
                yield raw.decode("utf-8", "replace")

    async def clear(self, prefix: str) -> int:
        """Delete the keys that start with `prefix` (`SCAN` then `UNLINK` in batches of 500); never `FLUSHDB`.

        On a cluster, `SCAN` visits every primary and each `UNLINK` only names keys of one hash slot.
        """
        client = await self._client()
        deleted = 0
        batch: list[bytes] = []
        async for raw in client.scan_iter(match=_match_prefix(prefix), count=_SCAN_COUNT):
            batch.append(raw)
            if len(batch) >= _DELETE_BATCH:
                deleted += await client.unlink(*batch)
                batch.clear()
        if batch:
            deleted += await client.unlink(*batch)
        return deleted

    async def acquire_lock(self, key: str, token: str, *, ttl: float) -> bool:
        """`SET key token NX PX ttl` (a Lua script, which also replaces a stray key that has no expiry)."""
        return await self._lock_script(_ACQUIRE_LOCK, key, token, ttl)

    async def renew_lock(self, key: str, token: str, *, ttl: float) -> bool:
        """`PEXPIRE key ttl` if `key` still holds `token` (compare and extend, atomically in Lua)."""
        return await self._lock_script(_RENEW_LOCK, key, token, ttl)

    async def release_lock(self, key: str, token: str) -> bool:
        """`DEL key` if `key` still holds `token` (compare and delete, atomically in Lua)."""
        return await self._lock_script(_RELEASE_LOCK, key, token, None)

    async def _lock_script(self, script: str, key: str, token: str, ttl: float | None) -> bool:
        args: list[str | int] = [token] if ttl is None else [token, max(1, math.ceil(ttl * 1000))]
        return bool(await self._script(script, [key], args))

    async def _script(self, script: str, keys: list[str], args: list[str | int]) -> Any:
        """Run a Lua script: `EVALSHA`, loading it (`SCRIPT LOAD`) on a `NOSCRIPT` error."""
        entry = await self._loop_client()
        runner = entry.scripts.get(script)
        if runner is None:
            runner = entry.scripts[script] = entry.client.register_script(script)
        try:
            return await self._call(lambda client: client.evalsha(runner.sha, len(keys), *keys, *args), entry)
        except NoScriptError:  # a new or restarted server, or SCRIPT FLUSH
            return await self._call(lambda client: runner(keys=keys, args=args), entry)

    async def _call(
        self, command: Callable[[Redis | RedisCluster], Awaitable[T]], entry: _LoopClient | None = None
    ) -> T:
        """Send one (idempotent) command; send it again when it timed out because this process was too busy.

        A timeout that fired while the event loop was stalled for most of the wait says nothing about the server
        (its reply may have been waiting to be read all along): the command is sent again, up to 3 times. A
        timeout on a responsive loop is raised at once, as are all other errors.
        """
        client = (entry or await self._loop_client()).client
        loop = asyncio.get_running_loop()
        for attempt in range(_EXCUSED_RETRIES + 1):
            started = loop.time()
            try:
                return await command(client)
            except (RedisTimeoutError, RedisConnectionError) as error:
                limit = self._timeout_of(error)
                if limit is None or attempt == _EXCUSED_RETRIES or not loop_lag().excuses(started, limit):
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _timeout_of(self, error: RedisError) -> float | None:
        """The timeout that `error` reports running out (`None`: the error is not a timeout)."""
        text = str(error)
        if isinstance(error, RedisTimeoutError):
            return self._connect_timeout if "connecting" in text else self._socket_timeout
        if "No connection available" in text:
            return self._pool_timeout
        return None

    async def close(self) -> None:
        """Close the connections of the running event loop; the next operation opens new ones.

        Clients of event loops that were closed are forgotten too. `asyncio.run` and `asyncio.Runner` close the
        client of their loop on their own; a loop closed by hand (`loop.close()`) should call this first.
        """
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._clients.pop(loop, None)
            self._forget_closed_loops()
        if entry is not None:
            await entry.guard.aclose()

    async def client(self) -> Redis | RedisCluster:
        """The redis-py client of the running event loop (created on first use): `Redis`, or `RedisCluster` for a
        cluster, with this store's pools, timeouts and credentials.

        For commands beyond the store's (the spend ledger, budgets, the semantic index). Anything sent to a cluster
        must keep its keys in one hash slot. Do not close it: the store owns it (see `close`).
        """
        return (await self._loop_client()).client

    async def _client(self) -> Redis | RedisCluster:
        return await self.client()

    async def _loop_client(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            client, sentinel = self._new_client()
            guard = self._close_with_loop(loop, client, sentinel)
            # Starting the generator registers it with the loop, which closes it (and the pool) at shutdown.
            # Nothing in here suspends, so no other task of this loop can open a second client meanwhile.
            await anext(guard)
            entry = _LoopClient(client, guard)
            with self._lock:
                self._forget_closed_loops()
                self._clients[loop] = entry
        return entry

    def _new_client(self) -> tuple[Redis | RedisCluster, Sentinel | None]:
        target = self._target
        if target.topology == "cluster":
            cluster = _QueueingCluster(
                queue_size=self._max_connections,
                queue_timeout=self._pool_timeout,
                startup_nodes=self._startup_nodes(),
                max_connections=self._max_connections,
                **self._options,
            )
            return cluster, None
        # One server, or a Sentinel's master: connections whose timeouts tolerate a busy event loop.
        options = {
            **self._options,
            "socket_timeout": None,  # replies (and big writes) are bounded by the responsive timeouts above
            "socket_connect_timeout": _backstop(self._connect_timeout),
            "lag_tolerant": (self._socket_timeout, self._connect_timeout),
        }
        if target.topology == "sentinel":
            sentinel: Sentinel = cast("Any", Sentinel)(
                list(target.nodes), sentinel_kwargs=self._sentinel_options, **self._options
            )
            master = sentinel.master_for(
                target.service_name,
                connection_pool_class=_BlockingSentinelPool,
                max_connections=self._max_connections,
                timeout=self._pool_timeout,
                **{**options, "connection_class": _TolerantSentinelConnection},
            )
            return cast("Redis", master), sentinel
        pool = BlockingConnectionPool(
            connection_class=_TOLERANT.get(target.connection_class, target.connection_class),
            max_connections=self._max_connections,
            timeout=self._pool_timeout,
            **options,
        )
        return Redis.from_pool(pool), None

    async def _close_with_loop(
        self, loop: asyncio.AbstractEventLoop, client: Redis | RedisCluster, sentinel: Sentinel | None
    ) -> AsyncGenerator[None, None]:
        try:
            yield
        finally:
            with self._lock:
                if (entry := self._clients.get(loop)) is not None and entry.client is client:
                    del self._clients[loop]
            with contextlib.suppress(RedisError, RedisClusterException, OSError):
                await client.aclose()
            if sentinel is not None:
                with contextlib.suppress(RedisError, OSError):
                    await sentinel.aclose()

    def _forget_closed_loops(self) -> None:
        for loop in [loop for loop in self._clients if loop.is_closed()]:
            del self._clients[loop]


def _backstop(timeout: float | None) -> float | None:
    return None if timeout is None else max(_BACKSTOP, 4 * timeout)


def _seconds(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


def _match_prefix(prefix: str) -> str:
    return _GLOB_SPECIAL.sub(r"\\\1", prefix) + "*"


def _redact(url: str) -> str:
    """Hide everything that could be a password: the whole user part and any `password=` query value."""
    head, sep, rest = url.partition("://")
    if not sep:
        head, rest = "", url
    at = rest.rfind("@")
    if at >= 0:
        rest = "***" + rest[at:]
    rest = re.sub(r"(?i)(password=)[^&#]*", r"\g<1>***", rest)
    return head + sep + rest


def _parse_url(url: str) -> _Target:
    if not isinstance(url, str):
        raise ConfigurationError(f"the Redis URL must be a str, got {type(url).__name__}; {_ACCEPTED_FORMS}")
    url = url.strip()
    problem, target = _try_parse(url)
    if target is None:
        # Raised outside any `except` block so no exception that saw the raw URL is chained to it.
        raise ConfigurationError(invalid_url_message(url, problem))
    return target


_UNPARSABLE: Final = "it cannot be parsed (a port that is not an integer from 0 to 65535, or an unbalanced '[')"


@dataclass(slots=True)
class _Credentials:
    options: dict[str, Any] = field(default_factory=dict)
    shown: str = ""
    """`user:***@`, `user@`, `:***@` or nothing: how the user part appears in the description."""


def _credentials(username: str | None, password: str | None, params: dict[str, str]) -> tuple[str, _Credentials]:
    if "password" in params:
        if password is not None:
            return "the password is given both before '@' and as ?password=", _Credentials()
        password = params["password"] or None
    found = _Credentials()
    if username is not None:
        found.options["username"] = username
    if password is not None:
        found.options["password"] = password
    if username is not None or password is not None:
        found.shown = (username or "") + (":***" if password is not None else "") + "@"
    return "", found


def _query(scheme: str, text: str) -> tuple[str, dict[str, str] | None]:
    try:
        query = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError:
        return "the query string cannot be parsed", None
    allowed = {"password"}
    if scheme != "redis+cluster" and scheme != "rediss+cluster":
        allowed.add("db")
    if scheme.startswith("rediss"):
        allowed.update(_SSL_OPTIONS)
    unknown = sorted(set(query) - allowed)
    if unknown:
        return f"unknown query parameter(s) {', '.join(unknown)} (allowed here: {', '.join(sorted(allowed))})", None
    repeated = sorted(name for name, values in query.items() if len(values) > 1)
    if repeated:
        return f"query parameter(s) given more than once: {', '.join(repeated)}", None
    return "", {name: values[0] for name, values in query.items()}


def _database(db_text: str | None) -> int | None:
    if db_text is None or db_text == "":
        return 0
    if db_text.isascii() and db_text.isdigit():
        return int(db_text)
    return None


def _tls(params: dict[str, str], options: dict[str, Any]) -> str:
    for name in _SSL_OPTIONS:
        if params.get(name):
            options[name] = params[name]
    reqs = options.get("ssl_cert_reqs")
    if reqs is not None and reqs not in _CERT_REQS:
        return f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}"
    return ""


def _shown_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _try_parse(url: str) -> tuple[str, _Target | None]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return _UNPARSABLE, None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        shown = f"{scheme!r}" if scheme else "none"
        return f"unsupported scheme {shown}", None
    if "+" in scheme:
        return _try_parse_group(scheme, parts.netloc, parts.path, parts.query, parts.fragment)
    try:
        port = parts.port
    except ValueError:
        return _UNPARSABLE, None
    if parts.fragment:
        return "a '#fragment' is not allowed", None
    problem, params = _query(scheme, parts.query)
    if params is None:
        return problem, None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    problem, credentials = _credentials(username, password, params)
    if problem:
        return problem, None
    options = credentials.options

    db_text = params.get("db")
    if scheme == "unix":
        if parts.hostname or port is not None:
            return "a unix:// URL takes no host or port, only a path: unix:///path/to/redis.sock", None
        path = unquote(parts.path)
        if not path.startswith("/") or path == "/":
            return "a unix:// URL needs the absolute path of the socket: unix:///path/to/redis.sock", None
        options["path"] = path
        connection_class: type[AbstractConnection] = UnixDomainSocketConnection
        address = f"{credentials.shown}{path}"
    else:
        if not parts.hostname:
            return "the host is missing", None
        if port == 0:
            return "the port must be an integer from 1 to 65535", None
        host = unquote(parts.hostname)
        path = parts.path
        if path not in ("", "/"):
            if db_text is not None:
                return "the database is given both as the path and as ?db=", None
            db_text = path[1:]
        options["host"] = host
        options["port"] = port or _REDIS_PORT
        connection_class = Connection
        address = f"{credentials.shown}{_shown_host(host)}:{options['port']}"

    db = _database(db_text)
    if db is None:
        return "the database index must be a non-negative integer (the path '/N', or ?db=N)", None
    options["db"] = db

    if scheme == "rediss":
        connection_class = SSLConnection
        problem = _tls(params, options)
        if problem:
            return problem, None
    elif scheme == "unix":
        return "", _Target(f"unix://{address}?db={db}", options, connection_class)
    return "", _Target(f"{scheme}://{address}/{db}", options, connection_class)


def _try_parse_group(scheme: str, netloc: str, path: str, query: str, fragment: str) -> tuple[str, _Target | None]:
    """`redis+sentinel://` and `redis+cluster://` URLs: several `host[:port]`, separated by commas."""
    sentinel = scheme == "redis+sentinel"
    if fragment:
        return "a '#fragment' is not allowed", None
    problem, params = _query(scheme, query)
    if params is None:
        return problem, None
    userinfo, at, hosts_text = netloc.rpartition("@")
    user, colon, secret = userinfo.partition(":")
    username = unquote(user) if at and user else None
    password = unquote(secret) if at and colon and secret else None
    problem, credentials = _credentials(username, password, params)
    if problem:
        return problem, None
    options = credentials.options

    nodes: list[tuple[str, int]] = []
    for item in hosts_text.split(","):
        if not item:
            return "the host is missing" if not hosts_text else "an empty host in the comma-separated list", None
        try:
            node = urlsplit("//" + item)
            host, port = node.hostname, node.port
        except ValueError:
            return _UNPARSABLE, None
        if not host or node.username is not None or node.password is not None:
            return _UNPARSABLE if host else "the host is missing", None
        if port == 0:
            return "the port must be an integer from 1 to 65535", None
        nodes.append((unquote(host), port or (_SENTINEL_PORT if sentinel else _REDIS_PORT)))
    shown_nodes = ",".join(f"{_shown_host(host)}:{port}" for host, port in nodes)

    if not sentinel:
        if path not in ("", "/", "/0"):
            return "Redis Cluster has only database 0: give no path (redis+cluster://host:port,host:port)", None
        if scheme == "rediss+cluster":
            options["ssl"] = True
            problem = _tls(params, options)
            if problem:
                return problem, None
        return "", _Target(
            f"{scheme}://{credentials.shown}{shown_nodes}", options, topology="cluster", nodes=tuple(nodes)
        )

    segments = path[1:].split("/") if path.startswith("/") else []
    service_name = unquote(segments[0]) if segments else ""
    if not service_name:
        return "the Sentinel service name is missing (redis+sentinel://host:26379/mymaster)", None
    if len(segments) > 2:
        return "the path must be /service_name or /service_name/db", None
    db_text = params.get("db")
    if len(segments) == 2 and segments[1] != "":
        if db_text is not None:
            return "the database is given both as the path and as ?db=", None
        db_text = segments[1]
    db = _database(db_text)
    if db is None:
        return "the database index must be a non-negative integer (/service_name/N, or ?db=N)", None
    options["db"] = db
    description = f"{scheme}://{credentials.shown}{shown_nodes}/{service_name}/{db}"
    return "", _Target(description, options, topology="sentinel", nodes=tuple(nodes), service_name=service_name)
