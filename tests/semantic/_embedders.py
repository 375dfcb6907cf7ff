"""Deterministic embedders for the semantic cache tests.

`BagOfWordsModel` is a real pydantic-ai `EmbeddingModel`: a bag of words over a small vocabulary in which
synonyms share one dimension ("reset" = "change" = "recover", "password" = "passcode"), stop words are dropped,
and any other word lands on one of 64 hashed dimensions. So known paraphrases embed to the same direction, and
the cosine of two prompts is easy to compute by hand:

* "How do I reset my password?" vs "How can I change my passcode" -> {reset, password} vs {reset, password}: 1.0
* "How do I reset my password?" vs "reset my password and my email" -> 2 / sqrt(2 * 3) = 0.816...
* "How do I reset my password?" vs "What is the refund policy?" -> 0.0
"""

from __future__ import annotations

import re
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from pydantic_ai.embeddings import EmbeddingModel, EmbeddingResult
from pydantic_ai.embeddings.result import EmbedInputType
from pydantic_ai.embeddings.settings import EmbeddingSettings

SYNONYMS = {
    "reset": "reset",
    "change": "reset",
    "recover": "reset",
    "password": "password",
    "passcode": "password",
    "email": "email",
    "mail": "email",
    "refund": "refund",
    "money": "refund",
    "policy": "policy",
    "rules": "policy",
}
STOP_WORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "can",
        "could",
        "do",
        "does",
        "how",
        "i",
        "is",
        "me",
        "my",
        "of",
        "please",
        "the",
        "to",
        "what",
        "you",
    ]
)
CANONICAL = sorted(set(SYNONYMS.values()))
HASHED = 64
DIMENSIONS = len(CANONICAL) + HASHED


def bag_of_words(text: str) -> list[float]:
    """The vector of one text (not normalized; the cache normalizes)."""
    vector = [0.0] * DIMENSIONS
    for word in re.findall(r"[a-z]+", text.lower()):
        if word in STOP_WORDS:
            continue
        canonical = SYNONYMS.get(word)
        if canonical is not None:
            vector[CANONICAL.index(canonical)] += 1.0
        else:
            vector[len(CANONICAL) + zlib.crc32(word.encode()) % HASHED] += 1.0
    if not any(vector):
        vector[-1] = 1.0
    return vector


@dataclass(init=False)
class BagOfWordsModel(EmbeddingModel):
    """A pydantic-ai embedding model over `bag_of_words`; counts its calls."""

    calls: int = 0

    def __init__(self, name: str = "bag-of-words") -> None:
        super().__init__()
        self._name = name
        self.calls = 0

    @property
    def model_name(self) -> str:
        return self._name

    @property
    def system(self) -> str:
        return "test"

    async def embed(
        self, inputs: str | Sequence[str], *, input_type: EmbedInputType, settings: EmbeddingSettings | None = None
    ) -> EmbeddingResult:
        texts, _ = self.prepare_embed(inputs, settings)
        self.calls += 1
        return EmbeddingResult(
            embeddings=[bag_of_words(t) for t in texts],
            inputs=texts,
            input_type=input_type,
            model_name=self.model_name,
            provider_name=self.system,
            provider_response_id=str(uuid.uuid4()),
        )


async def bag_of_words_function(texts: list[str]) -> list[list[float]]:
    """The same embedder as a plain async function (the custom-embedder form)."""
    return [bag_of_words(t) for t in texts]
