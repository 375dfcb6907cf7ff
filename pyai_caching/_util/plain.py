"""Plain JSON data: the values a key may hold as they are (str, int, finite float, bool, None, lists and str-keyed
dicts of those)."""

from __future__ import annotations

import math
from typing import Any, Final

__all__ = ["NOT_PLAIN", "plain_copy"]

NOT_PLAIN: Final = object()
"""Returned by `plain_copy` for a value that is not plain JSON data."""


def plain_copy(value: Any) -> Any:
    """A copy of plain JSON data (which pydantic's JSON-mode dump returns unchanged), else `NOT_PLAIN`."""
    t = type(value)
    if t is str or t is int or t is bool or value is None:
        return value
    if t is float:
        return value if math.isfinite(value) else NOT_PLAIN
    if t is list:
        items = [plain_copy(v) for v in value]
        return NOT_PLAIN if any(v is NOT_PLAIN for v in items) else items
    if t is dict:
        out: dict[str, Any] = {}
        for k, v in value.items():
            if type(k) is not str:
                return NOT_PLAIN
            c = out[k] = plain_copy(v)
            if c is NOT_PLAIN:
                return NOT_PLAIN
        return out
    return NOT_PLAIN
