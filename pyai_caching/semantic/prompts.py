"""Which requests take part in a semantic lookup, and the context key that scopes it (pure)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, Final

from pyai_caching._util.canonical_json import dumps_canonical

__all__ = ["SEMANTIC_SCHEMA_VERSION", "context_digest", "split_prompt"]

SEMANTIC_SCHEMA_VERSION: Final = 1
"""Bumped whenever the context key or the index layout changes; older indexes then simply stop matching."""


def split_prompt(messages: Sequence[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]] | None:
    """The final user prompt's text and the canonical messages with that text masked, or `None`.

    `None` unless the last message is a request whose last part is a non-empty text `user-prompt`: requests
    that carry tool results, multimodal prompts or no prompt are never compared by meaning.
    """
    if not messages:
        return None
    last = messages[-1]
    if last.get("kind") != "request":
        return None
    parts = last.get("parts") or []
    if not parts:
        return None
    part = parts[-1]
    if not isinstance(part, dict) or part.get("part_kind") != "user-prompt":
        return None
    content = part.get("content")
    if not isinstance(content, str) or not content.strip():
        return None
    masked = {**last, "parts": [*parts[:-1], {**part, "content": None}]}
    return content, [*messages[:-1], masked]


def context_digest(namespace: str, embedder_id: str, header: dict[str, Any], masked: list[dict[str, Any]]) -> str:
    """SHA-256 (hex) of everything but the final prompt's text: the scope of a similarity search."""
    h = hashlib.sha256()
    h.update(f"pyai_caching/semantic/v{SEMANTIC_SCHEMA_VERSION}\x00{namespace}\x00{embedder_id}\x00".encode())
    h.update(dumps_canonical(header).encode())
    h.update(b"\x00")
    h.update(dumps_canonical(masked).encode())
    return h.hexdigest()
