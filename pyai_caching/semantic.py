"""Opt-in semantic cache: answer a prompt that means the same as a recorded one, without a model call.

```python
from pydantic_ai import Embedder
from pyai_caching import SemanticCache, cached_agent_run

faq = SemanticCache(embedder=Embedder("openai:text-embedding-3-small"), threshold=0.95)
answer = await cached_agent_run(agent, "How do I reset my password?", "faq", semantic=faq)
```

How a lookup works (inside `ResponseCache.wrap_model_request`, only after the exact lookup missed):

1. Only a request whose last message ends with a text `UserPromptPart` takes part (the first request of a run,
   or a new user turn). Requests that carry tool results, multimodal prompts, or no prompt never match.
2. Everything in the canonical request except the text of that final prompt (model, settings, tool / output /
   instruction definitions, system prompts, the whole history) plus the namespace and the embedder's identity
   (provider, model name, dimensions) is hashed into a **context key**. Similarity search runs only among
   entries recorded under the same context key, so an answer is never served across different instructions,
   tools, output schemas, models, settings or conversation histories.
3. The prompt is embedded; the nearest recorded prompts of that context (cosine similarity) at or above
   `threshold` are candidates, best first. The first candidate whose exact entry still exists, whose stored
   request re-hashes to the same context key and stores the same prompt text, is served.
4. On a miss the model is called as usual; once its response is stored, the prompt's vector is added to the
   context's index, pointing at the exact entry.

Indexes, by store:

* `RedisStore` on database 0 of a server with vector search (Redis 8, Redis Stack: `FT._LIST` answers): one
  hash per recorded prompt and one HNSW index per namespace and dimension, queried with a KNN search filtered by
  the context key. No copy of the vectors in each process and no cold load; for more entries per context than
  a process should hold, or many processes. `max_entries` is not enforced there (entries expire with the TTL).
* `RedisStore` without vector search (Redis 7 and older, Valkey): one Redis stream per context key
  (`pyai_caching:<ns>:sem:{<context digest>}`, capped at `max_entries` with `XADD MAXLEN ~`). Each process
  keeps the vectors of the contexts it uses in memory and, on every lookup, reads only what was added since its
  last look (`XRANGE (<last id> +`, one round trip). The search is an exact cosine over all vectors of the
  context (numpy). Sensible up to about 10,000 entries per context (see `benchmarks/semantic.py`).
* Any other store (`LocalStore`, `MemoryStore`, your own): one JSON document per context key plus a small
  version key. A lookup reads the version key and reloads the document only when it changed; adding a prompt
  rewrites the whole document, and two processes adding to one context at the same moment can lose one of
  the two additions (that prompt is then simply not found by meaning; exact caching is unaffected). Sensible
  for hundreds to a few thousand entries per context.

Failures never fail a call: an embedder that raises or times out, or an index that cannot be read, is a
semantic miss (logged); store failures follow `on_cache_error` like every other cache operation.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import math
import threading
import uuid
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic_ai.embeddings import Embedder, EmbeddingModel
from redis.exceptions import ResponseError

from pyai_caching._util.redact import redact_url_in_text
from pyai_caching._util.scrub import scrub_text
from pyai_caching._util.text import shorten
from pyai_caching.engine import ports
from pyai_caching.engine.context import SemanticMatch
from pyai_caching.engine.keys import KEY_PREFIX, dumps_canonical, entry_key
from pyai_caching.exceptions import ConfigurationError
from pyai_caching.stores import RedisStore, Store

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from pyai_caching.engine.access import StoreAccess
    from pyai_caching.engine.context import CallRecord
    from pyai_caching.engine.entries import ResponseEntry
    from pyai_caching.engine.keys import CanonicalRequest
    from pyai_caching.engine.ports import CacheView

    Vector = npt.NDArray[np.float32]

__all__ = ["EmbedFunction", "SemanticCache", "SemanticMatch"]

logger = logging.getLogger("pyai_caching")

EmbedFunction = Callable[[list[str]], Awaitable[Sequence[Sequence[float]]]]
"""A custom embedder: an async function from a list of texts to one vector per text."""

SEMANTIC_SCHEMA_VERSION: Final = 1
"""Bumped whenever the context key or the index layout changes; older indexes then simply stop matching."""

_INDEX_FORMAT: Final = "pyai_caching-semantic-index"
_PAGE: Final = 1000
_MAX_CONTEXTS_IN_MEMORY: Final = 1024
_EPSILON: Final = 1e-6  # float32 rounding: two identical prompts must reach a threshold of 1.0


# --- Configuration -----------------------------------------------------------------------------------------


@dataclass(kw_only=True, repr=False)
class SemanticCache:
    """Serve a stored answer when a new prompt means the same as a recorded one (off unless you pass one).

    ```python
    SemanticCache(embedder=Embedder("openai:text-embedding-3-small"), threshold=0.95)
    SemanticCache(embedder="sentence-transformers:all-MiniLM-L6-v2", threshold=0.9)
    SemanticCache(embedder=my_async_embed_function, name="my-embedder-v2")
    ```

    Needs numpy (`pip install 'pyai-caching[semantic]'`).
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
        _numpy()
        embedder = self.embedder
        if isinstance(embedder, str):
            if ":" not in embedder:
                raise ConfigurationError(
                    f"embedder {embedder!r} needs a provider prefix, for example 'openai:text-embedding-3-small' "
                    "or 'sentence-transformers:all-MiniLM-L6-v2'"
                )
            self._embedder = Embedder(embedder)
        elif isinstance(embedder, EmbeddingModel):
            self._embedder = Embedder(embedder)
        elif isinstance(embedder, Embedder) or callable(embedder):
            self._embedder = embedder
        else:
            raise ConfigurationError(
                "embedder must be a pydantic_ai Embedder, an EmbeddingModel, a model name such as "
                "'openai:text-embedding-3-small', or an async function (texts) -> vectors, "
                f"got {type(embedder).__name__}"
            )
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
        return await lookup(cache, self, access, namespace, canonical, record, model_label)

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
        await remember(self, access, namespace, canonical, key, probe, record)

    def __repr__(self) -> str:
        # The embedder is shown by its identity, never by its own repr (a callable object may hold an API key).
        return (
            f"SemanticCache(embedder={_embedder_label(self)!r}, threshold={self.threshold!r}, "
            f"max_candidates={self.max_candidates!r}, max_entries={self.max_entries!r}, name={self.name!r}, "
            f"timeout={self.timeout!r}, accept_hits={self.accept_hits!r}, index={self.index!r})"
        )


