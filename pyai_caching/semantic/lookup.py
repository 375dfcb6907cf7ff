"""The semantic cache's two steps in a cached call: `lookup` after an exact miss, `remember` after the model answered.

A recorded prompt is signed (HMAC) when the cache has a secret, and a candidate is only served after its exact entry
was read back and shown to belong to the same context with the same prompt: a stale or tampered index can cause a
miss, never a wrong answer.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import KW_ONLY, dataclass
from typing import TYPE_CHECKING, Literal, Protocol

from pyai_caching.engine import ports
from pyai_caching.engine.context import SemanticMatch
from pyai_caching.engine.keys import KeyKind, kind_prefix
from pyai_caching.semantic.backends import backend_for
from pyai_caching.semantic.embedding import embed
from pyai_caching.semantic.index import Item, Limits
from pyai_caching.semantic.prompts import context_digest, split_prompt
from pyai_caching.semantic.vectors import to_bytes

if TYPE_CHECKING:
    from pydantic_ai.embeddings import Embedder

    from pyai_caching.engine.access import StoreAccess
    from pyai_caching.engine.canonical import CanonicalRequest
    from pyai_caching.engine.context import CallRecord
    from pyai_caching.engine.entries import ResponseEntry
    from pyai_caching.engine.ports import CacheView
    from pyai_caching.semantic.embedding import EmbedFunction
    from pyai_caching.semantic.index import Candidate
    from pyai_caching.semantic.vectors import Vector

__all__ = ["Probe", "Settings", "lookup", "remember", "sign"]

logger = logging.getLogger("pyai_caching")


class Settings(Limits, Protocol):
    """What a lookup obeys (`SemanticCache` has it all)."""

    @property
    def accept_hits(self) -> bool:
        """`False`: record prompts, never answer from a similar one."""
        ...

    @property
    def index(self) -> Literal["auto", "local"]:
        """`local`: never a server's vector search."""
        ...

    @property
    def name(self) -> str | None:
        """The embedder's identity in the context key (`None`: the embedder's own)."""
        ...

    @property
    def timeout(self) -> float | None:
        """Seconds to wait for the embedder."""
        ...


@dataclass(slots=True)
class Probe:
    """What a semantic lookup learned about a request, kept to record the prompt after the model answered."""

    _: KW_ONLY
    prompt: str
    """The final user prompt."""
    context: str
    """The context key (hex)."""
    vector: Vector
    """The prompt's unit vector."""
    embedder_id: str
    """The embedder's identity (`name/dimensions`), part of the context key."""


def sign(secret: bytes | None, context: str, key: str, prompt: str, vector: bytes) -> str:
    """HMAC-SHA256 (hex) of a recorded prompt in its context, or `""` without a secret."""
    if secret is None:
        return ""
    payload = b"\x00".join((b"sem1", context.encode(), key.encode(), prompt.encode(), vector))
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


async def _probe(
    settings: Settings,
    embedder: Embedder | EmbedFunction,
    namespace: str,
    canonical: CanonicalRequest,
    record: CallRecord | None,
) -> Probe | None:
    split = split_prompt(canonical.messages)
    if split is None:
        return None
    prompt, masked = split
    embedded = await embed(embedder, prompt, name=settings.name, seconds=settings.timeout, record=record)
    if embedded is None:
        return None
    vector, embedder_id = embedded
    context = context_digest(namespace, embedder_id, canonical.header, masked)
    return Probe(prompt=prompt, context=context, vector=vector, embedder_id=embedder_id)


async def lookup(
    cache: CacheView,
    settings: Settings,
    embedder: Embedder | EmbedFunction,
    access: StoreAccess,
    namespace: str,
    canonical: CanonicalRequest,
    record: CallRecord | None,
    model_label: str,
) -> tuple[ResponseEntry | None, Probe | None]:
    """After an exact miss: the entry of the most similar recorded prompt of the same context, if any.

    Returns the entry to serve (or `None`) and the probe to hand to `remember` after the model answered.
    """
    if not settings.accept_hits:
        return None, None
    probe = await _probe(settings, embedder, namespace, canonical, record)
    if probe is None:
        return None, None
    backend = await backend_for(settings.index, access, namespace, record)
    ok, candidates = await access.guard(
        "semantic lookup", backend.candidates(probe.context, probe.vector, settings), record
    )
    if not ok or not candidates:
        logger.debug("semantic miss (context %s)", probe.context[:12])
        return None, probe
    for candidate in candidates:
        entry = await _verified_entry(access, namespace, probe, candidate, record)
        if entry is None:
            continue
        match = SemanticMatch(
            prompt=probe.prompt,
            matched_prompt=candidate.item.prompt,
            similarity=candidate.similarity,
            key=candidate.item.key,
        )
        if record is not None:
            record.semantic_matches.append(match)
        # Counted, and the current span marked, through the engine's observer (never with the prompts).
        ports.observer().semantic_hit(cache, model_label, match.similarity)
        logger.info(
            "semantic hit %s (similarity %.4f, threshold %.4f, task %s)",
            candidate.item.key,
            candidate.similarity,
            settings.threshold,
            cache.task_name,
        )
        logger.debug("semantic hit: %r answered with the entry of %r", probe.prompt, match.matched_prompt)
        return entry, probe
    return None, probe


async def _verified_entry(
    access: StoreAccess,
    namespace: str,
    probe: Probe,
    candidate: Candidate,
    record: CallRecord | None,
) -> ResponseEntry | None:
    """The candidate's entry, if it exists and provably belongs to this context (a stale or tampered index
    can only cause a miss, never a wrong answer)."""
    item = candidate.item
    if access.secret is not None:
        expected = sign(access.secret, probe.context, item.key, item.prompt, to_bytes(candidate.vector))
        if not hmac.compare_digest(expected, item.signature):
            logger.warning("semantic index item for %s has a bad signature; ignored", item.key)
            return None
    if not item.key.startswith(kind_prefix(namespace, KeyKind.REQUEST) + "{"):
        return None
    entry = await access.get_response(item.key, record)
    if entry is None or entry.request is None:
        return None
    split = split_prompt(entry.request.get("messages") or [])
    if split is None or split[0] != item.prompt:
        return None
    if context_digest(namespace, probe.embedder_id, entry.request.get("header") or {}, split[1]) != probe.context:
        return None
    return entry


async def remember(
    settings: Settings,
    embedder: Embedder | EmbedFunction,
    access: StoreAccess,
    namespace: str,
    canonical: CanonicalRequest,
    key: str,
    probe: Probe | None,
    record: CallRecord | None,
) -> None:
    """After the model's answer was stored under `key`: record the prompt's vector in its context's index."""
    if probe is None:
        probe = await _probe(settings, embedder, namespace, canonical, record)
        if probe is None:
            return
    item = Item(key, probe.prompt, sign(access.secret, probe.context, key, probe.prompt, to_bytes(probe.vector)))
    backend = await backend_for(settings.index, access, namespace, record)
    await access.guard("semantic add", backend.add(probe.context, item, probe.vector, settings, access.ttl), record)
