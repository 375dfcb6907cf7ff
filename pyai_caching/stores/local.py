"""`LocalStore`: the embedded default store, one SQLite file shared by every process of this machine.

SQLite runs in WAL mode with a busy timeout, so several processes can read and write the same file at once:
readers never wait for writers, and writers wait their turn (up to 5 seconds) instead of failing. Every
statement is its own short transaction. The blocking SQLite calls run in a worker thread (`asyncio.to_thread`),
so the event loop never waits on the disk.

What happens to the file is noticed:

* **read-only** (the folder or the file cannot be written): the file is opened read-only and serves hits;
  writes raise `ReadOnlyStoreError` (the engine skips them with one warning). Every 30 seconds the next
  operation tries to open it for writing again.
* **deleted or replaced** (`rm`, another file moved in its place): every operation compares the path's device
  and inode with those of the open file; when they differ, the store logs a warning and opens the file now at
  the path (a new, empty one if there is none), instead of writing into a file nobody else can see.
* **corrupt** (`file is not a database`, `database disk image is malformed`): the file (with its `-wal` and
  `-shm`) is moved aside to `pyai_caching.sqlite3.corrupt-<UTC time>`, a new one is started, one warning is
  logged, and the operation is done again on the new file.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
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
from pyai_caching.stores.base import (
    DEFAULT_MAX_ENTRY_BYTES,
    EntryTooLargeError,
    ReadOnlyStoreError,
    check_max_entry_bytes,
)

__all__ = ["LocalStore"]

logger = logging.getLogger("pyai_caching")

T = TypeVar("T")

FILENAME: Final = "pyai_caching.sqlite3"
"""The name of the SQLite file inside the store's folder."""

CACHE_DIR_ENV: Final = "LLM_CACHE_DIR"
"""Environment variable naming the folder when no `directory` is given."""

