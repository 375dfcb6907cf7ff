"""What every index backend offers, the keys they write, and the Redis fields of a recorded prompt.

Key layout (every key under `pyai_caching:<namespace>:`; the kinds are `engine.keys.KeyKind`):

* `sem:{<context>}`: the stream (Redis) or JSON document (any other store) of one context key;
* `semv:{<context>}`: the document's version (any other store);
* `semidx:<dim>`: the name of the server's vector index (Redis with vector search), over the hashes
  `semh:<dim>:{<context>}:<key digest>`, one per recorded prompt.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from pyai_caching.engine.keys import KeyKind, entry_key, kind_prefix
from pyai_caching.semantic.index import Item
from pyai_caching.semantic.vectors import from_bytes, to_bytes

if TYPE_CHECKING:
    from pyai_caching.semantic.index import Candidate, Limits
    from pyai_caching.semantic.vectors import Vector

__all__ = [
    "Backend",
    "decode_fields",
    "document_keys",
    "encode_fields",
    "search_hash_prefix",
    "search_index_name",
    "stream_key",
]


class Backend(Protocol):
    """Where the vectors of a context key live; every method may raise (the caller fails open)."""

    async def candidates(self, context: str, query: Vector, limits: Limits) -> list[Candidate]:
        """The recorded prompts of `context` most similar to `query`, at or above the threshold, best first."""
        ...

    async def add(self, context: str, item: Item, vector: Vector, limits: Limits, ttl: float | None) -> None:
        """Record `item` with its `vector` in `context` (living `ttl` seconds; `None`: forever)."""
        ...


def stream_key(namespace: str, context: str) -> str:
    """The Redis stream of one context key."""
    return entry_key(namespace, KeyKind.SEMANTIC, context)


def document_keys(namespace: str, context: str) -> tuple[str, str]:
    """The JSON document of one context key and the key of its version."""
    return entry_key(namespace, KeyKind.SEMANTIC, context), entry_key(namespace, KeyKind.SEMANTIC_VECTORS, context)


def search_index_name(namespace: str, dim: int) -> str:
    """The server-side vector index of a namespace and dimension."""
    return f"{kind_prefix(namespace, KeyKind.SEMANTIC_INDEX)}{dim}"


def search_hash_prefix(namespace: str, dim: int) -> str:
    """The prefix of the hashes that index indexes (one hash per recorded prompt)."""
    return f"{kind_prefix(namespace, KeyKind.SEMANTIC_HASH)}{dim}:"


def encode_fields(item: Item, vector: Vector) -> dict[Any, Any]:
    """The fields of a recorded prompt in a stream entry or a hash."""
    return {
        "k": item.key.encode(),
        "p": item.prompt.encode(),
        "s": item.signature.encode(),
        "v": to_bytes(vector),
    }


def decode_fields(fields: dict[bytes, bytes], dim: int) -> tuple[Item, Vector] | None:
    """The recorded prompt of `encode_fields`, or `None` when a field is missing, unreadable or of another size."""
    try:
        vector = from_bytes(fields[b"v"], dim)
        if vector is None:
            return None
        return Item(fields[b"k"].decode(), fields[b"p"].decode(), fields.get(b"s", b"").decode()), vector
    except (KeyError, UnicodeDecodeError, AttributeError):  # AttributeError: a field that is not bytes
        return None
