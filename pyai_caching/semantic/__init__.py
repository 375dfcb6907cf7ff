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

Embedding calls cost money too: each one is counted in the call's record (`embedding_calls`, `embedding_tokens`,
`embedding_cost` priced by pydantic-ai's `EmbeddingResult.cost()`, and `unpriced_embedding_calls` for a custom
async function, which reports no usage, or a model genai-prices does not know).

The modules: `config` (`SemanticCache`), `lookup` (the engine's two entry points, probes, signed items),
`embedding` (the embedder and what its calls cost), `prompts` (which requests take part, the context key),
`index` (items, the in-process index, what a process knows per store), `backends` (one module per index),
`vectors` (numpy).
"""

from __future__ import annotations

from pyai_caching.engine.context import SemanticMatch
from pyai_caching.semantic.config import SemanticCache
from pyai_caching.semantic.embedding import EmbedFunction

__all__ = ["EmbedFunction", "SemanticCache", "SemanticMatch"]
