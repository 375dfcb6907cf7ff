"""Canonical JSON: the one text a value has, whatever the order of its dict keys."""

from __future__ import annotations

import json
from typing import Any, Final

__all__ = ["dumps_canonical"]

_ENCODER: Final = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
"""One encoder for every canonical dump (`json.dumps` with these options would build a new one per call)."""


def dumps_canonical(obj: Any) -> str:
    """Serialize `obj` to the one canonical JSON text: sorted keys, no spaces, UTF-8, no NaN."""
    return _ENCODER.encode(obj)
