"""Throwaway Redis deployments for the deployment tests: Sentinel, Cluster, TLS with client certificates.

Everything binds 127.0.0.1 on free ports, keeps its data in memory and lives in temporary folders.

```python
with SentinelGroup() as group:          # a master, a replica, three sentinels watching "mymaster"
    store = RedisStore(group.url(db=0))
    group.wait_until_failover_ready()   # the sentinels know each other and the replica
    group.kill_master()                 # SIGKILL; the sentinels promote the replica
    group.wait_for_new_master()

with ClusterNodes() as cluster:         # three masters, all 16384 slots covered, no replicas
    store = RedisStore(cluster.url())

with SentinelGroup("valkey") as group:  # the same on valkey-server (tests/_server_flavors.py)
    ...
```
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis
from _redis_servers import HOST, RedisServer, TLSFiles, _free_port
from _server_flavors import missing_server_message, server_executable

__all__ = ["ClusterNodes", "SentinelGroup", "SentinelProcess", "make_client_certificate", "wait_until"]

SERVICE = "mymaster"
DOWN_AFTER_MS = 500
FAILOVER_TIMEOUT_MS = 3000


def wait_until(condition: Any, timeout: float, what: str, interval: float = 0.02) -> Any:
    """Poll `condition()` until it returns something truthy (returned), or fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = condition()
        except (redis.RedisError, OSError) as error:
            last_error = error
        else:
            if result:
                return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last error: {last_error!r})")


def make_client_certificate(tls: TLSFiles, directory: Path) -> tuple[Path, Path]:
    """A client certificate and key signed by the CA of `tls` (made by `make_tls_files` in `tls.ca_cert`'s folder)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("openssl is not on PATH")
    ca_key = tls.ca_cert.with_name("ca.key")
    key, csr, cert = directory / "client.key", directory / "client.csr", directory / "client.crt"
    ext = directory / "client.ext"
    ext.write_text("extendedKeyUsage=clientAuth\n")
    new_key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    request = ["req", *new_key, "-keyout", key, "-out", csr, "-subj", "/CN=pyai_caching test client"]
    sign = ["x509", "-req", "-in", csr, "-CA", tls.ca_cert, "-CAkey", ca_key, "-CAcreateserial", "-out", cert]
    sign += ["-days", "2", "-extfile", ext]
    for args in (request, sign):
        subprocess.run([openssl, *map(str, args)], check=True, capture_output=True)
    return cert, key


class SentinelProcess:
    """One `redis-server --sentinel` watching `master_port` as `mymaster` (quorum 2, 500 ms to declare it down);
    `valkey-server --sentinel` for the flavor "valkey"."""

    def __init__(self, master_port: int, flavor: str = "redis") -> None:
        executable = server_executable(flavor)
        if executable is None:
            raise RuntimeError(missing_server_message(flavor))
        self.executable = executable
        self.master_port = master_port
        self.directory = Path(tempfile.mkdtemp(prefix="pyai-sentinel-"))
        self.port = _free_port()
        self._process: subprocess.Popen[bytes] | None = None

    def _write_config(self) -> Path:
        config = self.directory / "sentinel.conf"  # rewritten by the sentinel as it learns the topology
        config.write_text(
            f"port {self.port}\n"
            f"bind {HOST}\n"
            "daemonize no\n"
            'logfile ""\n'
            f"dir {self.directory}\n"
            f"sentinel monitor {SERVICE} {HOST} {self.master_port} 2\n"
            f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {SERVICE} {FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        return config

    def start(self) -> None:
        for _attempt in range(5):
            config = self._write_config()
            with open(self.directory / "sentinel.log", "ab") as log:
                self._process = subprocess.Popen(
                    [self.executable, str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT
                )
            try:
                wait_until(self._ready, 10.0, f"sentinel on port {self.port}")
                return
            except AssertionError:
                self.stop()
                self.port = _free_port()  # the port was taken meanwhile: pick another
        raise RuntimeError(f"the sentinel did not start:\n{self.log_tail()}")

    def _ready(self) -> bool:
        if self._process is None or self._process.poll() is not None:
            raise OSError("the sentinel exited")
        with self.client() as client:
            return bool(client.ping())

    def client(self) -> redis.Redis:
        """A synchronous client to this sentinel (sentinel commands: `sentinel_master`, ...)."""
        return redis.Redis(host=HOST, port=self.port, socket_timeout=2.0, decode_responses=True)

    def master_state(self) -> dict[str, Any]:
        """What this sentinel knows about `mymaster` (`SENTINEL MASTER mymaster`)."""
        with self.client() as client:
            return dict(client.sentinel_master(SERVICE))

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.directory / "sentinel.log").read_text(errors="replace").splitlines()[-lines:])
        return "(no log)"


class _Topology:
    """A set of servers started together: `with Topology(...) as t:` starts them and always closes them."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class SentinelGroup(_Topology):
    """A master, one replica and three sentinels (quorum 2) on loopback ports, all of `flavor`."""

    def __init__(self, flavor: str = "redis") -> None:
        self.flavor = flavor
        self.master = RedisServer("--repl-diskless-sync-delay", "0", flavor=flavor)
        self.replica: RedisServer | None = None
        self.sentinels: list[SentinelProcess] = []

    def start(self) -> None:
        self.master.start()
        # Diskless load: Valkey's replica otherwise saves the master's snapshot to disk and notices it is complete
        # on a once-a-second timer (a second per group); Redis syncs as fast either way.
        diskless = ("--repl-diskless-load", "on-empty-db")
        self.replica = RedisServer("--replicaof", HOST, str(self.master.port), *diskless, flavor=self.flavor)
        self.replica.start()
        wait_until(self._replica_synced, 10.0, "the replica to sync with the master")
        for _ in range(3):
            sentinel = SentinelProcess(self.master.port, self.flavor)
            self.sentinels.append(sentinel)
            sentinel.start()

    def _replica_synced(self) -> bool:
        assert self.replica is not None
        with self.replica.client() as client:
            return client.info("replication").get("master_link_status") == "up"

    @property
    def servers(self) -> list[RedisServer]:
        return [server for server in (self.master, self.replica) if server is not None]

    def url(self, db: int = 0) -> str:
        """`redis+sentinel://127.0.0.1:<s1>,127.0.0.1:<s2>,127.0.0.1:<s3>/mymaster/<db>`."""
        nodes = ",".join(f"{HOST}:{sentinel.port}" for sentinel in self.sentinels)
        return f"redis+sentinel://{nodes}/{SERVICE}/{db}"

    def master_port(self) -> int:
        """The master's port according to the first sentinel that answers."""
        for sentinel in self.sentinels:
            with contextlib.suppress(redis.RedisError), sentinel.client() as client:
                _host, port = client.sentinel_get_master_addr_by_name(SERVICE)
                return int(port)
        raise RuntimeError("no sentinel answers")

    def server_on(self, port: int) -> RedisServer:
        return next(server for server in self.servers if server.port == port)

    def wait_until_failover_ready(self, timeout: float = 15.0) -> None:
        """Wait until every sentinel knows the two others and the replica (a failover then has its quorum)."""

        def ready() -> bool:
            for sentinel in self.sentinels:
                state = sentinel.master_state()
                if int(state["num-other-sentinels"]) < 2 or int(state["num-slaves"]) < 1:
                    return False
            return True

        wait_until(ready, timeout, "the sentinels to discover each other and the replica", interval=0.1)

    def kill_master(self) -> RedisServer:
        """SIGKILL the current master (no goodbye to anyone); return it."""
        old = self.server_on(self.master_port())
        process = old._process
        assert process is not None
        process.send_signal(signal.SIGKILL)
        process.wait()
        old._process = None
        return old

    def wait_for_new_master(self, old_port: int, timeout: float = 30.0) -> RedisServer:
        """Wait until the sentinels report a master other than `old_port` and it accepts writes; return it."""

        def promoted() -> int | None:
            port = self.master_port()
            if port == old_port:
                return None
            with self.server_on(port).client() as client:
                return port if client.info("replication").get("role") == "master" else None

        port = wait_until(promoted, timeout, "the sentinels to promote the replica", interval=0.05)
        return self.server_on(port)

    def close(self) -> None:
        for sentinel in self.sentinels:
            sentinel.close()
        for server in self.servers:
            server.close()

    def logs(self) -> str:
        return "\n\n".join(f"sentinel {s.port}:\n{s.log_tail()}" for s in self.sentinels)


