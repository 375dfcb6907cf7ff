"""`RedisStore` beyond the shared contract: URLs, secrets, databases, sockets, pools, event loops and faults.

The tests of what the server does (authentication, ACLs, databases, sockets, types, expiry, client names) run on
Redis and on Valkey (`server_flavor`); those of the client alone (event loops, faults) and TLS run on Redis."""

from __future__ import annotations

import asyncio
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.exceptions
from _redis_servers import RedisServer, make_tls_files

from pyai_caching.exceptions import ConfigurationError
from pyai_caching.stores import RedisStore

SECRET = "s3cr/t@p4ss"
SECRET_IN_URL = "s3cr%2Ft%40p4ss"
ACCEPTED = ("redis://", "rediss://", "unix://")
PATIENT: dict[str, Any] = {"socket_timeout": 5.0, "connect_timeout": 5.0}
"""For tests of behaviour rather than timing, so that a busy CI machine cannot fail them; faults use the defaults."""


def fail_text(exc: BaseException) -> str:
    """Everything a log or a traceback of `exc` could show."""
    return "".join(traceback.format_exception(exc)) + repr(exc)


@pytest.mark.parametrize(
    ("url", "description"),
    [
        ("redis://localhost", "redis://localhost:6379/0"),
        ("redis://localhost/", "redis://localhost:6379/0"),
        ("REDIS://LocalHost:6380/2", "redis://localhost:6380/2"),
        ("redis://127.0.0.1:6379/15", "redis://127.0.0.1:6379/15"),
        ("redis://cache.internal?db=4", "redis://cache.internal:6379/4"),
        ("redis://[::1]:7000/1", "redis://[::1]:7000/1"),
        (f"redis://user:{SECRET_IN_URL}@127.0.0.1:6379/0", "redis://user:***@127.0.0.1:6379/0"),
        (f"redis://:{SECRET_IN_URL}@host", "redis://:***@host:6379/0"),
        ("redis://user@host/3", "redis://user@host:6379/3"),
        (f"redis://host/1?password={SECRET_IN_URL}", "redis://:***@host:6379/1"),
        ("  redis://host:1234/0\n", "redis://host:1234/0"),
        ("rediss://host:6380/0", "rediss://host:6380/0"),
        (
            "rediss://u:pw@host/1?ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_cert_reqs=optional",
            "rediss://u:***@host:6379/1",
        ),
        ("unix:///var/run/redis.sock", "unix:///var/run/redis.sock?db=0"),
        ("unix:///var/run/redis.sock?db=7", "unix:///var/run/redis.sock?db=7"),
        (f"unix://:{SECRET_IN_URL}@/tmp/r.sock?db=1", "unix://:***@/tmp/r.sock?db=1"),
        (f"unix:///tmp/r.sock?db=1&password={SECRET_IN_URL}", "unix://:***@/tmp/r.sock?db=1"),
        ("redis+sentinel://s1/mymaster", "redis+sentinel://s1:26379/mymaster/0"),
        ("redis+sentinel://s1:26380,S2/mymaster/3", "redis+sentinel://s1:26380,s2:26379/mymaster/3"),
        ("redis+sentinel://s1/mymaster/?db=2", "redis+sentinel://s1:26379/mymaster/2"),
        (
            f"redis+sentinel://user:{SECRET_IN_URL}@s1,s2/mymaster/1",
            "redis+sentinel://user:***@s1:26379,s2:26379/mymaster/1",
        ),
        (f"redis+sentinel://s1/mymaster?password={SECRET_IN_URL}", "redis+sentinel://:***@s1:26379/mymaster/0"),
        ("redis+cluster://n1:7000,n2:7001,[::1]:7002", "redis+cluster://n1:7000,n2:7001,[::1]:7002"),
        ("redis+cluster://n1/", "redis+cluster://n1:6379"),
        ("redis+cluster://n1/0", "redis+cluster://n1:6379"),
        (f"redis+cluster://user:{SECRET_IN_URL}@n1:7000", "redis+cluster://user:***@n1:7000"),
        ("rediss+cluster://n1:7000?ssl_ca_certs=/ca.pem&ssl_cert_reqs=required", "rediss+cluster://n1:7000"),
    ],
)
def test_accepted_urls_and_their_redacted_description(url: str, description: str) -> None:
    store = RedisStore(url)  # no connection is made: none of these hosts has to exist
    assert store.description == description
    assert repr(store) == f"RedisStore({description!r})"
    for text in (store.description, repr(store), str(store)):
        assert SECRET not in text
        assert SECRET_IN_URL not in text


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("", "unsupported scheme none"),
        ("localhost:6379", "unsupported scheme 'localhost'"),
        ("http://localhost", "unsupported scheme 'http'"),
        (f"https://user:{SECRET}@host", "unsupported scheme 'https'"),
        (f"user:{SECRET}@host", "unsupported scheme"),
        ("redis://", "the host is missing"),
        (f"redis://:{SECRET_IN_URL}@", "the host is missing"),
        (f"redis://:{SECRET_IN_URL}@/0", "the host is missing"),
        ("redis://host:port", "cannot be parsed"),
        (f"redis://u:{SECRET_IN_URL}@host:99999/0", "cannot be parsed"),
        ("redis://host:0", "the port must be an integer from 1 to 65535"),
        ("redis://[::1", "cannot be parsed"),
        ("redis://host/zero", "database index"),
        ("redis://host/-1", "database index"),
        ("redis://host/1/2", "database index"),
        ("redis://host/\u0661", "database index"),  # an Arabic-Indic digit one is not an index
        ("redis://host?db=x", "database index"),
        ("redis://host/1?db=2", "both as the path and as ?db="),
        (f"redis://:{SECRET_IN_URL}@host?password=other", "the password is given both"),
        ("redis://host?timeout=3", "unknown query parameter(s) timeout"),
        ("redis://host?ssl_ca_certs=/ca.pem", "unknown query parameter(s) ssl_ca_certs"),
        ("redis://host?db=1&db=2", "more than once: db"),
        ("redis://host?db", "query string cannot be parsed"),
        ("redis://host#top", "fragment"),
        ("rediss://host?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of required, optional, none"),
        ("unix://", "absolute path of the socket"),
        ("unix://relative.sock", "takes no host"),
        ("unix://localhost/tmp/r.sock", "takes no host"),
        ("unix:///tmp/r.sock?db=-2", "database index"),
        # An unencoded '/' ends the host part early: the rest of the password must not leak into the message.
        (f"redis://user:{SECRET}@host/0", "cannot be parsed"),
        (f"redis://user:{SECRET}@host:abc/0", "cannot be parsed"),
        ("redis://user:6379/x@host/0", "database index"),
        ("redis+sentinel://s1", "the Sentinel service name is missing"),
        ("redis+sentinel://s1/", "the Sentinel service name is missing"),
        ("redis+sentinel:///mymaster", "the host is missing"),
        (f"redis+sentinel://:{SECRET_IN_URL}@/mymaster", "the host is missing"),
        ("redis+sentinel://s1,,s2/mymaster", "an empty host in the comma-separated list"),
        ("redis+sentinel://s1:x/mymaster", "cannot be parsed"),
        (f"redis+sentinel://u:{SECRET}@s1/mymaster", "cannot be parsed"),
        ("redis+sentinel://s1/mymaster/x", "database index"),
        ("redis+sentinel://s1/mymaster/1/2", "the path must be /service_name or /service_name/db"),
        ("redis+sentinel://s1/mymaster/1?db=2", "both as the path and as ?db="),
        ("redis+sentinel://s1/mymaster?ssl_ca_certs=/ca.pem", "unknown query parameter(s) ssl_ca_certs"),
        ("rediss+sentinel://s1/mymaster", "unsupported scheme 'rediss+sentinel'"),
        ("redis+cluster://", "the host is missing"),
        ("redis+cluster://n1/1", "Redis Cluster has only database 0"),
        ("redis+cluster://n1?db=1", "unknown query parameter(s) db"),
        ("redis+cluster://n1:0", "the port must be an integer from 1 to 65535"),
        (f"redis+cluster://u:{SECRET_IN_URL}@n1:99999", "cannot be parsed"),
        ("redis+cluster://n1#top", "fragment"),
        ("rediss+cluster://n1?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of required, optional, none"),
    ],
)
def test_rejected_urls_name_the_problem_and_never_the_password(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisStore(url)
    message = str(info.value)
    assert problem in message
    assert isinstance(info.value, ValueError)
    for form in ACCEPTED:
        assert form in message
    text = fail_text(info.value)
    for fragment in (SECRET, SECRET_IN_URL, SECRET[2:], "p4ss", "4ss"):
        assert fragment not in text


def test_a_url_that_is_not_a_string_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="must be a str, got bytes"):
        RedisStore(b"redis://localhost")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"socket_timeout": 0}, "socket_timeout must be a positive number"),
        ({"socket_timeout": "1"}, "socket_timeout must be a positive number"),
        ({"connect_timeout": -1.0}, "connect_timeout must be a positive number"),
        ({"pool_timeout": float("nan")}, "pool_timeout must be a positive number"),
        ({"max_connections": 0}, "max_connections must be a positive integer"),
        ({"max_connections": True}, "max_connections must be a positive integer"),
        ({"db": 3}, "does not accept db"),
        ({"host": "other", "decode_responses": True}, "does not accept decode_responses, host"),
        ({"socket_timout": 1.0}, "socket_timout"),
        ({"password": SECRET, "ssl_bogus": 1}, "ssl_bogus"),
        ({"ssl_ca_certs": "/ca.pem"}, "ssl_ca_certs only apply to TLS connections: use a rediss://"),
        ({"ssl": True}, "does not accept ssl"),
        ({"sentinel_kwargs": {"password": SECRET}}, "sentinel_kwargs only applies to redis+sentinel:// URLs"),
    ],
)
def test_rejected_options(kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisStore("redis://localhost", **kwargs)
    assert problem in str(info.value)
    assert SECRET not in fail_text(info.value)


@pytest.mark.parametrize(
    ("url", "kwargs", "problem"),
    [
        ("redis+sentinel://s1/mymaster", {"sentinel_kwargs": {"passwd": SECRET}}, "invalid sentinel_kwargs option"),
        ("redis+sentinel://s1/mymaster", {"socket_timout": 1.0}, "socket_timout"),
        ("redis+cluster://n1", {"bogus_option": 1}, "bogus_option"),
    ],
)
def test_rejected_options_of_sentinel_and_cluster_urls(url: str, kwargs: dict[str, Any], problem: str) -> None:
    with pytest.raises(ConfigurationError) as info:
        RedisStore(url, password=SECRET, **kwargs)
    assert problem in str(info.value)
    assert SECRET not in fail_text(info.value)


def test_password_given_as_an_option_is_not_shown() -> None:
    store = RedisStore("redis://user@localhost/0", password=SECRET)
    assert store.description == "redis://user@localhost:6379/0"
    assert SECRET not in repr(store)


async def test_password_from_the_url_authenticates(
    redis_server_factory: Callable[..., RedisServer], server_flavor: str
) -> None:
    server = redis_server_factory(password=SECRET, flavor=server_flavor)
    store = RedisStore(server.url(db=0), **PATIENT)
    assert SECRET_IN_URL in server.url()
    assert SECRET not in store.description
    await store.set("pyai_caching:k", b"v", ttl=None)
    assert await store.get("pyai_caching:k") == b"v"
    await store.close()

    wrong = RedisStore(f"redis://:wrong@127.0.0.1:{server.port}/0", **PATIENT)
    with pytest.raises(redis.exceptions.AuthenticationError) as info:
        await wrong.get("pyai_caching:k")
    assert "wrong" not in str(info.value)
    await wrong.close()


async def test_acl_user_limited_to_the_library_prefix(
    redis_server_factory: Callable[..., RedisServer], server_flavor: str
) -> None:
    # The least a RedisStore needs (the documented ACL): four commands, the library's keys, and naming itself.
    acl = ["~pyai_caching:*", "+get", "+set", "+unlink", "+scan", "+client|setname"]
    server = redis_server_factory("--user", "cache", "on", ">cachepw", *acl, flavor=server_flavor)
    store = RedisStore(f"redis://cache:cachepw@127.0.0.1:{server.port}/0", **PATIENT)
    await store.set("pyai_caching:a", b"1", ttl=10)
    assert [key async for key in store.scan("pyai_caching:")] == ["pyai_caching:a"]
    assert await store.clear("pyai_caching:") == 1
    with pytest.raises(redis.exceptions.NoPermissionError):
        await store.set("elsewhere", b"1", ttl=None)
    await store.close()


async def test_database_index_of_the_url_is_used(flavored_server: RedisServer) -> None:
    with flavored_server.client(db=0) as db0, flavored_server.client(db=3) as db3:
        db0.flushdb()
        db3.flushdb()
        for url in (flavored_server.url(db=3), f"redis://127.0.0.1:{flavored_server.port}?db=3"):
            store = RedisStore(url, **PATIENT)
            await store.set("pyai_caching:where", url.encode(), ttl=None)
            assert db3.get("pyai_caching:where") == url.encode()
            assert db0.get("pyai_caching:where") is None
            await store.close()
        assert await RedisStore(flavored_server.url(db=0), **PATIENT).get("pyai_caching:where") is None


async def test_unix_socket_url(redis_server_factory: Callable[..., RedisServer], server_flavor: str) -> None:
    server = redis_server_factory(unixsocket=True, flavor=server_flavor)
    store = RedisStore(server.unix_url(db=2), **PATIENT)
    assert store.description == f"unix://{server.unixsocket}?db=2"
    await store.set("pyai_caching:sock", b"via socket", ttl=None)
    assert await store.get("pyai_caching:sock") == b"via socket"
    with redis.Redis(unix_socket_path=str(server.unixsocket), db=2) as raw:
        assert raw.get("pyai_caching:sock") == b"via socket"
    await store.close()


async def test_a_key_of_another_type_fails_get_and_is_overwritten_by_set(
    flavored_client: redis.Redis, flavored_url: str
) -> None:
    flavored_client.hset("pyai_caching:k", "field", "value")
    store = RedisStore(flavored_url, **PATIENT)
    with pytest.raises(redis.exceptions.ResponseError, match="WRONGTYPE"):
        await store.get("pyai_caching:k")
    await store.set("pyai_caching:k", b"now a string", ttl=5)
    assert await store.get("pyai_caching:k") == b"now a string"
    assert flavored_client.type("pyai_caching:k") == b"string"
    await store.close()


async def test_a_ttl_of_zero_or_less_leaves_no_entry(flavored_client: redis.Redis, flavored_url: str) -> None:
    store = RedisStore(flavored_url, **PATIENT)
    await store.set("pyai_caching:k", b"v", ttl=None)
    await store.set("pyai_caching:k", b"v2", ttl=0)
    assert flavored_client.exists("pyai_caching:k") == 0
    await store.set("pyai_caching:k", b"v3", ttl=0.0001)  # rounds up to 1 ms, it is not an error
    await store.close()


def connections_named(server: RedisServer, name: str) -> int:
    with server.client() as raw:
        return sum(1 for client in raw.client_list() if client.get("name") == name)


def wait_for_connections(server: RedisServer, name: str, count: int, within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while (found := connections_named(server, name)) != count:
        assert time.monotonic() < deadline, f"{found} connections named {name}, expected {count}"
        time.sleep(0.01)


@pytest.fixture
def client_name() -> str:
    return f"pyai_caching_test_{uuid.uuid4().hex[:8]}"


async def test_calls_reuse_pooled_connections(
    flavored_server: RedisServer, flavored_url: str, client_name: str
) -> None:
    store = RedisStore(flavored_url, client_name=client_name, max_connections=8, **PATIENT)
    for i in range(300):
        await store.set(f"pyai_caching:{i}", b"v", ttl=60)
        assert await store.get(f"pyai_caching:{i}") == b"v"
    assert connections_named(flavored_server, client_name) == 1

    # More concurrent calls than connections: they wait for a free one instead of failing or opening more.
    results = await asyncio.gather(*(store.get(f"pyai_caching:{i % 300}") for i in range(400)))
    assert results == [b"v"] * 400
    assert 1 <= connections_named(flavored_server, client_name) <= 8

    await store.close()
    wait_for_connections(flavored_server, client_name, 0)
    assert await store.get("pyai_caching:1") == b"v"  # reopens
    assert connections_named(flavored_server, client_name) == 1
    await store.close()


def test_sequential_event_loops_each_get_a_pool_that_is_closed_with_the_loop(
    redis_server: RedisServer, redis_url: str, client_name: str
) -> None:
    store = RedisStore(redis_url, client_name=client_name, **PATIENT)

    async def use(i: int) -> bytes | None:
        await store.set(f"pyai_caching:run{i}", b"v", ttl=60)
        await asyncio.gather(*(store.get(f"pyai_caching:run{i}") for _ in range(20)))
        assert connections_named(redis_server, client_name) >= 1
        return await store.get("pyai_caching:run0")

    for i in range(3):
        # No close(): asyncio.run finalizes the loop, which closes the pool that belongs to it.
        assert asyncio.run(use(i)) == b"v"
        wait_for_connections(redis_server, client_name, 0)


def test_event_loops_in_several_threads_at_once(redis_url: str) -> None:
    store = RedisStore(redis_url, **PATIENT)
    errors: list[BaseException] = []

    async def work(thread: int) -> None:
        for i in range(50):
            key = f"pyai_caching:t{thread}:{i}"
            await store.set(key, key.encode(), ttl=60)
            assert await store.get(key) == key.encode()
        await store.close()

    def run(thread: int) -> None:
        try:
            asyncio.run(work(thread))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


@pytest.mark.faults
async def test_a_stopped_server_fails_fast_and_the_store_recovers(
    redis_server_factory: Callable[..., RedisServer],
) -> None:
    server = redis_server_factory()
    store = RedisStore(server.url(), **PATIENT)
    await store.set("pyai_caching:k", b"v", ttl=None)
    server.stop()
    started = time.monotonic()
    with pytest.raises(redis.exceptions.ConnectionError):
        await store.get("pyai_caching:k")
    assert time.monotonic() - started < 1.0  # refused at once: no retry, no backoff
    server.start()
    assert await store.get("pyai_caching:k") is None  # a new, empty server on the same port
    await store.set("pyai_caching:k", b"again", ttl=None)
    assert await store.get("pyai_caching:k") == b"again"
    await store.close()


@pytest.mark.faults
async def test_a_hung_server_costs_about_the_socket_timeout(redis_server_factory: Callable[..., RedisServer]) -> None:
    server = redis_server_factory()
    store = RedisStore(server.url())  # default timeouts: 0.5 s
    await store.set("pyai_caching:k", b"v", ttl=None)
    server.pause()
    try:
        started = time.monotonic()
        results = await asyncio.gather(*(store.get("pyai_caching:k") for _ in range(20)), return_exceptions=True)
        elapsed = time.monotonic() - started
    finally:
        server.resume()
    assert all(
        isinstance(result, redis.exceptions.TimeoutError | redis.exceptions.ConnectionError) for result in results
    )
    assert 0.4 < elapsed < 2.0  # about socket_timeout (0.5 s), not redis-py's 5 s or a retry loop
    assert await store.get("pyai_caching:k") == b"v"
    await store.close()


@pytest.mark.deployments
async def test_tls_verifies_the_server_certificate_by_default(
    redis_server_factory: Callable[..., RedisServer], tmp_path: Path
) -> None:
    files = make_tls_files(tmp_path)
    server = redis_server_factory(tls=files)
    base = f"rediss://127.0.0.1:{server.port}/0"

    trusted = RedisStore(f"{base}?ssl_ca_certs={files.ca_cert}", **PATIENT)
    await trusted.set("pyai_caching:tls", b"v", ttl=None)
    assert await trusted.get("pyai_caching:tls") == b"v"
    await trusted.close()

    untrusted = RedisStore(base, **PATIENT)  # the system CAs do not know our test CA
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
        await untrusted.get("pyai_caching:tls")
    await untrusted.close()

    opted_out = RedisStore(f"{base}?ssl_cert_reqs=none", **PATIENT)
    assert await opted_out.get("pyai_caching:tls") == b"v"
    await opted_out.close()
