"""Valkey smoke test: a real agent's call is cached and then hit through `RedisStore` on a real `valkey-server`.

The store contract (tests/stores/test_store_contract.py), the server-side `RedisStore` tests and the Sentinel and
Cluster tests (tests/deployments) run on Valkey too, with `[valkey]` in their ids; this is the whole library path.
"""

from __future__ import annotations

import uuid

import pydantic
from _agents import Counter, make_agent
from _redis_servers import RedisServer

from pyai_caching import cached_agent_run
from pyai_caching.stores import RedisStore


class Profile(pydantic.BaseModel):
    name: str
    age: int


async def test_an_agent_call_is_cached_and_hit_through_redis_store_on_valkey(
    valkey_server: RedisServer, valkey_url: str
) -> None:
    with valkey_server.client() as admin:
        info = admin.info("server")
    assert info.get("server_name") == "valkey", "the valkey fixtures must start valkey-server, not redis-server"
    assert str(info["valkey_version"]).startswith("9."), info["valkey_version"]

    counter = Counter(payload={"name": "Ada", "age": 36})
    agent = make_agent(counter, output_type=Profile)
    uncached = await agent.run("Ada Lovelace, 36")
    assert counter.calls == 1

    namespace = f"valkey-{uuid.uuid4().hex[:12]}"
    store = RedisStore(valkey_url)
    try:
        options = {"store": store, "namespace": namespace, "on_cache_error": "raise", "full_result": True}
        miss = await cached_agent_run(agent, "Ada Lovelace, 36", "profile", **options)
        assert counter.calls == 2
        hit = await cached_agent_run(agent, "Ada Lovelace, 36", "profile", **options)
        assert counter.calls == 2, "the second identical call must be answered by Valkey, not the model"

        assert miss.output == hit.output == uncached.output == Profile(name="Ada", age=36)
        assert type(hit.output) is Profile
        kinds = [[type(part).__name__ for part in message.parts] for message in uncached.all_messages()]
        for result in (miss, hit):
            assert [[type(part).__name__ for part in message.parts] for message in result.all_messages()] == kinds
        assert [key async for key in store.scan(f"pyai_caching:{namespace}:")], "the entry must live in Valkey"
    finally:
        await store.close()
