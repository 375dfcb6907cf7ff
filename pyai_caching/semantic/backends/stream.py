"""Redis without vector search (Redis 7 and older, Valkey): one stream per context key.

The stream `pyai_caching:<ns>:sem:{<context digest>}` is capped at `max_entries` (`XADD MAXLEN ~`). Each process
keeps the vectors of the contexts it uses in memory and, on every lookup, reads only what was added since its
last look (`XRANGE (<last id> +`, one round trip); the search is an exact cosine over them (numpy).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Final

from pyai_caching.semantic.backends.base import decode_fields, encode_fields, stream_key

if TYPE_CHECKING:
    from pyai_caching.semantic.index import Candidate, Item, Limits, LocalIndex, StoreState
    from pyai_caching.semantic.vectors import Vector
    from pyai_caching.stores import RedisStore

__all__ = ["StreamBackend"]

PAGE: Final = 1000
"""Stream entries read per round trip."""


class StreamBackend:
    """A Redis stream per context key; each process reads only what was added since its last look."""

    def __init__(self, store: RedisStore, namespace: str, state: StoreState) -> None:
        self.store, self.namespace, self.state = store, namespace, state

    async def refresh(self, context: str, dim: int) -> LocalIndex:
        """This process's copy of the context's stream, brought up to date."""
        name = stream_key(self.namespace, context)
        index = self.state.index(name, dim)
        client = await self.store.client()
        while True:
            cursor = index.cursor
            async with client.pipeline(transaction=True) as pipe:
                pipe.xrange(name, min=f"({cursor}" if cursor else "-", max="+", count=PAGE)
                pipe.xlen(name)
                rows, length = await pipe.execute()
            items: list[Item] = []
            vectors: list[Vector] = []
            for _, fields in rows:
                decoded = decode_fields(fields, dim)
                if decoded is not None:
                    items.append(decoded[0])
                    vectors.append(decoded[1])
            new_cursor = rows[-1][0].decode() if rows else cursor
            # The stream keeps its newest `length` items (MAXLEN trims the oldest; a deleted stream has none):
            # so does this copy.
            applied = index.extend(items, vectors, new_cursor, keep=length if len(rows) < PAGE else None, after=cursor)
            if applied and len(rows) < PAGE:
                return index

    async def candidates(self, context: str, query: Vector, limits: Limits) -> list[Candidate]:
        index = await self.refresh(context, query.shape[0])
        return index.search(query, limits.threshold, limits.max_candidates)

    async def add(self, context: str, item: Item, vector: Vector, limits: Limits, ttl: float | None) -> None:
        name = stream_key(self.namespace, context)
        client = await self.store.client()
        async with client.pipeline(transaction=False) as pipe:
            pipe.xadd(name, encode_fields(item, vector), maxlen=limits.max_entries, approximate=True)
            if ttl is not None:
                pipe.pexpire(name, max(1, math.ceil(ttl * 1000)))
            await pipe.execute()
