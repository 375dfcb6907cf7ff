"""Turning a prompt into a unit vector, and what each embedding call adds to the call record.

Every call the semantic cache makes to its embedder is counted in the `CallRecord` of the `cached_agent_run` call
it happens in: `embedding_calls`, `embedding_tokens` (from the usage pydantic-ai reports) and `embedding_cost`,
priced with pydantic-ai's own `EmbeddingResult.cost()` (genai-prices). A call whose cost is unknown (a custom
async function, which reports no usage; a model genai-prices does not know; a call that failed or timed out) is
counted in `unpriced_embedding_calls`, so `embedding_cost` is then a lower bound.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Final, cast

from pydantic_ai.embeddings import Embedder, EmbeddingModel, EmbeddingResult

from pyai_caching._util.redact import redact_url_in_text
from pyai_caching._util.scrub import scrub_text
from pyai_caching._util.text import shorten
from pyai_caching.exceptions import ConfigurationError
from pyai_caching.semantic.vectors import normalize

if TYPE_CHECKING:
    from pyai_caching.engine.context import CallRecord
    from pyai_caching.semantic.vectors import Vector

__all__ = ["EmbedFunction", "embed", "embedder_label", "resolve_embedder"]

logger = logging.getLogger("pyai_caching")

EmbedFunction = Callable[[list[str]], Awaitable[Sequence[Sequence[float]]]]
"""A custom embedder: an async function from a list of texts to one vector per text."""

MAX_FAILING_EMBEDDERS: Final = 256
"""Embedders whose ongoing outage is remembered (to warn once per outage); the oldest are forgotten first."""

_failing_lock = threading.Lock()
_failing: OrderedDict[str, None] = OrderedDict()  # labels of the embedders whose last call failed


def resolve_embedder(embedder: object) -> Embedder | EmbedFunction:
    """What `SemanticCache(embedder=...)` calls: an `Embedder` or an async function; `ConfigurationError` else."""
    if isinstance(embedder, str):
        if ":" not in embedder:
            raise ConfigurationError(
                f"embedder {embedder!r} needs a provider prefix, for example 'openai:text-embedding-3-small' "
                "or 'sentence-transformers:all-MiniLM-L6-v2'"
            )
        return Embedder(embedder)
    if isinstance(embedder, EmbeddingModel):
        return Embedder(embedder)
    if isinstance(embedder, Embedder):
        return embedder
    if callable(embedder):
        return cast("EmbedFunction", embedder)
    raise ConfigurationError(
        "embedder must be a pydantic_ai Embedder, an EmbeddingModel, a model name such as "
        "'openai:text-embedding-3-small', or an async function (texts) -> vectors, "
        f"got {type(embedder).__name__}"
    )


def embedder_label(embedder: Embedder | EmbedFunction, name: str | None) -> str:
    """The embedder's identity: `name`, else `provider:model` of a pydantic-ai embedder or `module.qualname`."""
    if name is not None:
        return name
    if isinstance(embedder, Embedder):
        model = embedder.model
        return model if isinstance(model, str) else f"{model.system}:{model.model_name}"
    return f"{getattr(embedder, '__module__', '?')}.{getattr(embedder, '__qualname__', type(embedder).__name__)}"


async def embed(
    embedder: Embedder | EmbedFunction,
    prompt: str,
    *,
    name: str | None,
    seconds: float | None,
    record: CallRecord | None,
) -> tuple[Vector, str] | None:
    """The prompt's unit vector and the embedder identity (`name/dimensions`), or `None` after a logged failure.

    Waits `seconds` at most (`None`: no limit). The call is counted in `record` (see the module's docstring),
    whatever its outcome.
    """
    label = embedder_label(embedder, name)
    result: EmbeddingResult | None = None
    try:
        if isinstance(embedder, Embedder):
            result = await asyncio.wait_for(embedder.embed_query(prompt), seconds)
            vectors: Any = result.embeddings
            identity = name or f"{result.provider_name}:{result.model_name}"
        else:
            vectors = await asyncio.wait_for(embedder([prompt]), seconds)
            identity = label
    except asyncio.CancelledError:
        raise
    except Exception as error:  # the provider's or the user's code, which may raise anything: a semantic miss
        _count(record, None)
        _failed(label, f"{type(error).__name__}: {error}")
        return None
    _count(record, result)
    vector, problem = _one_vector(vectors)
    if vector is None:
        _failed(label, f"ValueError: expected one finite, non-zero vector for one text, got {problem}")
        return None
    with _failing_lock:
        recovered = label in _failing
        if recovered:
            del _failing[label]
    if recovered:
        logger.warning("embedder %s recovered", label)
    return vector, f"{identity}/{vector.shape[0]}"


def _one_vector(vectors: Any) -> tuple[Vector | None, str]:
    """The unit vector of the only vector of `vectors`, or `None` and what was wrong."""
    try:
        count = len(vectors)
    except TypeError:
        return None, type(vectors).__name__
    if count != 1:
        return None, f"{count} vector(s)"
    vector = normalize(vectors[0])
    return vector, "" if vector is not None else "a vector that is not one"


def _count(record: CallRecord | None, result: EmbeddingResult | None) -> None:
    """Add one embedding call to `record`: its tokens and its cost, or an unpriced call (`result` is `None` for a
    custom function, which reports no usage, and for a call that failed)."""
    if record is None:
        return
    record.embedding_calls += 1
    if result is None:
        record.unpriced_embedding_calls += 1
        return
    record.embedding_tokens += result.usage.total_tokens
    try:
        cost = result.cost().total_price  # pydantic-ai's own pricing of embeddings (genai-prices)
    except (LookupError, ValueError):  # a model or provider genai-prices does not know; no model name
        record.unpriced_embedding_calls += 1
    else:
        record.embedding_cost += cost


def _failed(label: str, problem: str) -> None:
    """Log a failed embedding: a WARNING for the first of an outage, DEBUG for the rest."""
    with _failing_lock:
        first = label not in _failing
        _failing[label] = None
        _failing.move_to_end(label)
        while len(_failing) > MAX_FAILING_EMBEDDERS:
            _failing.popitem(last=False)
    log = logger.warning if first else logger.debug
    log(
        "embedder %s failed (%s); semantic lookups are misses until it recovers",
        label,
        shorten(scrub_text(redact_url_in_text(problem)), 200),
    )