_BUSY_TIMEOUT: Final = 5.0
_REOPEN_INTERVAL: Final = 30.0
"""Seconds after which a store opened read-only tries to open its file for writing again."""
_NO_LIMIT: Final = 2**62
_CORRUPT: Final = (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
_READONLY_DBMOVED: Final = 1032
"""SQLite's extended code for a write to a database file that was deleted or renamed while open."""
_NOT_WRITABLE: Final = (sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_READONLY, sqlite3.SQLITE_PERM)
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

    def __init__(
        self,
        directory: str | os.PathLike[str] | None = None,
        *,
        max_entry_bytes: int | None = DEFAULT_MAX_ENTRY_BYTES,
    ) -> None:
        """Choose the file; nothing is opened or created until the first operation.

        Args:
            directory: The folder of the database file. `None` means the `LLM_CACHE_DIR` environment variable
                if it is set and not empty, else the user cache folder (`platformdirs.user_cache_dir`, for example
                `~/.cache/pyai_caching` on Linux). The folder is created on first use.
            max_entry_bytes: The largest value `set` writes and `get` reads (8 MiB by default; `None`: no limit).
                A bigger stored value is never loaded: `get` raises `EntryTooLargeError`.
        """
        self._max_entry_bytes = check_max_entry_bytes(max_entry_bytes)
        if directory is None:
            directory = os.environ.get(CACHE_DIR_ENV) or platformdirs.user_cache_dir("pyai_caching", appauthor=False)
        if not isinstance(directory, str | os.PathLike):
            raise ConfigurationError(f"directory must be a path or None, got {type(directory).__name__}")
        self._path = Path(directory).expanduser().absolute() / FILENAME
        self._lock = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._finalizer: weakref.finalize[[], LocalStore] | None = None
        self._identity: tuple[int, int] | None = None
        """(device, inode) of the open file."""
        self._reopen_at: float | None = None
        """When a store that could not write tries to open its file for writing again (`None`: it can write)."""
        self._last_purge = -_PURGE_INTERVAL

    @property
    def path(self) -> Path:
        """The absolute path of the SQLite file."""
        return self._path

    @property
    def description(self) -> str:
        """`local:` followed by the path of the SQLite file."""
        return f"local:{self._path}"

    @property
    def max_entry_bytes(self) -> int | None:
        """The largest value this store writes and reads, in bytes (`None`: no limit)."""
        return self._max_entry_bytes

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
            try:
                return operation(self._current(), *args)
            except sqlite3.DatabaseError as error:
                if not self._recovered(error):
                    raise
            return operation(self._current(), *args)  # once more, on the file opened instead

    def _current(self) -> sqlite3.Connection:
        """The open connection, after checking that the path still names the file it has open."""
        connection = self._connection
        if connection is not None:
            change = _change(self._path, self._identity)
            if change:
                logger.warning(
                    "cache file %s was %s while in use; opening the file now at that path%s",
                    self._path,
                    change,
                    " (a new, empty one)" if change == "deleted" else "",
                )
                self._drop_connection()
                _remove_orphaned_log(self._path)
                connection = None
            elif self._reopen_at is not None and time.monotonic() >= self._reopen_at:
                self._drop_connection()  # read-only a while ago: maybe writable again
                connection = None
        if connection is None:
            connection = self._connection = self._open()
        return connection

    def _recovered(self, error: sqlite3.DatabaseError) -> bool:
        """Deal with an error that says the file is corrupt or gone; whether the operation may be tried again."""
        code = getattr(error, "sqlite_errorcode", None)
        if code == _READONLY_DBMOVED:
            self._drop_connection()  # deleted or renamed under us: open what is at the path now
            return True
        if code is not None and code & 0xFF in _CORRUPT:
            self._move_corrupt_aside(error)
            return True
        if code is not None and code & 0xFF == sqlite3.SQLITE_READONLY:
            self._reopen_at = time.monotonic() + _REOPEN_INTERVAL
            raise ReadOnlyStoreError(
                f"the cache file {self._path} is read-only (its folder or the file cannot be written): hits are "
                f"served from it, new entries are not stored ({error})"
            ) from None
        return False

    def _move_corrupt_aside(self, error: sqlite3.DatabaseError) -> None:
        opened = self._identity
        self._drop_connection()
        try:
            found = os.stat(self._path)
        except FileNotFoundError:
            return  # another process moved it aside already
        if opened is not None and (found.st_dev, found.st_ino) != opened:
            return  # another process moved it aside and started a new one: use that
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        target = self._path.with_name(f"{self._path.name}.corrupt-{stamp}")
        n = 1
        while target.exists():
            n += 1
            target = self._path.with_name(f"{self._path.name}.corrupt-{stamp}-{n}")
        try:
            os.rename(self._path, target)
        except FileNotFoundError:
            return
        for suffix in ("-wal", "-shm"):  # a new file must not pick up the old file's log
            with contextlib.suppress(FileNotFoundError):
                os.rename(f"{self._path}{suffix}", f"{target}{suffix}")
        logger.warning(
            "cache file %s was corrupt (%s); moved it aside to %s and started a new one",
            self._path,
            error,
            target.name,
        )

    def _open(self) -> sqlite3.Connection:
        try:
            connection = self._connect("rw")
            self._reopen_at = None
        except (sqlite3.OperationalError, OSError) as error:
            if not _not_writable(error):
                raise
            connection = self._open_read_only(error)
            self._reopen_at = time.monotonic() + _REOPEN_INTERVAL
        # Closes the connection if the store is garbage-collected (or at exit) without `close()`.
        self._finalizer = weakref.finalize(self, connection.close)
        return connection

    def _open_read_only(self, error: BaseException) -> sqlite3.Connection:
        """Open a file that cannot be written: `mode=ro` reads a WAL file whose `-shm` exists (a writer may be
        using it); without one no WAL connection is open anywhere, so `immutable=1` reads the file as it is."""
        if not self._path.exists():
            raise error
        try:
            connection = self._connect("ro")
        except sqlite3.OperationalError as ro_error:
            if not _not_writable(ro_error):
                raise
            connection = self._connect("immutable")
        logger.debug("%s cannot be written (%s); opened it read-only", self._path, error)
        return connection

    def _connect(self, mode: str) -> sqlite3.Connection:
        if mode == "rw":
            self._path.parent.mkdir(parents=True, exist_ok=True)
            target, uri = str(self._path), False
        else:
            query = "mode=ro" if mode == "ro" else "immutable=1"
            target, uri = f"{self._path.absolute().as_uri()}?{query}", True
        connection = sqlite3.connect(
            target, timeout=_BUSY_TIMEOUT, isolation_level=None, check_same_thread=False, uri=uri
        )
        try:
            with contextlib.suppress(FileNotFoundError):
                found = os.stat(self._path)
                self._identity = (found.st_dev, found.st_ino)
            if mode == "rw":
                _use_wal(connection)
                connection.execute("PRAGMA synchronous = NORMAL")
                for statement in _SCHEMA:
                    connection.execute(statement)
            else:
                connection.execute("SELECT 1 FROM entries LIMIT 0")
        except BaseException:
            connection.close()
            raise
        return connection

    def _drop_connection(self) -> None:
        finalizer, self._finalizer, self._connection = self._finalizer, None, None
        self._identity = None
        if finalizer is not None:
            finalizer()

    def _close(self) -> None:
        with self._lock:
            self._drop_connection()

    def _get(self, connection: sqlite3.Connection, key: str) -> bytes | None:
        limit = _NO_LIMIT if self._max_entry_bytes is None else self._max_entry_bytes
        now = time.time()
        # The size is checked before the value is loaded: a bigger one is never read into memory.
        row = connection.execute(
            f"SELECT value FROM entries WHERE key = ? AND {_LIVE} AND length(value) <= ?", (key, now, limit)
        ).fetchone()
        if row is not None:
            return bytes(row[0])
        row = connection.execute(f"SELECT length(value) FROM entries WHERE key = ? AND {_LIVE}", (key, now)).fetchone()
        if row is not None:
            raise EntryTooLargeError(key, int(row[0]), limit)
        return None

    def _set(self, connection: sqlite3.Connection, key: str, value: bytes, ttl: float | None) -> None:
        if self._max_entry_bytes is not None and len(value) > self._max_entry_bytes:
            raise EntryTooLargeError(key, len(value), self._max_entry_bytes)
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


def _change(path: Path, identity: tuple[int, int] | None) -> str:
    """How the file at `path` differs from the open one: `"deleted"`, `"replaced"`, or `""` (it is the same)."""
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return "deleted"
    except OSError:
        return ""  # cannot tell (a folder that cannot be searched): keep what is open
    if identity is not None and (found.st_dev, found.st_ino) != identity:
        return "replaced"
    return ""


def _remove_orphaned_log(path: Path) -> None:
    """Delete the `-wal` and `-shm` files that a deleted or replaced database file left behind.

    SQLite finds them by name: a database created or moved in at the path would otherwise read the old file's
    pages from them as its own. They are the old file's when the database is gone, or when the log was last
    written before the database now at the path arrived there (a log written since belongs to the new file).
    """
    try:
        arrived = os.stat(path).st_ctime
    except FileNotFoundError:
        arrived = None
    try:
        log_written = os.stat(f"{path}-wal").st_mtime
    except FileNotFoundError:
        log_written = None
    if arrived is not None and (log_written is None or log_written > arrived):
        return
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{path}{suffix}")


def _not_writable(error: BaseException) -> bool:
    """Whether opening failed because the folder or the file cannot be written."""
    if isinstance(error, OSError):
        return error.errno in (errno.EACCES, errno.EPERM, errno.EROFS)
    code = getattr(error, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in _NOT_WRITABLE


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
