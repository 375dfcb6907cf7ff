"""Any store (`LocalStore`, `MemoryStore`, your own): one JSON document per context key plus a version key.

A lookup reads the version key and reloads the document only when it changed; adding a prompt rewrites the whole
document, and two processes adding to one context at the same moment can lose one of the two additions (that
prompt is then simply not found by meaning; exact caching is unaffected).
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from typing import TYPE_CHECKING, Any, Final

from pyai_caching.semantic.backends.base import document_keys
from pyai_caching.semantic.index import Item
from pyai_caching.semantic.prompts import SEMANTIC_SCHEMA_VERSION
from pyai_caching.semantic.vectors import from_bytes, to_bytes

if TYPE_CHECKING:
    from pyai_caching.engine.access import StoreAccess
    from pyai_caching.engine.context import CallRecord
    from pyai_caching.semantic.index import Candidate, Limits, StoreState
    from pyai_caching.semantic.vectors import Vector

__all__ = ["DocumentBackend"]

logger = logging.getLogger("pyai_caching")

INDEX_FORMAT: Final = "pyai_caching-semantic-index"
"""The `format` of a document (a document of another format or version is an empty index)."""


class DocumentBackend:
    """One JSON document per context key in any `Store`, plus a version key read on every lookup."""

    def __init__(self, access: StoreAccess, namespace: str, state: StoreState, record: CallRecord | None) -> None:
        self.access, self.namespace, self.state, self.record = access, namespace, state, record

    async def _load(self, context: str, dim: int) -> tuple[list[Item], list[Vector]]:
        document_key = document_keys(self.namespace, context)[0]
        raw = await self.access.get_raw(document_key, self.record)
        if raw is None:
            return [], []
        try:
            return _decode(raw, dim)
        except (ValueError, KeyError, TypeError, AttributeError):  # ValueError covers JSON and base64 errors
            logger.warning("ignoring an unreadable semantic index %s", document_key)
            return [], []

    async def candidates(self, context: str, query: Vector, limits: Limits) -> list[Candidate]:
        dim = query.shape[0]
        document_key, version_key = document_keys(self.namespace, context)
        index = self.state.index(document_key, dim)
        raw_version = await self.access.get_raw(version_key, self.record)
        version = raw_version.decode("ascii", "replace") if raw_version is not None else None
        if version != index.cursor:
            items, vectors = await self._load(context, dim) if version is not None else ([], [])
            index.replace(items, vectors, version)
        return index.search(query, limits.threshold, limits.max_candidates)

    async def add(self, context: str, item: Item, vector: Vector, limits: Limits, ttl: float | None) -> None:
        dim = vector.shape[0]
        document_key, version_key = document_keys(self.namespace, context)
        items, vectors = await self._load(context, dim)
        kept = [(i, v) for i, v in zip(items, vectors, strict=True) if i.key != item.key]
        kept.append((item, vector))
        kept = kept[-limits.max_entries :]
        version = uuid.uuid4().hex
        store = self.access.store
        await store.set(document_key, _encode(kept, dim), ttl=ttl)
        await store.set(version_key, version.encode(), ttl=ttl)
        self.state.index(document_key, dim).replace([i for i, _ in kept], [v for _, v in kept], version)


def _encode(kept: list[tuple[Item, Vector]], dim: int) -> bytes:
    document = {
        "format": INDEX_FORMAT,
        "version": SEMANTIC_SCHEMA_VERSION,
        "dim": dim,
        "items": [
            {"k": i.key, "p": i.prompt, "s": i.signature, "v": base64.b64encode(to_bytes(v)).decode()} for i, v in kept
        ],
    }
    return json.dumps(document, ensure_ascii=False).encode()


def _decode(raw: bytes, dim: int) -> tuple[list[Item], list[Vector]]:
    """The items of a document of this format and version with `dim` dimensions (others are left out).

    Raises `ValueError`, `KeyError`, `TypeError` or `AttributeError` for a document that is not one.
    """
    document: Any = json.loads(raw)
    if document.get("format") != INDEX_FORMAT or document.get("version") != SEMANTIC_SCHEMA_VERSION:
        return [], []
    items: list[Item] = []
    vectors: list[Vector] = []
    for row in document["items"]:
        vector = from_bytes(base64.b64decode(row["v"]), dim)
        if vector is not None:
            items.append(Item(row["k"], row["p"], row.get("s", "")))
            vectors.append(vector)
    return items, vectors
