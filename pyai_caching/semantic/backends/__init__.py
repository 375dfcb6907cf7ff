"""Where the vectors of each context key live, by store (see `pyai_caching.semantic`):

* `search`: a Redis server's own vector search (Redis 8, Redis Stack), on database 0;
* `stream`: a Redis stream per context key, searched in this process (Redis 7, Valkey);
* `document`: a JSON document per context key in any other store, searched in this process.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pyai_caching.semantic.backends.base import Backend
from pyai_caching.semantic.backends.document import DocumentBackend
from pyai_caching.semantic.backends.search import SearchBackend, has_vector_search
from pyai_caching.semantic.backends.stream import StreamBackend
from pyai_caching.semantic.index import state_of
from pyai_caching.stores import RedisStore

if TYPE_CHECKING:
    from pyai_caching.engine.access import StoreAccess
    from pyai_caching.engine.context import CallRecord

__all__ = ["Backend", "DocumentBackend", "SearchBackend", "StreamBackend", "backend_for"]


async def backend_for(
    index: Literal["auto", "local"], access: StoreAccess, namespace: str, record: CallRecord | None
) -> Backend:
    """The backend of the access's store: `index="local"` never uses a server's vector search."""
    store = access.store
    state = state_of(store)
    if not isinstance(store, RedisStore):
        return DocumentBackend(access, namespace, state, record)
    if index == "auto":
        # quiet: a store that cannot answer this is reported, and the stream backend's own operations then fail
        # open (or raise) as `on_cache_error` says
        _, search = await access.guard("semantic probe", has_vector_search(store, state), record, quiet=True)
        if search:
            return SearchBackend(store, namespace, state)
    return StreamBackend(store, namespace, state)
