"""Redis with vector search (Redis 8, Redis Stack: `FT._LIST` answers), on database 0.

One hash per recorded prompt and one HNSW index per namespace and dimension, queried with a KNN search filtered
by the context key's tag. No copy of the vectors in each process and no cold load. `max_entries` is not enforced
here (entries expire with the TTL).

A command error (a server whose search module lacks vectors, a forbidden command) logs a WARNING and makes this
process use `StreamBackend` from then on; connection errors are store failures like any other.
"""

from __future__ import annotations

import hashlib
import logging
import math
from typing import TYPE_CHECKING, Any

from redis.exceptions import ResponseError

from pyai_caching._util.redact import redact_url_in_text
from pyai_caching._util.text import shorten
from pyai_caching.semantic.backends.base import decode_fields, encode_fields, search_hash_prefix, search_index_name
from pyai_caching.semantic.backends.stream import StreamBackend
from pyai_caching.semantic.index import Candidate
from pyai_caching.semantic.vectors import EPSILON, to_bytes

if TYPE_CHECKING:
    from pyai_caching.semantic.index import Item, Limits, StoreState
    from pyai_caching.semantic.vectors import Vector
    from pyai_caching.stores import RedisStore

__all__ = ["SearchBackend", "has_vector_search"]

logger = logging.getLogger("pyai_caching")


class SearchBackend:
    """The Redis server's own vector search: one hash per prompt, one HNSW index per namespace and dimension, a
    KNN query filtered by the context key's tag; the stream backend once the server refuses a command."""

    def __init__(self, store: RedisStore, namespace: str, state: StoreState) -> None:
        self.store, self.namespace, self.state = store, namespace, state
        self.fallback = StreamBackend(store, namespace, state)

    async def candidates(self, context: str, query: Vector, limits: Limits) -> list[Candidate]:
        for attempt in range(2):
            try:
                return await self.search(context, query, limits)
            except ResponseError as error:
                if attempt == 0 and self._index_gone(error, query.shape[0]):
                    continue
                self._failed(error)
                break
        return await self.fallback.candidates(context, query, limits)

    async def add(self, context: str, item: Item, vector: Vector, limits: Limits, ttl: float | None) -> None:
        for attempt in range(2):
            try:
                return await self.write(context, item, vector, ttl)
            except ResponseError as error:
                if attempt == 0 and self._index_gone(error, vector.shape[0]):
                    continue
                self._failed(error)
                break
        await self.fallback.add(context, item, vector, limits, ttl)

    def _index_gone(self, error: ResponseError, dim: int) -> bool:
        """The index this process created was dropped meanwhile: forget it, so that it is created again."""
        return "index" in str(error).lower() and self.state.forget_search_index(search_index_name(self.namespace, dim))

    def _failed(self, error: ResponseError) -> None:
        if self.state.vector_search:
            self.state.vector_search = False
            logger.warning(
                "vector search on %s failed (%s); the semantic cache uses its own index from now on",
                self.store.description,
                shorten(redact_url_in_text(str(error)), 200),
            )

    async def ensure_index(self, client: Any, dim: int) -> str:
        """The name of the namespace's index of `dim` dimensions, created on the server unless it exists."""
        name = search_index_name(self.namespace, dim)
        if self.state.has_search_index(name):
            return name
        try:
            await client.execute_command("FT.INFO", name)
        except ResponseError:
            try:
                await client.execute_command(
                    "FT.CREATE", name, "ON", "HASH", "PREFIX", "1", search_hash_prefix(self.namespace, dim),
                    "SCHEMA", "c", "TAG", "v", "VECTOR", "HNSW", "6",
                    "TYPE", "FLOAT32", "DIM", str(dim), "DISTANCE_METRIC", "COSINE",
                )  # fmt: skip
            except ResponseError as error:
                if "already exists" not in str(error).lower():
                    raise
        self.state.add_search_index(name)
        return name

    async def search(self, context: str, query: Vector, limits: Limits) -> list[Candidate]:
        """One KNN query of the server's index (no fallback: a refused command raises `ResponseError`)."""
        dim = query.shape[0]
        client: Any = await self.store.client()
        name = await self.ensure_index(client, dim)
        limit = limits.max_candidates
        reply = await client.execute_command(
            "FT.SEARCH", name, f"(@c:{{{context}}})=>[KNN {limit} @v $q AS d]",
            "PARAMS", "2", "q", to_bytes(query),
            "SORTBY", "d", "ASC", "RETURN", "5", "k", "p", "s", "v", "d",
            "LIMIT", "0", str(limit), "DIALECT", "2",
        )  # fmt: skip
        found: list[Candidate] = []
        for fields in _search_rows(reply):
            decoded = decode_fields(fields, dim)
            if decoded is None or b"d" not in fields:
                continue
            similarity = min(1.0 - float(fields[b"d"]), 1.0)
            if similarity >= limits.threshold - EPSILON:
                found.append(Candidate(decoded[0], decoded[1], similarity))
        return found

    async def write(self, context: str, item: Item, vector: Vector, ttl: float | None) -> None:
        """Write the hash of one recorded prompt (no fallback: a refused command raises `ResponseError`)."""
        dim = vector.shape[0]
        client: Any = await self.store.client()
        await self.ensure_index(client, dim)
        digest = hashlib.sha256(item.key.encode()).hexdigest()[:32]
        name = f"{search_hash_prefix(self.namespace, dim)}{{{context}}}:{digest}"
        async with client.pipeline(transaction=False) as pipe:
            pipe.hset(name, mapping={"c": context, **encode_fields(item, vector)})
            if ttl is not None:
                pipe.pexpire(name, max(1, math.ceil(ttl * 1000)))
            await pipe.execute()


def _search_rows(reply: Any) -> list[dict[bytes, bytes]]:
    """The returned fields of each document of an `FT.SEARCH` reply, in RESP3 (a map) or RESP2 (a flat list)."""
    if isinstance(reply, dict):
        rows = reply.get(b"results") or reply.get("results") or []
        return [row.get(b"extra_attributes") or row.get("extra_attributes") or {} for row in rows]
    out = []
    for i in range(2, len(reply), 2):  # [total, id, [field, value, ...], id, [...], ...]
        raw = reply[i]
        out.append({raw[j]: raw[j + 1] for j in range(0, len(raw) - 1, 2)})
    return out


async def has_vector_search(store: RedisStore, state: StoreState) -> bool:
    """Whether the server answers vector searches on the store's database (asked once per process and store)."""
    if state.vector_search is None:
        if store.database != 0:  # RediSearch indexes only database 0
            state.vector_search = False
            return False
        client: Any = await store.client()
        try:
            await client.execute_command("FT._LIST")
        except ResponseError:
            state.vector_search = False
        else:
            state.vector_search = True
            logger.info("%s has vector search; the semantic cache uses it", store.description)
    return state.vector_search
