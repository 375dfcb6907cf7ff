"""What every command shares: exit codes, errors reported as one line, the store options and opening the store,
running a command's work on an event loop, and parsing durations and dates.

A command reports a failure by raising `CliError` inside its work (or calling `fail` outside it); `execute` turns
every failure, expected or not, into one escaped line on stderr (a JSON object with `--json`) and an exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sqlite3
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from enum import IntEnum
from typing import Annotated, Final, NoReturn, TypeVar

import typer
from redis.exceptions import AuthenticationError, RedisError, ResponseError

from pyai_caching._util.escape import escape_json_text, escape_text
from pyai_caching._util.redact import redact_url_in_text
from pyai_caching.engine.keys import namespace_prefix
from pyai_caching.engine.registry import CACHE_DIR_ENV, REDIS_URL_ENV, check_redis_url
from pyai_caching.exceptions import ConfigurationError
from pyai_caching.stores import LocalStore, RedisStore, Store

__all__ = [
    "CliError",
    "DirOption",
    "ExitCode",
    "JsonOption",
    "NamespaceOption",
    "RedisUrlOption",
    "TaskOption",
    "execute",
    "fail",
    "missing_file",
    "parse_duration",
    "parse_since",
    "prefix_or_exit",
    "short",
    "store_or_exit",
]

T = TypeVar("T")


class ExitCode(IntEnum):
    """The exit codes of `pyai-caching` (stable: scripts may rely on them)."""

    OK = 0
    """The command did what was asked."""
    ERROR = 1
    """The command failed: no such entry, deletion not confirmed, or an unexpected error."""
    USAGE = 2
    """Bad usage or configuration: unknown option, bad URL, bad duration or date."""
    UNREACHABLE = 3
    """The store cannot be reached: Redis down or refusing the password, database file unreadable."""
    INTERRUPTED = 130
    """Interrupted (Ctrl-C)."""


_TRACEBACK_ENV: Final = "PYAI_CACHING_TRACEBACK"


# --- options -----------------------------------------------------------------------------------------------------

RedisUrlOption = Annotated[
    str | None,
    typer.Option(
        "--redis-url",
        help=f"Redis URL (redis://, rediss://, unix://). Default: ${REDIS_URL_ENV}, else the embedded store.",
        show_default=False,
    ),
]
DirOption = Annotated[
    str | None,
    typer.Option(
        "--dir",
        help=f"Use the embedded store in this folder. Default: ${CACHE_DIR_ENV}, else the user cache folder.",
        show_default=False,
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for scripts instead of tables.")]
NamespaceOption = Annotated[
    str | None, typer.Option("--namespace", "-n", help="Only this namespace.", show_default=False)
]
TaskOption = Annotated[str | None, typer.Option("--task", "-t", help="Only this task.", show_default=False)]


# --- errors ------------------------------------------------------------------------------------------------------


class CliError(Exception):
    """A failure to report as one line, with the exit code to use."""

    def __init__(self, message: str, code: ExitCode = ExitCode.ERROR) -> None:
        super().__init__(message)
        self.code = code


def fail(message: str, code: ExitCode, as_json: bool) -> NoReturn:
    """Report `message` on stderr (escaped; a JSON object with `--json`) and exit with `code`."""
    if as_json:
        sys.stderr.write(escape_json_text(json.dumps({"error": message, "exit_code": int(code)}, ensure_ascii=False)))
        sys.stderr.write("\n")
    else:
        sys.stderr.write(f"pyai-caching: error: {escape_text(message)}\n")
    sys.stderr.flush()
    raise typer.Exit(int(code))


def short(error: BaseException) -> str:
    """An exception as one short line: `ConnectionError: Error 111 connecting to ...`."""
    text = " ".join(str(error).split())
    return f"{type(error).__name__}: {text[:200]}" if text else type(error).__name__


def _store_failure(store: Store | None, error: BaseException) -> tuple[str, ExitCode]:
    """What to say when the store fails a command, and the exit code."""
    where = store.description if store is not None else "the store"
    if isinstance(store, LocalStore):
        return (
            f"cannot use the embedded store {store.path} ({short(error)}); check that the folder exists and is "
            f"readable and writable, or pass --dir with another folder"
        ), ExitCode.UNREACHABLE
    if isinstance(error, AuthenticationError) or "NOAUTH" in str(error) or "WRONGPASS" in str(error):
        return (
            f"Redis at {where} refused the credentials ({short(error)}); put the right user and password in "
            f"the URL (redis://user:password@host:port/db)"
        ), ExitCode.UNREACHABLE
    if isinstance(error, ResponseError) and "DB index is out of range" in str(error):
        return (
            f"the database in {where} does not exist on that server (it has fewer databases: 16 by default, "
            f"0 to 15, set by `databases` in redis.conf); pass a URL ending in an existing /db"
        ), ExitCode.USAGE
    if isinstance(error, ResponseError):
        return f"Redis at {where} answered with an error ({short(error)})", ExitCode.UNREACHABLE
    return (
        f"cannot reach Redis at {where} ({short(error)}); start the server or pass a reachable --redis-url "
        f"(or set {REDIS_URL_ENV})"
    ), ExitCode.UNREACHABLE


def execute(as_json: bool, store: Store | None, work: Callable[[], Awaitable[T]]) -> T:
    """Run `work` on a fresh event loop and turn every failure into one line and an exit code."""
    try:
        return asyncio.run(_closing(store, work))
    except typer.Exit:
        raise
    except CliError as e:
        fail(str(e), e.code, as_json)
    except ConfigurationError as e:
        fail(str(e), ExitCode.USAGE, as_json)
    except (RedisError, sqlite3.Error, OSError) as e:
        message, code = _store_failure(store, e)
        fail(redact_url_in_text(message), code, as_json)
    except KeyboardInterrupt:
        fail("interrupted", ExitCode.INTERRUPTED, as_json)
    except Exception as e:
        if os.environ.get(_TRACEBACK_ENV):
            raise
        fail(
            redact_url_in_text(
                f"unexpected {short(e)} (set {_TRACEBACK_ENV}=1 to see the traceback, and please report it)"
            ),
            ExitCode.ERROR,
            as_json,
        )


async def _closing(store: Store | None, work: Callable[[], Awaitable[T]]) -> T:
    try:
        return await work()
    finally:
        if store is not None:
            with contextlib.suppress(Exception):  # closing must not hide the command's own result or error
                await store.close()


# --- the store ---------------------------------------------------------------------------------------------------


def _open_store(redis_url: str | None, directory: str | None) -> Store:
    """The store of a command: --redis-url, --dir, $LLM_CACHE_REDIS_URL, then the embedded store."""
    if redis_url is not None and directory is not None:
        raise CliError("pass either --redis-url or --dir, not both", ExitCode.USAGE)
    if redis_url is not None:
        if not redis_url.strip():
            raise CliError("--redis-url is empty; pass a URL such as redis://localhost:6379/0", ExitCode.USAGE)
        return _redis_store(redis_url)
    if directory is not None:
        return LocalStore(directory)
    env_url = os.environ.get(REDIS_URL_ENV)
    if env_url:
        return _redis_store(env_url)
    return LocalStore(None)


def _redis_store(url: str) -> RedisStore:
    check_redis_url(url)
    # A command line can wait a little longer than a model call would.
    return RedisStore(url, socket_timeout=5.0, connect_timeout=3.0, client_name="pyai_caching-cli")


def store_or_exit(redis_url: str | None, directory: str | None, as_json: bool) -> Store:
    """The store the options (or the environment) name; a bad option or URL is a usage error."""
    try:
        return _open_store(redis_url, directory)
    except CliError as e:
        fail(str(e), e.code, as_json)
    except ConfigurationError as e:
        fail(str(e), ExitCode.USAGE, as_json)


def prefix_or_exit(namespace: str | None, as_json: bool) -> str:
    """The key prefix of `--namespace` (every entry's without it); a namespace that cannot exist is a usage error."""
    try:
        return namespace_prefix(namespace)
    except ConfigurationError as e:
        fail(str(e), ExitCode.USAGE, as_json)


def missing_file(store: Store) -> bool:
    """An embedded store whose file does not exist yet is empty; reading it must not create it."""
    return isinstance(store, LocalStore) and not store.path.exists()


# --- parsing -----------------------------------------------------------------------------------------------------

_DURATION_RE: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_duration(text: str, option: str) -> float:
    """`90s`, `15m`, `12h`, `7d`, `2w` -> seconds."""
    match = _DURATION_RE.match(text)
    if match is None:
        raise CliError(f"{option} must be a duration such as 90s, 15m, 12h, 7d or 2w, got {text!r}", ExitCode.USAGE)
    return float(match[1]) * _UNIT_SECONDS[match[2].lower()]


def parse_since(text: str, now: datetime) -> date:
    """`--since`: a duration back from now (`7d`) or a date (`2026-11-01`) -> the first day included (UTC)."""
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        pass
    if _DURATION_RE.match(text) is None:
        raise CliError(
            f"--since must be a duration back from now (7d, 12h, 2w) or a date (2026-11-01), got {text!r}",
            ExitCode.USAGE,
        )
    seconds = parse_duration(text, "--since")
    return datetime.fromtimestamp(now.timestamp() - seconds, UTC).date()
