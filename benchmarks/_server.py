"""A throwaway `redis-server` for the benchmark: a free loopback port, a temporary folder, nothing persisted.

Never the system Redis: the server is started as a child process on a port the kernel picks, with `--save ""`
and `--appendonly no`, and it is stopped (and its folder deleted) when the `with` block ends.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from types import TracebackType
from typing import Self

import redis

__all__ = ["RedisServer"]

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


class RedisServer:
    """`with RedisServer() as server: server.url` starts a private server and stops it afterwards."""

    def __init__(self) -> None:
        executable = os.environ.get("REDIS_SERVER") or shutil.which("redis-server")
        if executable is None:
            raise SystemExit(
                "redis-server is not on PATH: install Redis (apt-get install redis-server, brew install redis) "
                "or set REDIS_SERVER to the executable; the benchmark starts its own throwaway server"
            )
        self._executable = executable
        self._process: subprocess.Popen[bytes] | None = None
        self._directory: str | None = None
        self.port = 0

    @property
    def url(self) -> str:
        """`redis://127.0.0.1:<port>/0`."""
        return f"redis://{HOST}:{self.port}/0"

    def __enter__(self) -> Self:
        self._directory = tempfile.mkdtemp(prefix="pyai_caching-bench-")
        for _ in range(5):  # another process may grab the free port between the probe and the bind
            self.port = _free_port()
            self._process = subprocess.Popen(
                [
                    self._executable,
                    "--port", str(self.port),
                    "--bind", HOST,
                    "--save", "",
                    "--appendonly", "no",
                    "--dir", self._directory,
                    "--daemonize", "no",
                    "--loglevel", "warning",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if self._wait_ready():
                return self
            self._kill()
        self._cleanup()
        raise SystemExit("could not start a throwaway redis-server on a free loopback port")

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._kill()
        self._cleanup()

    def _wait_ready(self) -> bool:
        assert self._process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                return False
            with contextlib.suppress(redis.RedisError), redis.Redis(host=HOST, port=self.port) as client:
                if client.ping():
                    return True
            time.sleep(0.02)
        return False

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _cleanup(self) -> None:
        if self._directory is not None:
            shutil.rmtree(self._directory, ignore_errors=True)
            self._directory = None
