"""`SemanticCache`: the configuration a caller passes (`semantic=`), and the engine's `SemanticIndex` port."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic_ai.embeddings import Embedder, EmbeddingModel

from pyai_caching.exceptions import ConfigurationError
from pyai_caching.semantic.embedding import EmbedFunction, embedder_label, resolve_embedder
from pyai_caching.semantic.lookup import lookup, remember
from pyai_caching.semantic.vectors import numpy

if TYPE_CHECKING:
    from pyai_caching.engine.access import StoreAccess
    from pyai_caching.engine.canonical import CanonicalRequest
    from pyai_caching.engine.context import CallRecord
    from pyai_caching.engine.entries import ResponseEntry
    from pyai_caching.engine.ports import CacheView

__all__ = ["SemanticCache"]


@dataclass(kw_only=True, repr=False)
class SemanticCache:
    """Serve a stored answer when a new prompt means the same as a recorded one (off unless you pass one).

    ```python
    SemanticCache(embedder=Embedder("openai:text-embedding-3-small"), threshold=0.95)
    SemanticCache(embedder="sentence-transformers:all-MiniLM-L6-v2", threshold=0.9)
    SemanticCache(embedder=my_async_embed_function, name="my-embedder-v2")
    ```

    Needs numpy (`pip install 'pyai-caching[semantic]'`). Every embedding call it makes is counted in the call's
    record (`embedding_calls`, `embedding_tokens`, `embedding_cost`, `unpriced_embedding_calls`); a custom async
    function reports no usage, so its calls are unpriced.
    """

    embedder: Embedder | EmbeddingModel | str | EmbedFunction
    """What turns a prompt into a vector: a pydantic-ai `Embedder`, an `EmbeddingModel`, a model name such as
    `"openai:text-embedding-3-small"` or `"sentence-transformers:all-MiniLM-L6-v2"` (made into an `Embedder`),
    or an async function `(texts: list[str]) -> list[list[float]]` for anything else."""
    threshold: float = 0.95
    """The lowest cosine similarity that counts as "the same question", `0 < threshold <= 1`. Higher is safer:
    see the docs for how to choose it with your embedder and your prompts."""
    max_candidates: int = 3
    """How many of the most similar recorded prompts (at or above `threshold`) are tried, best first, when the
    best one's entry has expired or fails verification."""
    max_entries: int = 10_000
    """How many recorded prompts one context key keeps (the oldest go first); bounds memory and search time."""
    name: str | None = None
    """The embedder's identity in the context key. `None`: `provider:model` reported by a pydantic-ai embedder,
    or `module.qualname` of a function. Set it (and change it) when a function's vectors change meaning."""
    timeout: float | None = 10.0
    """Seconds to wait for the embedder; past it the lookup is a semantic miss. `None`: no limit."""
    accept_hits: bool = True
    """`False`: record prompts but never answer from a similar one (refuse semantic hits for a call with
    `cached_agent_run(..., accept_semantic=False)` or `dataclasses.replace(config, accept_hits=False)`)."""
    index: Literal["auto", "local"] = "auto"
    """`auto`: the Redis server's vector search when it has one, else the in-process exact search.
    `local`: always the in-process exact search."""

    _embedder: Embedder | EmbedFunction = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        numpy()
        self._embedder = resolve_embedder(self.embedder)
        threshold = self.threshold
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or math.isnan(threshold)
            or not 0 < threshold <= 1
        ):
            raise ConfigurationError(
                f"threshold must be a cosine similarity with 0 < threshold <= 1 (for example 0.95), got {threshold!r}"
            )
        for label, value in (("max_candidates", self.max_candidates), ("max_entries", self.max_entries)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{label} must be a positive integer, got {value!r}")
        if self.name is not None and (not isinstance(self.name, str) or not self.name.strip()):
            raise ConfigurationError(f"name must be a non-empty string or None, got {self.name!r}")
        timeout = self.timeout
        if timeout is not None and (
            isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
        ):
            raise ConfigurationError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        if not isinstance(self.accept_hits, bool):
            raise ConfigurationError(f"accept_hits must be True or False, got {self.accept_hits!r}")
        if self.index not in ("auto", "local"):
            raise ConfigurationError(f"index must be 'auto' or 'local', got {self.index!r}")

    async def lookup(
        self,
        cache: CacheView,
        access: StoreAccess,
        namespace: str,
        canonical: CanonicalRequest,
        record: CallRecord | None,
        model_label: str,
    ) -> tuple[ResponseEntry | None, Any]:
        """After an exact miss: the entry of the most similar recorded prompt (engine port `SemanticIndex`)."""
        return await lookup(cache, self, self._embedder, access, namespace, canonical, record, model_label)

    async def remember(
        self,
        access: StoreAccess,
        namespace: str,
        canonical: CanonicalRequest,
        key: str,
        probe: Any,
        record: CallRecord | None,
    ) -> None:
        """After the model's answer was stored under `key`: index its prompt (engine port `SemanticIndex`)."""
        await remember(self, self._embedder, access, namespace, canonical, key, probe, record)

    def __repr__(self) -> str:
        # The embedder is shown by its identity, never by its own repr (a callable object may hold an API key).
        return (
            f"SemanticCache(embedder={embedder_label(self._embedder, self.name)!r}, threshold={self.threshold!r}, "
            f"max_candidates={self.max_candidates!r}, max_entries={self.max_entries!r}, name={self.name!r}, "
            f"timeout={self.timeout!r}, accept_hits={self.accept_hits!r}, index={self.index!r})"
        )
