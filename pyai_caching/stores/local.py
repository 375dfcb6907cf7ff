"""`LocalStore`: the embedded default store, one SQLite file shared by every process of this machine.

SQLite runs in WAL mode with a busy timeout, so several processes can read and write the same file at once:
readers never wait for writers, and writers wait their turn (up to 5 seconds) instead of failing. Every
statement is its own short transaction. The blocking SQLite calls run in a worker thread (`asyncio.to_thread`),
so the event loop never waits on the disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Final, TypeVar

import platformdirs

from pyai_caching.exceptions import ConfigurationError

__all__ = ["LocalStore"]

T = TypeVar("T")

FILENAME: Final = "pyai_caching.sqlite3"
"""The name of the SQLite file inside the store's folder."""

CACHE_DIR_ENV: Final = "LLM_CACHE_DIR"
"""Environment variable naming the folder when no `directory` is given."""

_BUSY_TIMEOUT: Final = 5.0
_PURGE_INTERVAL: Final = 60.0
_SCAN_PAGE: Final = 1000
_LIVE: Final = "(expires_at IS NULL OR expires_at > ?)"
_SCHEMA: Final = (
    """
    CREATE TABLE IF NOT EXISTS entries (
        key TEXT PRIMARY KEY NOT NULL,
        value BLOB NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL
    )
    """,
    "CREATE INDEX IF NOT EXISTS entries_expires_at ON entries (expires_at) WHERE expires_at IS NOT NULL",
)


