"""Small public types: the plain message record for converters, and the cache modes."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

from pyai_caching.exceptions import ConfigurationError

__all__ = ["CacheMode", "ModelMessage", "Role"]

Role = Literal["user", "assistant", "system"]
"""The roles a plain transcript message may have."""


@dataclass(frozen=True, slots=True)
class ModelMessage:
    """A plain `(role, content)` record, the simplest form a transcript message can take.

    Not to be confused with pydantic-ai's `ModelMessage` (a `ModelRequest` or `ModelResponse`), which
    `transcript_history` accepts as well.
    """

    role: Role
    """`user`, `assistant` or `system`."""
    content: str
    """The message text."""


class CacheMode(StrEnum):
    """How one call uses the cache."""

    READ_WRITE = "read_write"
    """Serve hits, call the model on a miss and store the response (the default)."""
    READ_ONLY = "read_only"
    """Serve hits; a miss raises `CacheMissError` and the model is never called."""
    REFRESH = "refresh"
    """Always call the model and overwrite what is stored."""
    BYPASS = "bypass"
    """Neither read nor write: behave as if there were no cache."""

    @classmethod
    def parse(cls, value: CacheMode | str, *, argument: str = "cache_mode") -> CacheMode:
        """Accept a `CacheMode` or its string value; anything else is a `ConfigurationError` listing the values."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value.strip().lower().replace("-", "_"))
            except ValueError:
                pass
        valid = ", ".join(repr(m.value) for m in cls)
        raise ConfigurationError(f"{argument} must be one of {valid}, got {value!r}")

    @property
    def reads(self) -> bool:
        """Whether hits are served."""
        return self in (CacheMode.READ_WRITE, CacheMode.READ_ONLY)

    @property
    def writes(self) -> bool:
        """Whether responses are stored."""
        return self in (CacheMode.READ_WRITE, CacheMode.REFRESH)
