"""`RedisStore`: the `Store` methods on Redis, and one redis-py client per event loop."""

from __future__ import annotations

import asyncio
import contextlib
import math
import re
import threading
import weakref
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisClusterException, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from pyai_caching.stores.base import (
    DEFAULT_MAX_ENTRY_BYTES,
    EntryTooLargeError,
    SlowTransferError,
    check_max_entry_bytes,
)
from pyai_caching.stores.lag import loop_lag
from pyai_caching.stores.redis.clients import configure
from pyai_caching.stores.redis.scripts import ACQUIRE_LOCK, READ, RELEASE_LOCK, RENEW_LOCK

__all__ = ["INLINE_BYTES", "RedisStore"]

T = TypeVar("T")

_SCAN_COUNT: Final = 1000
_DELETE_BATCH: Final = 500
_GLOB_SPECIAL: Final = re.compile(r"([\\*?\[\]])")
INLINE_BYTES: Final = 1024 * 1024
"""Values up to this size are read in one round trip. A bigger one costs two: its size, then the value itself,
so that a timeout while it is being transferred is known to be a slow transfer of that value, not an outage."""
_NO_LIMIT: Final = 2**53
_EXCUSED_RETRIES: Final = 3
"""How many times one command is sent again after a timeout that the busy event loop, not the server, caused."""


@dataclass(slots=True)
class _LoopClient:
    client: Redis | RedisCluster
    guard: AsyncGenerator[None, None]
    scripts: dict[str, AsyncScript] = field(default_factory=dict)


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
        config = configure(
            url,
            socket_timeout=socket_timeout,
            connect_timeout=connect_timeout,
            max_connections=max_connections,
            pool_timeout=pool_timeout,
            client_name=client_name,
            sentinel_kwargs=sentinel_kwargs,
            connection_kwargs=connection_kwargs,
        )
        self._max_entry_bytes = check_max_entry_bytes(max_entry_bytes)
        config.check()
        self._config = config
        self._description = config.target.description
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

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
        """The database index the URL selects (`0` for a Redis Cluster, which has no other)."""
        database: int = self._config.target.options.get("db", 0)
        return database

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
        found = await self._script(READ, [key], [min(limit, INLINE_BYTES)])
        if not isinstance(found, int):
            return cast("bytes | None", found)
        if found > limit:
            raise EntryTooLargeError(key, found, limit)
        try:
            found = await self._script(READ, [key], [limit])
        except RedisTimeoutError as error:
            raise SlowTransferError(
                f"reading {key} ({found:,} bytes) from {self._description} took more than socket_timeout="
                f"{self._config.socket_timeout} s although the server answered (a slow link?)"
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
                f"{self._config.socket_timeout} s (a slow link?)"
            ) from error

    async def delete(self, key: str) -> bool:
        """`UNLINK key`; return whether the key existed."""
        removed: int = await self._call(lambda client: client.unlink(key))
        return removed > 0

    async def scan(self, prefix: str) -> AsyncIterator[str]:
        """`SCAN MATCH <prefix>* COUNT 1000` (on every primary of a cluster), with glob characters in `prefix`
        escaped; each key is yielded once."""
        client = await self.client()
        seen: set[bytes] = set()
        async for raw in client.scan_iter(match=_match_prefix(prefix), count=_SCAN_COUNT):
            if raw not in seen:
                seen.add(raw)
                yield raw.decode("utf-8", "replace")

    async def clear(self, prefix: str) -> int:
        """Delete the keys that start with `prefix` (`SCAN` then `UNLINK` in batches of 500); never `FLUSHDB`.

        On a cluster, `SCAN` visits every primary and each `UNLINK` only names keys of one hash slot.
        """
        client = await self.client()
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
        return await self._lock_script(ACQUIRE_LOCK, key, token, ttl)

    async def renew_lock(self, key: str, token: str, *, ttl: float) -> bool:
        """`PEXPIRE key ttl` if `key` still holds `token` (compare and extend, atomically in Lua)."""
        return await self._lock_script(RENEW_LOCK, key, token, ttl)

    async def release_lock(self, key: str, token: str) -> bool:
        """`DEL key` if `key` still holds `token` (compare and delete, atomically in Lua)."""
        return await self._lock_script(RELEASE_LOCK, key, token, None)

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
            return self._config.connect_timeout if "connecting" in text else self._config.socket_timeout
        if "No connection available" in text:
            return self._config.pool_timeout
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
        cluster. It is the store's own: do not close it (`close()` does).

        For commands beyond the store's (the spend ledger, budgets and the semantic index use it). Anything sent to a
        cluster must keep the keys of one command in one hash slot (see `pyai_caching.engine.keys`), and every
        command must be allowed by the ACL rule the deployment gives this store's user.
        """
        return (await self._loop_client()).client

    async def _loop_client(self) -> _LoopClient:
        loop = asyncio.get_running_loop()
        entry = self._clients.get(loop)
        if entry is None:
            client, sentinel = self._config.new_client()
            guard = self._close_with_loop(loop, client, sentinel)
            # Starting the generator registers it with the loop, which closes it (and the pool) at shutdown.
            # Nothing in here suspends, so no other task of this loop can open a second client meanwhile.
            await anext(guard)
            entry = _LoopClient(client, guard)
            with self._lock:
                self._forget_closed_loops()
                self._clients[loop] = entry
        return entry

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


def _match_prefix(prefix: str) -> str:
    return _GLOB_SPECIAL.sub(r"\\\1", prefix) + "*"