# --- numpy -------------------------------------------------------------------------------------------------

_np: Any = None


def _numpy() -> Any:
    global _np
    if _np is None:
        try:
            import numpy
        except ImportError:
            raise ImportError(
                "SemanticCache needs numpy for its vector search: pip install 'pyai-caching[semantic]'"
            ) from None
        _np = numpy
    return _np


# --- Prompts, vectors and context keys (pure) --------------------------------------------------------------


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
    content = part.get("content") if isinstance(part, dict) else None
    if part.get("part_kind") != "user-prompt" or not isinstance(content, str) or not content.strip():
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


def _normalize(values: Any) -> Vector | None:
    np = _numpy()
    try:
        vector = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return None
    if vector.ndim != 1 or vector.size == 0 or not np.all(np.isfinite(vector)):
        return None
    norm = float(np.linalg.norm(vector))
    if not norm > 0:
        return None
    result: Vector = (vector / norm).astype(np.float32)
    return result


def _sign(secret: bytes | None, context: str, key: str, prompt: str, vector: bytes) -> str:
    if secret is None:
        return ""
    payload = b"\x00".join((b"sem1", context.encode(), key.encode(), prompt.encode(), vector))
    return hmac.new(secret, payload, hashlib.sha256).hexdigest()


# --- Embedding ---------------------------------------------------------------------------------------------

_embedder_failing: dict[str, bool] = {}


def _embedder_label(config: SemanticCache) -> str:
    if config.name is not None:
        return config.name
    embedder = config._embedder
    if isinstance(embedder, Embedder):
        model = embedder.model
        return model if isinstance(model, str) else f"{model.system}:{model.model_name}"
    return f"{getattr(embedder, '__module__', '?')}.{getattr(embedder, '__qualname__', type(embedder).__name__)}"


