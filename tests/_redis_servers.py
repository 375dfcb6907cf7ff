"""Throwaway `redis-server` processes for tests: a free loopback port, a temporary folder, nothing persisted.

```python
with RedisServer("--maxmemory", "1mb") as server:
    store = RedisStore(server.url(db=1))
    server.pause()   # SIGSTOP: connections hang, for timeout tests
    server.resume()  # SIGCONT
    server.stop()    # the port is refused
    server.kill()    # kill -9
    server.start()   # same port, empty data
with RedisServer(flavor="valkey") as server:  # the same, on valkey-server (tests/_server_flavors.py)
    ...
```
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self
from urllib.parse import quote

import redis
from _server_flavors import missing_server_message, server_executable

__all__ = ["RedisServer", "TLSFiles", "make_tls_files", "redis_server_executable"]

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
SHORT_TMP = "/tmp" if os.path.isdir("/tmp") else None
"""Where unix sockets go: a socket's path must stay under 104 (macOS) or 108 (Linux) bytes, and `$TMPDIR` may be
long (macOS's own is about 50 characters before any folder of ours)."""


def redis_server_executable() -> str | None:
    """The path of `redis-server` (the `REDIS_SERVER` environment variable, else `PATH`), or `None`."""
    return server_executable("redis")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class TLSFiles:
    """A throwaway certificate authority and a server certificate for `127.0.0.1` and `localhost`."""

    ca_cert: Path
    cert: Path
    key: Path


def make_tls_files(directory: Path) -> TLSFiles:
    """Create a CA and a server certificate signed by it with the `openssl` command.

    openssl runs inside `directory` on bare file names: it refuses some paths of 250 characters and more ("File
    name too long" for the serial file it derives from the CA's path), and a deep temporary folder reaches that.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not on PATH")
    (directory / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    make_ca = ["req", "-x509", *new_key, "-days", "2", "-keyout", "ca.key", "-out", "ca.crt"]
    make_ca += ["-subj", "/CN=pyai_caching test CA"]
    make_request = ["req", *new_key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"]
    sign = ["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial"]
    sign += ["-out", "server.crt", "-days", "2", "-extfile", "server.ext"]
    for args in (make_ca, make_request, sign):
        done = subprocess.run([openssl, *args], cwd=directory, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed in {directory}:\n{done.stderr}")
    return TLSFiles(ca_cert=directory / "ca.crt", cert=directory / "server.crt", key=directory / "server.key")


class RedisServer:
    """One `redis-server` process bound to 127.0.0.1, with its own temporary `--dir`; nothing is saved to disk.

    Args:
        *args: Extra command-line configuration, e.g. `"--maxmemory", "1mb"`, `"--replicaof", "127.0.0.1", "6400"`,
            `"--user", "alice", "on", ">pw", "~*", "+@all"`.
        password: Sets `requirepass`; `url()` and `client()` then include it.
        unixsocket: Also listen on a unix socket, in a folder of its own with a short path under /tmp (see
            `unix_url`).
        tls: Serve TLS only (the plain port is closed); `url()` then returns a `rediss://` URL. Add
            `"--tls-auth-clients", "yes"` to require client certificates (the readiness probe and `client()`
            present the server's own certificate, which the same CA signed).
        port: A fixed port; by default a free one is picked (and another if it was taken meanwhile).
        flavor: `"redis"`, or `"valkey"` for a `valkey-server` with the same options (tests/_server_flavors.py).
    """

    def __init__(
        self,
        *args: str,
        password: str | None = None,
        unixsocket: bool = False,
        tls: TLSFiles | None = None,
        port: int | None = None,
        flavor: str = "redis",
    ) -> None:
        executable = server_executable(flavor)
        if executable is None:
            raise RuntimeError(missing_server_message(flavor))
        self.flavor = flavor
        self.executable = executable
        self.args: tuple[str, ...] = args
        self.password = password
        self.tls = tls
        self.directory = Path(tempfile.mkdtemp(prefix="pyai-redis-"))
        self._socket_directory = Path(tempfile.mkdtemp(prefix="pr-", dir=SHORT_TMP)) if unixsocket else None
        self.unixsocket = self._socket_directory / "redis.sock" if self._socket_directory is not None else None
        self._fixed_port = port is not None
        self.port: int = port if port is not None else _free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._paused = False

    # -- addresses ---------------------------------------------------------------------------------------------

    def url(self, db: int = 0) -> str:
        """`redis://[:password@]127.0.0.1:<port>/<db>` (`rediss://...?ssl_ca_certs=...` for a TLS server)."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        if self.tls is not None:
            return f"rediss://{auth}{HOST}:{self.port}/{db}?ssl_ca_certs={quote(str(self.tls.ca_cert))}"
        return f"redis://{auth}{HOST}:{self.port}/{db}"

    def unix_url(self, db: int = 0) -> str:
        """`unix://[:password@]/<folder>/redis.sock?db=<db>` (requires `unixsocket=True`)."""
        if self.unixsocket is None:
            raise RuntimeError("this server was started without unixsocket=True")
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"unix://{auth}{self.unixsocket}?db={db}"

    def client(self, db: int = 0, **kwargs: Any) -> redis.Redis:
        """A new synchronous redis-py client on `db` for assertions (use `with`, or let it be collected)."""
        options: dict[str, Any] = {"host": HOST, "port": self.port, "db": db, "password": self.password}
        options["socket_timeout"] = 5.0
        if self.tls is not None:
            options.update(ssl=True, ssl_ca_certs=str(self.tls.ca_cert))
            options.update(ssl_certfile=str(self.tls.cert), ssl_keyfile=str(self.tls.key))
        return redis.Redis(**{**options, **kwargs})

    # -- life cycle --------------------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the process is alive (paused counts as alive)."""
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the process (again, on the same port) and wait until it answers PING."""
        if self.running:
            return
        for _attempt in range(5):
            if self._spawn_and_wait():
                return
            if self._fixed_port:
                break
            self.port = _free_port()  # someone took the port between picking and binding: pick another
        raise RuntimeError(f"{self.flavor}-server did not start on port {self.port}:\n{self._log_tail()}")

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 5 seconds) and wait for it; the data is gone."""
        process, self._process = self._process, None
        if process is None:
            return
        if self._paused:
            self._resume(process)
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def kill(self) -> None:
        """SIGKILL the process (`kill -9`: no shutdown, nothing saved beyond what it already wrote) and wait for it.

        `start()` brings it back on the same port and folder: with what its AOF holds when started with
        `"--appendonly", "yes"`, empty otherwise.
        """
        process, self._process = self._process, None
        if process is None:
            return
        process.kill()
        process.wait()
        self._paused = False

    def pause(self) -> None:
        """SIGSTOP the process: it keeps its port but answers nothing (clients hang until their timeout)."""
        if self._process is None or not self.running:
            raise RuntimeError("the server is not running")
        self._process.send_signal(signal.SIGSTOP)
        self._paused = True

    def resume(self) -> None:
        """SIGCONT the process after `pause()`."""
        if self._process is not None:
            self._resume(self._process)

    def ensure_running(self) -> None:
        """Resume a paused server and restart a stopped one (tests that inject faults may leave either)."""
        if self._paused:
            self.resume()
        if not self.running:
            self.stop()
            self.start()

    def close(self) -> None:
        """Stop the process and delete its folder."""
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
        if self._socket_directory is not None:
            shutil.rmtree(self._socket_directory, ignore_errors=True)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RedisServer(port={self.port}, running={self.running}, flavor={self.flavor!r})"

    # -- internals ---------------------------------------------------------------------------------------------

    def _resume(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGCONT)
        self._paused = False

    def _command(self) -> list[str]:
        command = [self.executable, "--bind", HOST, "--save", "", "--appendonly", "no", "--daemonize", "no"]
        command += ["--dir", str(self.directory), "--logfile", ""]
        command += ["--hz", "100"]  # SIGTERM is handled by the server's cron: 10 ms instead of 100 ms to stop
        if self.tls is not None:
            command += ["--port", "0", "--tls-port", str(self.port), "--tls-auth-clients", "no"]
            command += ["--tls-cert-file", str(self.tls.cert), "--tls-key-file", str(self.tls.key)]
            command += ["--tls-ca-cert-file", str(self.tls.ca_cert)]
        else:
            command += ["--port", str(self.port)]
        if self.unixsocket is not None:
            command += ["--unixsocket", str(self.unixsocket), "--unixsocketperm", "700"]
        if self.password is not None:
            command += ["--requirepass", self.password]
        return [*command, *self.args]

    def _spawn_and_wait(self) -> bool:
        with open(self.directory / "redis.log", "ab") as log:
            self._process = subprocess.Popen(self._command(), stdout=log, stderr=subprocess.STDOUT)
        self._paused = False
        deadline = time.monotonic() + STARTUP_TIMEOUT
        delay = 0.002
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                return False
            if self._answers_ping():
                return True
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        self.stop()
        return False

    def _answers_ping(self) -> bool:
        try:
            with contextlib.ExitStack() as stack:
                sock = stack.enter_context(socket.create_connection((HOST, self.port), timeout=0.5))
                if self.tls is not None:
                    context = ssl.create_default_context(cafile=str(self.tls.ca_cert))
                    context.load_cert_chain(str(self.tls.cert), str(self.tls.key))  # if clients must show one
                    sock = stack.enter_context(context.wrap_socket(sock, server_hostname=HOST))
                sock.sendall(b"PING\r\n")
                reply = sock.recv(64)
        except OSError:
            return False
        # +PONG, or -NOAUTH when a password is required: either way the server is serving commands.
        return bool(reply) and not reply.startswith(b"-LOADING")

    def _log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.directory / "redis.log").read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"
