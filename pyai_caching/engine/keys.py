"""The key layout: where an entry lives in a store, and the SHA-256 digest of a canonical request.

Every store key of this library is `pyai_caching:<namespace>:<kind>:<rest>`; `KeyKind` lists the kinds, once.
Entry keys wrap the digest in a Redis Cluster hash tag (`{<digest>}`), so an entry and its lock live on one node.
What goes into a digest is decided in `pyai_caching.engine.canonical` (the canonical form of a request) and
`pyai_caching.engine.identity` (a model's identity by value).
"""

from __future__ import annotations

import hashlib
import re
from enum import StrEnum
from typing import TYPE_CHECKING, Final

from pyai_caching._util.canonical_json import dumps_canonical
from pyai_caching.exceptions import ConfigurationError

if TYPE_CHECKING:
    from pyai_caching.engine.canonical import CanonicalRequest

__all__ = [
    "DEFAULT_NAMESPACE",
    "KEY_PREFIX",
    "KEY_SCHEMA_VERSION",
    "KeyKind",
    "digest_json",
    "entry_key",
    "kind_prefix",
    "namespace_prefix",
    "request_digest",
    "validate_namespace",
]

KEY_SCHEMA_VERSION: Final = 2
"""Bumped whenever the canonical form changes; old entries then simply stop matching."""

KEY_PREFIX: Final = "pyai_caching:"
"""Every key this library writes starts with this prefix; nothing else is ever touched."""

DEFAULT_NAMESPACE: Final = "default"
"""The namespace used when none is given."""

_NAMESPACE_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")


class KeyKind(StrEnum):
    """What a key holds: the `<kind>` part of `pyai_caching:<namespace>:<kind>:...`."""

    REQUEST = "r"
    """A request-level entry: one model response."""
    RUN = "run"
    """A run-level entry: the messages of a whole run (the fast path)."""
    SEMANTIC = "sem"
    """The semantic cache's index of one context: a Redis stream, or a JSON document in any other store."""
    SEMANTIC_VECTORS = "semv"
    """The version of the semantic cache's JSON document of one context (stores other than Redis)."""
    SEMANTIC_INDEX = "semidx"
    """The name of a Redis vector search index of the semantic cache."""
    SEMANTIC_HASH = "semh"
    """The prefix of the hashes a Redis vector search index covers."""
    MISSES = "miss"
    """A page of the miss log of `pyai-caching explain` (`pyai_caching.explain.log`)."""


def digest_json(namespace: str, header_json: str, messages_json: str, *, extra: str = "") -> str:
    """SHA-256 (hex) of a request given as canonical JSON: the header and the messages as one array.

    The run-level fast path passes JSON fragments it already holds; the bytes hashed are those of the whole request.
    """
    h = hashlib.sha256(f"pyai_caching/key/v{KEY_SCHEMA_VERSION}\x00{namespace}\x00".encode())
    h.update(_utf8(extra))
    h.update(b"\x00")
    h.update(_utf8(header_json))
    h.update(b"\x00")
    h.update(_utf8(messages_json))
    return h.hexdigest()


def _utf8(text: str) -> bytes:
    """UTF-8, with lone surrogates (which `agent.run` accepts in a prompt) encoded rather than refused."""
    return text.encode("utf-8", "surrogatepass")


def request_digest(canonical: CanonicalRequest, namespace: str, *, extra: str = "") -> str:
    """SHA-256 (hex) of a whole canonical request."""
    # One dump of the whole list: the canonical array is the messages' canonical texts joined by commas.
    return digest_json(namespace, dumps_canonical(canonical.header), dumps_canonical(canonical.messages), extra=extra)


def validate_namespace(namespace: str | None) -> str:
    """Return the namespace to use, or raise `ConfigurationError` if it would break the key scheme."""
    if namespace is None:
        return DEFAULT_NAMESPACE
    if not isinstance(namespace, str):
        raise ConfigurationError(f"namespace must be a string, got {type(namespace).__name__}")
    if not _NAMESPACE_RE.fullmatch(namespace):
        raise ConfigurationError(
            f"namespace {namespace!r} is not allowed: use 1-64 characters from letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return namespace


def namespace_prefix(namespace: str | None = None) -> str:
    """The key prefix of one namespace, or of every entry of this library when `namespace` is `None`."""
    if namespace is None:
        return KEY_PREFIX
    return f"{KEY_PREFIX}{validate_namespace(namespace)}:"


def entry_key(namespace: str, kind: KeyKind, hex_digest: str) -> str:
    """The store key of an entry: `pyai_caching:<namespace>:<kind>:{<digest>}`.

    The digest is wrapped in a Redis Cluster hash tag, so an entry and its lock live on the same node.
    """
    return f"{KEY_PREFIX}{namespace}:{kind}:{{{hex_digest}}}"


def kind_prefix(namespace: str, kind: KeyKind) -> str:
    """The prefix shared by every key of one kind in one namespace: `pyai_caching:<namespace>:<kind>:`."""
    return f"{KEY_PREFIX}{namespace}:{kind}:"