async def _embed(config: SemanticCache, prompt: str) -> tuple[Vector, str] | None:
    """The prompt's unit vector and the embedder identity (`name/dimensions`), or `None` after a logged failure."""
    label = _embedder_label(config)
    try:
        embedder = config._embedder
        if isinstance(embedder, Embedder):
            result = await asyncio.wait_for(embedder.embed_query(prompt), config.timeout)
            vectors: Sequence[Sequence[float]] = result.embeddings
            identity = config.name or f"{result.provider_name}:{result.model_name}"
        else:
            vectors = await asyncio.wait_for(embedder([prompt]), config.timeout)
            identity = label
        vector = _normalize(vectors[0]) if len(vectors) == 1 else None
        if vector is None:
            raise ValueError(f"expected one finite, non-zero vector for one text, got {len(vectors)} vector(s)")
    except asyncio.CancelledError:
        raise
    except Exception as error:
        first = not _embedder_failing.get(label, False)
        _embedder_failing[label] = True
        log = logger.warning if first else logger.debug
        log(
            "embedder %s failed (%s: %s); semantic lookups are misses until it recovers",
            label,
            type(error).__name__,
            shorten(scrub_text(redact_url_in_text(str(error))), 200),
        )
        return None
    if _embedder_failing.pop(label, False):
        logger.warning("embedder %s recovered", label)
    return vector, f"{identity}/{vector.shape[0]}"


# --- The in-process index of one context key ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Item:
    key: str
    """The exact entry the prompt's answer is stored under."""
    prompt: str
    """The recorded prompt."""
    signature: str
    """HMAC of the item when the cache has a secret, else `""`."""


@dataclass(frozen=True, slots=True)
class _Candidate:
    item: _Item
    vector: Vector
    similarity: float


