"""What an index holds, and the vectors of the context keys this process uses, searched exactly in memory.

A recorded prompt is an `Item` (the exact entry its answer is stored under, the prompt, a signature) with a unit
vector. The stream and document backends keep the vectors of each context key they read in a `LocalIndex`; what
this process knows about one store (those indexes, whether the server has vector search) is its `StoreState`.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol

from pyai_caching.semantic.vectors import EPSILON, numpy

if TYPE_CHECKING:
    from pyai_caching.semantic.vectors import Vector
    from pyai_caching.stores import Store

__all__ = ["Candidate", "Item", "Limits", "LocalIndex", "StoreState", "state_of"]

MAX_CONTEXTS_IN_MEMORY: Final = 1024
"""Context keys whose vectors one process keeps per store (the least recently used go first)."""

MAX_SEARCH_INDEXES: Final = 1024
"""Server-side index names one process remembers as created per store (forgetting one costs one `FT.INFO`)."""

MAX_PINNED_STORES: Final = 64
"""Stores without weak reference support whose state is kept (each keeps its store alive; the oldest go first)."""


class Limits(Protocol):
    """The settings a search and an addition obey (`SemanticCache` has them)."""

    @property
    def threshold(self) -> float:
        """The lowest cosine similarity that is a candidate."""
        ...

    @property
    def max_candidates(self) -> int:
        """How many candidates a search returns at most."""
        ...

    @property
    def max_entries(self) -> int:
        """How many recorded prompts one context key keeps."""
        ...


@dataclass(frozen=True, slots=True)
class Item:
    """A recorded prompt, as an index stores it (its vector aside)."""

    key: str
    """The exact entry the prompt's answer is stored under."""
    prompt: str
    """The recorded prompt."""
    signature: str
    """HMAC of the item when the cache has a secret, else `""`."""


@dataclass(frozen=True, slots=True)
class Candidate:
    """A recorded prompt at or above the threshold, found by a search."""

    item: Item
    """The recorded prompt."""
    vector: Vector
    """Its unit vector (a copy)."""
    similarity: float
    """Cosine similarity with the query, at most 1."""


class LocalIndex:
    """The vectors of one context key held by this process, searched exactly (cosine = dot of unit vectors)."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.cursor: str | None = None
        self.items: list[Item] = []
        self._matrix: Vector = numpy().zeros((16, dim), dtype=numpy().float32)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.items)

    def replace(self, items: list[Item], vectors: list[Vector], cursor: str | None) -> None:
        """Hold exactly `items` (with their `vectors`), read at `cursor`."""
        np = numpy()
        with self._lock:
            self.items = list(items)
            matrix = np.zeros((max(16, len(items)), self.dim), dtype=np.float32)
            if vectors:
                matrix[: len(vectors)] = np.stack(vectors)
            self._matrix = matrix
            self.cursor = cursor

    def extend(
        self, items: list[Item], vectors: list[Vector], cursor: str | None, keep: int | None, *, after: str | None
    ) -> bool:
        """Append items read after cursor `after`, keep only the newest `keep` (`None`: all), move the cursor.

        Returns `False` (and changes nothing) when the cursor is no longer `after`: another task or thread applied
        those items first, and the caller must read again.
        """
        np = numpy()
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

    def search(self, query: Vector, threshold: float, limit: int) -> list[Candidate]:
        """The `limit` most similar items at or above `threshold`, best first."""
        np = numpy()
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
                Candidate(self.items[i], matrix[i].copy(), min(float(similarities[i]), 1.0))
                for i in order
                if similarities[i] >= threshold - EPSILON
            ]


class StoreState:
    """What this process knows about one store: the indexes it holds and whether the server has vector search."""

    def __init__(self) -> None:
        self.indexes: OrderedDict[str, LocalIndex] = OrderedDict()
        self.vector_search: bool | None = None
        """Whether the server answers vector searches (`None`: not asked yet)."""
        self._search_indexes: set[str] = set()
        self.lock = threading.Lock()

    def index(self, name: str, dim: int) -> LocalIndex:
        """The index held under `name` (a new, empty one when none is held or its dimension differs)."""
        with self.lock:
            index = self.indexes.get(name)
            if index is None or index.dim != dim:
                index = self.indexes[name] = LocalIndex(dim)
                while len(self.indexes) > MAX_CONTEXTS_IN_MEMORY:
                    self.indexes.popitem(last=False)
            else:
                self.indexes.move_to_end(name)
            return index

    def has_search_index(self, name: str) -> bool:
        """Whether this process created (or found) the server-side index `name`."""
        return name in self._search_indexes

    def add_search_index(self, name: str) -> None:
        """Remember that the server-side index `name` exists (the set is bounded: forgetting costs a check)."""
        with self.lock:
            if len(self._search_indexes) >= MAX_SEARCH_INDEXES:
                self._search_indexes.clear()
            self._search_indexes.add(name)

    def forget_search_index(self, name: str) -> bool:
        """Forget the server-side index `name`; whether it was remembered."""
        with self.lock:
            if name in self._search_indexes:
                self._search_indexes.discard(name)
                return True
            return False


_states_lock = threading.Lock()
_states: dict[int, tuple[Callable[[], object], StoreState]] = {}
_pinned: OrderedDict[int, None] = OrderedDict()  # stores kept alive (no weak references), oldest first


def state_of(store: Store) -> StoreState:
    """This process's state of `store`, forgotten when the store is garbage collected."""
    ident = id(store)
    with _states_lock:
        found = _states.get(ident)
        if found is not None and found[0]() is store:
            if ident in _pinned:
                _pinned.move_to_end(ident)
            return found[1]
        state = StoreState()
        try:
            ref: Callable[[], object] = weakref.ref(store, lambda _ref: _forget(ident))
        except TypeError:  # a store class without weak reference support: keep it alive with its state, bounded

            def ref() -> object:
                return store

            _pinned[ident] = None
            while len(_pinned) > MAX_PINNED_STORES:
                oldest, _ = _pinned.popitem(last=False)
                del _states[oldest]
        _states[ident] = (ref, state)
        return state


def _forget(ident: int) -> None:
    with _states_lock:
        found = _states.get(ident)
        if found is not None and found[0]() is None:
            del _states[ident]
