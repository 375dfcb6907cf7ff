"""Argument checks shared by the public entry points. Each error names the argument and the fix."""

from __future__ import annotations

import math
import os
from typing import Any, Final

from pyai_caching.exceptions import ConfigurationError

__all__ = [
    "DEFAULT_TTL",
    "SECRET_ENV",
    "check_cache_version",
    "check_on_cache_error",
    "check_secret",
    "check_timeout",
    "check_ttl",
]

DEFAULT_TTL: Final[float] = 7 * 24 * 3600.0
"""Entries live a week by default: long enough to pay off, short enough that a model updated behind an unchanged
name is picked up. Pass `ttl=None` to keep entries forever."""

SECRET_ENV: Final = "LLM_CACHE_SECRET"
"""Environment variable with the HMAC signing secret, used when no `secret=` is given."""


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_ttl(ttl: Any) -> None:
    """`ttl` must be a positive number of seconds or `None`."""
    if ttl is None:
        return
    if not _is_number(ttl) or math.isnan(ttl) or math.isinf(ttl):
        raise ConfigurationError(f"ttl must be a positive number of seconds or None (never expires), got {ttl!r}")
    if ttl <= 0:
        raise ConfigurationError(f"ttl must be positive (seconds), got {ttl!r}; use None for entries that never expire")


def check_timeout(value: Any, name: str) -> None:
    """A timeout must be a positive number of seconds or `None`."""
    if value is None:
        return
    if not _is_number(value) or math.isnan(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a positive number of seconds or None, got {value!r}")


def check_on_cache_error(value: Any) -> None:
    """`on_cache_error` must be `warn` or `raise`."""
    if value not in ("warn", "raise"):
        raise ConfigurationError(f"on_cache_error must be 'warn' (fail open) or 'raise', got {value!r}")


def check_secret(secret: str | bytes | None) -> bytes | None:
    """The signing secret as bytes: the argument, else `LLM_CACHE_SECRET`, else `None` (entries unsigned)."""
    if secret is None:
        env = os.environ.get(SECRET_ENV)
        return env.encode() if env else None
    if isinstance(secret, str):
        secret = secret.encode()
    if not isinstance(secret, bytes):
        raise ConfigurationError(f"secret must be str or bytes, got {type(secret).__name__}")
    if len(secret) < 16:
        raise ConfigurationError(
            "secret must be at least 16 bytes long (use a random value, e.g. secrets.token_hex(32))"
        )
    return secret


def check_cache_version(version: Any) -> str:
    """`cache_version` must be a non-empty string or `None`; returns what it adds to every key."""
    if version is None:
        return ""
    if not isinstance(version, str) or not version.strip():
        raise ConfigurationError(
            f"cache_version must be a non-empty string or None, got {version!r}: for example "
            "cache_version='tools-2026-12-01', changed whenever the code of your tools changes"
        )
    return f"version:{version}"