class _LocalIndex:
    """The vectors of one context key held by this process, searched exactly (cosine = dot of unit vectors)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.cursor: str | None = None
        self.items: list[_Item] = []
        self._matrix: Vector = _numpy().zeros((16, dim), dtype=_numpy().float32)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.items)

    def replace(self, items: list[_Item], vectors: list[Vector], cursor: str | None) -> None:
        np = _numpy()
        with self._lock:
            self.items = list(items)
            matrix = np.zeros((max(16, len(items)), self.dim), dtype=np.float32)
            if vectors:
                matrix[: len(vectors)] = np.stack(vectors)
            self._matrix = matrix
            self.cursor = cursor

    def extend(
        self, items: list[_Item], vectors: list[Vector], cursor: str | None, keep: int | None, *, after: str | None
    ) -> bool:
        """Append items read after cursor `after`, keep only the newest `keep` (`None`: all), move the cursor.

        Returns `False` (and changes nothing) when the cursor is no longer `after`: another task or thread applied
        those items first, and the caller must read again.
        """
        np = _numpy()
        with self._lock:
            if self.cursor != after:
                return False
            n = len(self.items)
            if items:
                needed = n + len(items)
                if needed > self._matrix.shape[0]:
                    grown = np.zeros((max(needed, 2 * self._matrix.shape[0]), self.dim), dtype=np.float32)
                    grown[:n] = self._matrix[:n]
                    self._matrix = grown
                self._matrix[n:needed] = np.stack(vectors)
                self.items.extend(items)
                n = needed
            if keep is not None and n > keep:
                drop = n - keep
                self._matrix[:keep] = self._matrix[drop:n].copy()
                del self.items[:drop]
            self.cursor = cursor
            return True

    def search(self, query: Vector, threshold: float, limit: int) -> list[_Candidate]:
        np = _numpy()
        with self._lock:
            n = len(self.items)
            if n == 0:
                return []
            matrix = self._matrix[:n]
            # einsum, not `matrix @ query`: BLAS would spread this memory-bound product over threads, which costs
            # 10-20x more than one thread on a busy machine (see benchmarks/semantic.py).
            similarities = np.einsum("ij,j->i", matrix, query)
            top = np.argpartition(-similarities, limit - 1)[:limit] if n > limit else np.arange(n)
            order = top[np.argsort(-similarities[top], kind="stable")]
            return [
                _Candidate(self.items[i], matrix[i].copy(), min(float(similarities[i]), 1.0))
                for i in order
                if similarities[i] >= threshold - _EPSILON
            ]


class _StoreState:
    """What this process knows about one store: the indexes it holds and whether the server has vector search."""

    def __init__(self) -> None:
        self.indexes: OrderedDict[str, _LocalIndex] = OrderedDict()
        self.vector_search: bool | None = None
        self.search_indexes: set[str] = set()
        self.lock = threading.Lock()

    def index(self, name: str, dim: int) -> _LocalIndex:
        with self.lock:
            index = self.indexes.get(name)
            if index is None or index.dim != dim:
                index = self.indexes[name] = _LocalIndex(dim)
                while len(self.indexes) > _MAX_CONTEXTS_IN_MEMORY:
                    self.indexes.popitem(last=False)
            else:
                self.indexes.move_to_end(name)
            return index


_states_lock = threading.Lock()
_states: dict[int, tuple[Callable[[], Any], _StoreState]] = {}


def _state(store: Store) -> _StoreState:
    ident = id(store)
    with _states_lock:
        found = _states.get(ident)
        if found is not None and found[0]() is store:
            return found[1]
        state = _StoreState()
        try:
            ref: Callable[[], Any] = weakref.ref(store, lambda _ref: _forget(ident))
        except TypeError:  # a store class without weak reference support: keep it alive with its state

            def ref() -> Any:
                return store

        _states[ident] = (ref, state)
        return state


def _forget(ident: int) -> None:
    with _states_lock:
        found = _states.get(ident)
        if found is not None and found[0]() is None:
            del _states[ident]


# --- Backends ----------------------------------------------------------------------------------------------


class _Backend:
    """Where the vectors of a context key live; every method may raise (the caller fails open)."""

    async def candidates(self, context: str, query: Vector, config: SemanticCache) -> list[_Candidate]:
        raise NotImplementedError

    async def add(self, context: str, item: _Item, vector: Vector, config: SemanticCache, ttl: float | None) -> None:
        raise NotImplementedError


class _StreamBackend(_Backend):
    """A Redis stream per context key; each process reads only what was added since its last look."""

    def __init__(self, store: RedisStore, namespace: str, state: _StoreState) -> None:
        self.store, self.namespace, self.state = store, namespace, state

    def _key(self, context: str) -> str:
        return entry_key(self.namespace, "sem", context)

    async def refresh(self, context: str, dim: int) -> _LocalIndex:
        name = self._key(context)
        index = self.state.index(name, dim)
        client = await self.store.client()
        while True:
            cursor = index.cursor
            async with client.pipeline(transaction=True) as pipe:
                pipe.xrange(name, min=f"({cursor}" if cursor else "-", max="+", count=_PAGE)
                pipe.xlen(name)
                rows, length = await pipe.execute()
            items: list[_Item] = []
            vectors: list[Vector] = []
            for _, fields in rows:
                decoded = _decode_fields(fields, dim)
                if decoded is not None:
                    items.append(decoded[0])
                    vectors.append(decoded[1])
            new_cursor = rows[-1][0].decode() if rows else cursor
            # The stream keeps its newest `length` items (MAXLEN trims the oldest; a deleted stream has none):
            # so does this copy.
            applied = index.extend(items, vectors, new_cursor, keep=length if len(rows) < _PAGE else None, after=cursor)
            if applied and len(rows) < _PAGE:
                return index

    async def candidates(self, context: str, query: Vector, config: SemanticCache) -> list[_Candidate]:
        index = await self.refresh(context, query.shape[0])
        return index.search(query, config.threshold, config.max_candidates)

    async def add(self, context: str, item: _Item, vector: Vector, config: SemanticCache, ttl: float | None) -> None:
        name = self._key(context)
        client = await self.store.client()
        async with client.pipeline(transaction=False) as pipe:
            pipe.xadd(name, _encode_fields(item, vector), maxlen=config.max_entries, approximate=True)
            if ttl is not None:
                pipe.pexpire(name, max(1, math.ceil(ttl * 1000)))
            await pipe.execute()


def _encode_fields(item: _Item, vector: Vector) -> dict[Any, Any]:
    return {
        "k": item.key.encode(),
        "p": item.prompt.encode(),
        "s": item.signature.encode(),
        "v": vector.astype("<f4").tobytes(),
    }


def _decode_fields(fields: dict[bytes, bytes], dim: int) -> tuple[_Item, Vector] | None:
    try:
        vector = _numpy().frombuffer(fields[b"v"], dtype="<f4").astype(_numpy().float32)
        if vector.shape != (dim,):
            return None
        return _Item(fields[b"k"].decode(), fields[b"p"].decode(), fields.get(b"s", b"").decode()), vector
    except (KeyError, ValueError, UnicodeDecodeError):
        return None


class _DocumentBackend(_Backend):
    """One JSON document per context key in any `Store`, plus a version key read on every lookup."""

    def __init__(self, access: StoreAccess, namespace: str, state: _StoreState, record: CallRecord | None) -> None:
        self.access, self.namespace, self.state, self.record = access, namespace, state, record

    def _keys(self, context: str) -> tuple[str, str]:
        return entry_key(self.namespace, "sem", context), entry_key(self.namespace, "semv", context)

    async def _load(self, context: str, dim: int) -> tuple[list[_Item], list[Vector]]:
        raw = await self.access.get_raw(self._keys(context)[0], self.record)
        if raw is None:
            return [], []
        try:
            document = json.loads(raw)
            if document.get("format") != _INDEX_FORMAT or document.get("version") != SEMANTIC_SCHEMA_VERSION:
                return [], []
            items: list[_Item] = []
            vectors: list[Vector] = []
            np = _numpy()
            for row in document["items"]:
                vector = np.frombuffer(base64.b64decode(row["v"]), dtype="<f4").astype(np.float32)
                if vector.shape == (dim,):
                    items.append(_Item(row["k"], row["p"], row.get("s", "")))
                    vectors.append(vector)
        except (ValueError, KeyError, TypeError, AttributeError):
            logger.warning("ignoring an unreadable semantic index %s", self._keys(context)[0])
            return [], []
        return items, vectors

    async def candidates(self, context: str, query: Vector, config: SemanticCache) -> list[_Candidate]:
        dim = query.shape[0]
        document_key, version_key = self._keys(context)
        index = self.state.index(document_key, dim)
        raw_version = await self.access.get_raw(version_key, self.record)
        version = raw_version.decode("ascii", "replace") if raw_version is not None else None
        if version != index.cursor:
            items, vectors = await self._load(context, dim) if version is not None else ([], [])
            index.replace(items, vectors, version)
        return index.search(query, config.threshold, config.max_candidates)

    async def add(self, context: str, item: _Item, vector: Vector, config: SemanticCache, ttl: float | None) -> None:
        dim = vector.shape[0]
        document_key, version_key = self._keys(context)
        items, vectors = await self._load(context, dim)
        kept = [(i, v) for i, v in zip(items, vectors, strict=True) if i.key != item.key]
        kept.append((item, vector))
        kept = kept[-config.max_entries :]
        document = {
            "format": _INDEX_FORMAT,
            "version": SEMANTIC_SCHEMA_VERSION,
            "dim": dim,
            "items": [
                {"k": i.key, "p": i.prompt, "s": i.signature, "v": base64.b64encode(v.astype("<f4").tobytes()).decode()}
                for i, v in kept
            ],
        }
        version = uuid.uuid4().hex
        store = self.access.store
        await store.set(document_key, json.dumps(document, ensure_ascii=False).encode(), ttl=ttl)
        await store.set(version_key, version.encode(), ttl=ttl)
        self.state.index(document_key, dim).replace([i for i, _ in kept], [v for _, v in kept], version)


class _SearchBackend(_Backend):
    """The Redis server's own vector search (Redis 8, Redis Stack): one hash per prompt, one HNSW index per
    namespace and dimension, a KNN query filtered by the context key's tag.

    A command error (a server whose search module lacks vectors, a forbidden command) logs a WARNING and makes
    this process use `_StreamBackend` from then on; connection errors are store failures like any other.
    """

    def __init__(self, store: RedisStore, namespace: str, state: _StoreState) -> None:
        self.store, self.namespace, self.state = store, namespace, state
        self.fallback = _StreamBackend(store, namespace, state)

    async def candidates(self, context: str, query: Vector, config: SemanticCache) -> list[_Candidate]:
        for attempt in range(2):
            try:
                return await self._candidates(context, query, config)
            except ResponseError as error:
                if attempt == 0 and self._index_gone(error, query.shape[0]):
                    continue
                self._failed(error)
                break
        return await self.fallback.candidates(context, query, config)

    async def add(self, context: str, item: _Item, vector: Vector, config: SemanticCache, ttl: float | None) -> None:
        for attempt in range(2):
            try:
                return await self._add(context, item, vector, config, ttl)
            except ResponseError as error:
                if attempt == 0 and self._index_gone(error, vector.shape[0]):
                    continue
                self._failed(error)
                break
        await self.fallback.add(context, item, vector, config, ttl)

    def _index_gone(self, error: ResponseError, dim: int) -> bool:
        """The index this process created was dropped meanwhile: forget it, so that it is created again."""
        name = self._index_name(dim)
        if name in self.state.search_indexes and "index" in str(error).lower():
            self.state.search_indexes.discard(name)
            return True
        return False

    def _failed(self, error: ResponseError) -> None:
        if self.state.vector_search:
            self.state.vector_search = False
            logger.warning(
                "vector search on %s failed (%s); the semantic cache uses its own index from now on",
                self.store.description,
                shorten(redact_url_in_text(str(error)), 200),
            )

    def _index_name(self, dim: int) -> str:
        return f"pyai_caching:{self.namespace}:semidx:{dim}"

    def _prefix(self, dim: int) -> str:
        return f"pyai_caching:{self.namespace}:semh:{dim}:"

    async def _ensure_index(self, client: Any, dim: int) -> str:
        name = self._index_name(dim)
        if name in self.state.search_indexes:
            return name
        try:
            await client.execute_command("FT.INFO", name)
        except ResponseError:
            try:
                await client.execute_command(
                    "FT.CREATE", name, "ON", "HASH", "PREFIX", "1", self._prefix(dim),
                    "SCHEMA", "c", "TAG", "v", "VECTOR", "HNSW", "6",
                    "TYPE", "FLOAT32", "DIM", str(dim), "DISTANCE_METRIC", "COSINE",
                )  # fmt: skip
            except ResponseError as error:
                if "already exists" not in str(error).lower():
                    raise
        self.state.search_indexes.add(name)
        return name

    async def _candidates(self, context: str, query: Vector, config: SemanticCache) -> list[_Candidate]:
        dim = query.shape[0]
        client: Any = await self.store.client()
        name = await self._ensure_index(client, dim)
        limit = config.max_candidates
        reply = await client.execute_command(
            "FT.SEARCH", name, f"(@c:{{{context}}})=>[KNN {limit} @v $q AS d]",
            "PARAMS", "2", "q", query.astype("<f4").tobytes(),
            "SORTBY", "d", "ASC", "RETURN", "5", "k", "p", "s", "v", "d",
            "LIMIT", "0", str(limit), "DIALECT", "2",
        )  # fmt: skip
        found: list[_Candidate] = []
        for fields in _search_rows(reply):
            decoded = _decode_fields(fields, dim)
            if decoded is None or b"d" not in fields:
                continue
            similarity = min(1.0 - float(fields[b"d"]), 1.0)
            if similarity >= config.threshold - _EPSILON:
                found.append(_Candidate(decoded[0], decoded[1], similarity))
        return found

    async def _add(self, context: str, item: _Item, vector: Vector, config: SemanticCache, ttl: float | None) -> None:
        dim = vector.shape[0]
        client = await self.store.client()
        await self._ensure_index(client, dim)
        name = f"{self._prefix(dim)}{{{context}}}:{hashlib.sha256(item.key.encode()).hexdigest()[:32]}"
        async with client.pipeline(transaction=False) as pipe:
            pipe.hset(name, mapping={"c": context, **_encode_fields(item, vector)})
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


async def _has_vector_search(store: RedisStore, state: _StoreState) -> bool:
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


async def _backend(config: SemanticCache, access: StoreAccess, namespace: str, record: CallRecord | None) -> _Backend:
    store = access.store
    state = _state(store)
    if not isinstance(store, RedisStore):
        return _DocumentBackend(access, namespace, state, record)
    if config.index == "auto":
        # quiet: a store that cannot answer this is reported, and the stream backend's own operations then fail
        # open (or raise) as `on_cache_error` says
        _, search = await access._guard("semantic probe", _has_vector_search(store, state), record, quiet=True)
        if search:
            return _SearchBackend(store, namespace, state)
    return _StreamBackend(store, namespace, state)


async def _guarded(
    access: StoreAccess, operation: str, awaitable: Awaitable[Any], record: CallRecord | None
) -> tuple[bool, Any]:
    result: tuple[bool, Any] = await access._guard(operation, awaitable, record)
    return result


# --- The engine's two entry points -------------------------------------------------------------------------


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


async def _probe(config: SemanticCache, namespace: str, canonical: CanonicalRequest) -> Probe | None:
    split = split_prompt(canonical.messages)
    if split is None:
        return None
    prompt, masked = split
    embedded = await _embed(config, prompt)
    if embedded is None:
        return None
    vector, embedder_id = embedded
    context = context_digest(namespace, embedder_id, canonical.header, masked)
    return Probe(prompt=prompt, context=context, vector=vector, embedder_id=embedder_id)


async def lookup(
    cache: CacheView,
    config: SemanticCache,
    access: StoreAccess,
    namespace: str,
    canonical: CanonicalRequest,
    record: CallRecord | None,
    model_label: str,
) -> tuple[ResponseEntry | None, Probe | None]:
    """After an exact miss: the entry of the most similar recorded prompt of the same context, if any.

    Returns the entry to serve (or `None`) and the probe to hand to `remember` after the model answered.
    """
    if not config.accept_hits:
        return None, None
    probe = await _probe(config, namespace, canonical)
    if probe is None:
        return None, None
    backend = await _backend(config, access, namespace, record)
    ok, candidates = await _guarded(
        access, "semantic lookup", backend.candidates(probe.context, probe.vector, config), record
    )
    if not ok or not candidates:
        logger.debug("semantic miss (context %s)", probe.context[:12])
        return None, probe
    for candidate in candidates:
        entry = await _verified_entry(config, access, namespace, probe, candidate, record)
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
        _observe_hit(cache, model_label, match)
        logger.info(
            "semantic hit %s (similarity %.4f, threshold %.4f, task %s)",
            candidate.item.key,
            candidate.similarity,
            config.threshold,
            cache.task_name,
        )
        logger.debug("semantic hit: %r answered with the entry of %r", probe.prompt, match.matched_prompt)
        return entry, probe
    return None, probe


async def _verified_entry(
    config: SemanticCache,
    access: StoreAccess,
    namespace: str,
    probe: Probe,
    candidate: _Candidate,
    record: CallRecord | None,
) -> ResponseEntry | None:
    """The candidate's entry, if it exists and provably belongs to this context (a stale or tampered index
    can only cause a miss, never a wrong answer)."""
    item = candidate.item
    if access.secret is not None:
        expected = _sign(access.secret, probe.context, item.key, item.prompt, candidate.vector.astype("<f4").tobytes())
        if not hmac.compare_digest(expected, item.signature):
            logger.warning("semantic index item for %s has a bad signature; ignored", item.key)
            return None
    if not item.key.startswith(f"{KEY_PREFIX}{namespace}:r:{{"):
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
    config: SemanticCache,
    access: StoreAccess,
    namespace: str,
    canonical: CanonicalRequest,
    key: str,
    probe: Probe | None,
    record: CallRecord | None,
) -> None:
    """After the model's answer was stored under `key`: record the prompt's vector in its context's index."""
    if probe is None:
        probe = await _probe(config, namespace, canonical)
        if probe is None:
            return
    vector_bytes = probe.vector.astype("<f4").tobytes()
    item = _Item(key, probe.prompt, _sign(access.secret, probe.context, key, probe.prompt, vector_bytes))
    backend = await _backend(config, access, namespace, record)
    await _guarded(access, "semantic add", backend.add(probe.context, item, probe.vector, config, access.ttl), record)


def _observe_hit(cache: CacheView, model_label: str, match: SemanticMatch) -> None:
    """Count a semantic hit and mark the current span (through the engine's observer; never the prompts)."""
    ports.observer().semantic_hit(cache, model_label, match.similarity)