class ClusterNodes(_Topology):
    """Three cluster-enabled `redis-server`s joined by `redis-cli --cluster create` (three masters, no replicas).

    Args:
        *args: Extra configuration for every node, e.g. an ACL user: `"--user", "cache", "on", ">pw", ...`.
        tls: Serve TLS only, clients and the cluster bus alike (`url()` is then a `rediss+cluster://` URL).
        flavor: `"redis"` or `"valkey"` (every node; `redis-cli --cluster create` joins either).
    """

    def __init__(self, *args: str, size: int = 3, tls: TLSFiles | None = None, flavor: str = "redis") -> None:
        self.tls = tls
        tls_args = ("--tls-cluster", "yes", "--tls-replication", "yes") if tls is not None else ()
        self.nodes = [
            RedisServer(
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
                "--cluster-port",
                str(_free_port()),  # explicit: a client port above 55535 has no room for the default port + 10000
                *tls_args,
                *args,
                tls=tls,
                flavor=flavor,
            )
            for _ in range(size)
        ]

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError("redis-cli is not on PATH")
        addresses = [f"{HOST}:{node.port}" for node in self.nodes]
        tls_args = ["--tls", "--cacert", str(self.tls.ca_cert)] if self.tls is not None else []
        subprocess.run(
            [cli, *tls_args, "--cluster", "create", *addresses, "--cluster-replicas", "0", "--cluster-yes"],
            check=True,
            capture_output=True,
            timeout=60,
        )
        wait_until(self._ok, 20.0, "cluster_state:ok on every node")

    def _ok(self) -> bool:
        for node in self.nodes:
            with node.client() as client:
                info = client.cluster("info")
                if info.get("cluster_state") != "ok" or int(info.get("cluster_known_nodes", 0)) != len(self.nodes):
                    return False
        return True

    def url(self, user_part: str = "") -> str:
        """`redis+cluster://[user_part]127.0.0.1:<a>,127.0.0.1:<b>` (two startup nodes; the third is discovered),
        or `rediss+cluster://...?ssl_ca_certs=<ca>` for a TLS cluster."""
        nodes = ",".join(f"{HOST}:{node.port}" for node in self.nodes[:2])
        if self.tls is not None:
            return f"rediss+cluster://{user_part}{nodes}?ssl_ca_certs={self.tls.ca_cert}"
        return f"redis+cluster://{user_part}{nodes}"

    def node_keys(self, pattern: str) -> dict[int, list[str]]:
        """The keys matching `pattern` held by each node, by port (straight from each node, no redirection)."""
        found: dict[int, list[str]] = {}
        for node in self.nodes:
            with node.client() as client:
                found[node.port] = sorted(key.decode() for key in client.scan_iter(match=pattern, count=1000))
        return found

    def keys(self, pattern: str) -> list[str]:
        """Every key matching `pattern`, whichever node holds it."""
        return sorted(key for keys in self.node_keys(pattern).values() for key in keys)

    def close(self) -> None:
        for node in self.nodes:
            node.close()