class LocalStore:
    """Keeps entries in `pyai_caching.sqlite3`, a SQLite file that every process on this machine can share.

    Entries have an `expires_at` time (unix seconds, `NULL` for never); expired rows are invisible at once and
    deleted at most once a minute, when an entry is written. Put the folder on a local disk: SQLite's WAL mode
    does not work on network file systems.
    """

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        """Choose the file; nothing is opened or created until the first operation.

        Args:
            directory: The folder of the database file. `None` means the `LLM_CACHE_DIR` environment variable
                if it is set and not empty, else the user cache folder (`platformdirs.user_cache_dir`, for example
                `~/.cache/pyai_caching` on Linux). The folder is created on first use.
        """
        if directory is None:
            directory = os.environ.get(CACHE_DIR_ENV) or platformdirs.user_cache_dir("pyai_caching", appauthor=False)
        if not isinstance(directory, str | os.PathLike):
            raise ConfigurationError(f"directory must be a path or None, got {type(directory).__name__}")
        self._path = Path(directory).expanduser().absolute() / FILENAME
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._finalizer: weakref.finalize[[], LocalStore] | None = None
        self._last_purge = -_PURGE_INTERVAL

    @property
    def path(self) -> Path:
        """The absolute path of the SQLite file."""
        return self._path

    @property
    def description(self) -> str:
        """`local:` followed by the path of the SQLite file."""
        return f"local:{self._path}"

    def __repr__(self) -> str:
        return f"LocalStore({str(self._path.parent)!r})"

    async def get(self, key: str) -> bytes | None:
        """Return the value of `key`, or `None` when there is none or it expired."""
        return await self._run(self._get, key)

    async def set(self, key: str, value: bytes, *, ttl: float | None) -> None:
        """`INSERT OR REPLACE` the entry (one transaction: readers see the old value or the new one)."""
        await self._run(self._set, key, value, ttl)

    async def delete(self, key: str) -> bool:
        """Delete `key`; return whether a live (unexpired) entry was there."""
        return await self._run(self._delete, key)

    async def scan(self, prefix: str) -> AsyncIterator[str]:
        """Yield the live keys that start with `prefix`, in key order, reading 1000 at a time."""
        upper = _prefix_upper(prefix)
        after: str | None = None
        while True:
            keys = await self._run(self._scan_page, prefix, upper, after)
            for key in keys:
                yield key
            if len(keys) < _SCAN_PAGE:
                return
            after = keys[-1]

    async def clear(self, prefix: str) -> int:
        """Delete every entry whose key starts with `prefix`; return how many live entries were deleted."""
        return await self._run(self._clear, prefix, _prefix_upper(prefix))

    async def close(self) -> None:
        """Close the database connection; the next operation opens it again."""
        await asyncio.to_thread(self._close)

    # Everything below runs in a worker thread, one operation at a time per store (the connection is shared).

    async def _run(self, operation: Callable[..., T], *args: object) -> T:
        return await asyncio.to_thread(self._locked, operation, *args)

    def _locked(self, operation: Callable[..., T], *args: object) -> T:
        with self._lock:
            connection = self._connection
            if connection is None:
                connection = self._connection = self._open()
            return operation(connection, *args)

    def _open(self) -> sqlite3.Connection:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        connection = sqlite3.connect(self._path, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False)
        try:
            _use_wal(connection)
            connection.execute("PRAGMA synchronous = NORMAL")
            for statement in _SCHEMA:
                connection.execute(statement)
        except BaseException:
            connection.close()
            raise
        # Closes the connection if the store is garbage-collected (or at exit) without `close()`.
        self._finalizer = weakref.finalize(self, connection.close)
        return connection

    def _close(self) -> None:
        with self._lock:
            finalizer, self._finalizer, self._connection = self._finalizer, None, None
            if finalizer is not None:
                finalizer()

    @staticmethod
    def _get(connection: sqlite3.Connection, key: str) -> bytes | None:
        row = connection.execute(f"SELECT value FROM entries WHERE key = ? AND {_LIVE}", (key, time.time())).fetchone()
        return None if row is None else bytes(row[0])

    def _set(self, connection: sqlite3.Connection, key: str, value: bytes, ttl: float | None) -> None:
        now = time.time()
        connection.execute(
            "INSERT OR REPLACE INTO entries (key, value, created_at, expires_at) VALUES (?, ?, ?, ?)",
            (key, value, now, None if ttl is None else now + ttl),
        )
        if now - self._last_purge >= _PURGE_INTERVAL:
            self._last_purge = now
            # Opportunistic: if another process holds the lock for too long, the next purge will do it.
            with contextlib.suppress(sqlite3.OperationalError):
                connection.execute("DELETE FROM entries WHERE expires_at <= ?", (now,))

    @staticmethod
    def _delete(connection: sqlite3.Connection, key: str) -> bool:
        cursor = connection.execute(f"DELETE FROM entries WHERE key = ? AND {_LIVE}", (key, time.time()))
        return cursor.rowcount > 0

    @staticmethod
    def _scan_page(connection: sqlite3.Connection, prefix: str, upper: str | None, after: str | None) -> list[str]:
        where, params = _prefix_range(prefix, upper)
        if after is not None:
            where += " AND key > ?"
            params.append(after)
        params.append(time.time())
        sql = f"SELECT key FROM entries WHERE {where} AND {_LIVE} ORDER BY key LIMIT {_SCAN_PAGE}"
        return [key for (key,) in connection.execute(sql, params)]

    @staticmethod
    def _clear(connection: sqlite3.Connection, prefix: str, upper: str | None) -> int:
        where, params = _prefix_range(prefix, upper)
        connection.execute("BEGIN IMMEDIATE")
        try:
            deleted = connection.execute(f"DELETE FROM entries WHERE {where} AND {_LIVE}", [*params, time.time()])
            connection.execute(f"DELETE FROM entries WHERE {where}", params)
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        return deleted.rowcount


def _use_wal(connection: sqlite3.Connection) -> None:
    """Switch the file to WAL mode (it stays so): only the first process to open a new file does it.

    Changing the journal mode needs an exclusive lock and SQLite reports a conflict at once instead of calling
    the busy handler, so two processes creating the file together retry here, up to the busy timeout.
    """
    deadline = time.monotonic() + _BUSY_TIMEOUT
    while True:
        try:
            (mode,) = connection.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() != "wal":
                connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            busy = getattr(exc, "sqlite_errorcode", None) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)
            if not busy or time.monotonic() > deadline:
                raise
        time.sleep(0.005)


def _prefix_range(prefix: str, upper: str | None) -> tuple[str, list[object]]:
    """A `WHERE` clause for "key starts with prefix" that uses the primary-key index (unlike `LIKE`)."""
    if upper is None:
        return "key >= ?", [prefix]
    return "key >= ? AND key < ?", [prefix, upper]


def _prefix_upper(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix`, or `None` if there is none.

    SQLite compares TEXT as UTF-8 bytes, which orders like code points, so incrementing the last code point
    that can be incremented (skipping the surrogates, which UTF-8 cannot encode) gives the bound.
    """
    chars = list(prefix)
    while chars:
        code = ord(chars.pop()) + 1
        if code <= 0x10FFFF:
            if 0xD800 <= code <= 0xDFFF:
                code = 0xE000
            return "".join(chars) + chr(code)
    return None
