"""`rediss://` with a CA, a client certificate and its key, as query parameters or keyword options; certificates
are verified by default."""

from __future__ import annotations

import uuid

import pytest
from _agents import Counter, make_agent
from _deployments import TLSDeployment
from _redis_topologies import ClusterNodes

from pyai_caching import CacheError, RedisStore, cached_agent_run

pytestmark = pytest.mark.deployments


def namespace() -> str:
    return f"tls-{uuid.uuid4().hex[:12]}"


async def test_hits_and_misses_with_ca_and_client_certificate_in_the_url(tls_deployment: TLSDeployment) -> None:
    counter = Counter(payload="over TLS")
    agent = make_agent(counter)
    options = {"redis_url": tls_deployment.url(), "namespace": namespace(), "on_cache_error": "raise"}
    assert await cached_agent_run(agent, "hello", "tls", **options) == "over TLS"
    assert await cached_agent_run(agent, "hello", "tls", **options) == "over TLS"
    assert counter.calls == 1
    with tls_deployment.server.client() as client:
        assert client.keys(f"pyai_caching:{options['namespace']}:*")


async def test_certificate_files_as_keyword_options(tls_deployment: TLSDeployment) -> None:
    store = RedisStore(
        tls_deployment.url(cert=False, ca=False),
        ssl_ca_certs=str(tls_deployment.files.ca_cert),
        ssl_certfile=str(tls_deployment.client_cert),
        ssl_keyfile=str(tls_deployment.client_key),
    )
    assert store.description == f"rediss://127.0.0.1:{tls_deployment.server.port}/0"
    counter = Counter(payload="keyword TLS")
    agent = make_agent(counter)
    ns = namespace()
    for _ in range(2):
        answer = await cached_agent_run(agent, "hello", "tls", store=store, namespace=ns, on_cache_error="raise")
        assert answer == "keyword TLS"
    assert counter.calls == 1
    await store.close()


@pytest.mark.parametrize(
    ("url_options", "expected"),
    [
        ({"ca": False}, "certificate verify failed"),  # the system CAs do not know the test CA: verified by default
        # The server requires a client certificate. TLS 1.3 reports that after the handshake: the client reads
        # the server's alert, or, if the server closed first, a reset.
        ({"cert": False}, "certificate required|Connection reset by peer"),
    ],
)
async def test_an_untrusted_server_or_a_missing_client_certificate_fails(
    tls_deployment: TLSDeployment, url_options: dict[str, bool], expected: str
) -> None:
    counter = Counter(payload="model answer")
    url = tls_deployment.url(**url_options)
    with pytest.raises(CacheError, match=expected):
        await cached_agent_run(make_agent(counter), "hello", "tls", redis_url=url, on_cache_error="raise")
    assert counter.calls == 0
    # Failing open, the call still gets the model's answer.
    assert await cached_agent_run(make_agent(counter), "hello", "tls", redis_url=url) == "model answer"


async def test_hits_and_misses_on_a_tls_cluster(tls_cluster: ClusterNodes) -> None:
    url = tls_cluster.url()
    assert url.startswith("rediss+cluster://")
    counter = Counter(payload="cluster over TLS")
    agent = make_agent(counter)
    ns = namespace()
    for _ in range(2):
        for prompt in ("one", "two", "three"):
            answer = await cached_agent_run(agent, prompt, "tls", redis_url=url, namespace=ns, on_cache_error="raise")
            assert answer == "cluster over TLS"
    assert counter.calls == 3
    assert len(tls_cluster.keys(f"pyai_caching:{ns}:*")) >= 3


async def test_a_tls_cluster_verifies_certificates_by_default(tls_cluster: ClusterNodes) -> None:
    url = tls_cluster.url().partition("?")[0]  # no CA: the system CAs do not know the test CA
    counter = Counter(payload="model answer")
    with pytest.raises(CacheError, match="certificate verify failed"):
        await cached_agent_run(make_agent(counter), "hello", "tls", redis_url=url, on_cache_error="raise")
