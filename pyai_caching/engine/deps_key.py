"""Key material for `deps` in whole-run mode: lossless, or an error.

With `cache_whole_run=True` a hit skips the tools, and the tools read `deps`: two calls whose deps differ must never
share an entry. So deps are turned into key material that keeps every distinction Python makes between the values
(`1` and `"1"`, `{1: "a"}` and `{"1": "a"}`, a list and a tuple, a set, fields excluded from serialization, the
value behind a `SecretStr`), with each value tagged by its type. Secret values enter only as a SHA-256 digest, and
the material itself is only ever hashed, never stored.

A value of a type this module cannot turn into material without loss raises `ConfigurationError` naming `deps`:
pass `deps_key=` (a function of the deps returning a string, bytes or plain data) to say what identifies them.
Everything here is pure.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import enum
import hashlib
import math
import pathlib
import uuid
from collections.abc import Callable
from typing import Any

from pyai_caching._util.canonical_json import dumps_canonical
from pyai_caching.exceptions import ConfigurationError

__all__ = ["deps_material"]

_MAX_DEPTH = 64


class _Lossy(Exception):
    def __init__(self, where: str, value: Any) -> None:
        super().__init__(f"{where}: {type(value).__module__}.{type(value).__qualname__}")


def deps_material(deps: Any, deps_key: Callable[[Any], Any] | None = None) -> str:
    """The canonical key material of `deps` (or of `deps_key(deps)`); raise `ConfigurationError` if lossy."""
    if deps_key is not None:
        if not callable(deps_key):
            raise ConfigurationError(f"deps_key must be a function of the deps, got {type(deps_key).__name__}")
        try:
            return "deps_key:" + dumps_canonical(_material(deps_key(deps), "deps_key(deps)", 0))
        except _Lossy as e:
            raise ConfigurationError(
                f"deps_key returned a value that cannot be used as key material without loss ({e}): return a "
                "string, bytes or plain data (dicts, lists, numbers, strings)"
            ) from None
    try:
        return "deps:" + dumps_canonical(_material(deps, "deps", 0))
    except _Lossy as e:
        raise ConfigurationError(
            f"deps cannot be part of the key without loss ({e}), and cache_whole_run=True needs them in the key "
            f"(a hit skips the tools, which may read them): pass deps_key=lambda deps: ... returning what identifies "
            f"them (a string or plain data), or turn cache_whole_run off"
        ) from None


def _qualname(value: Any) -> str:
    cls = value if isinstance(value, type) else type(value)
    return f"{cls.__module__}.{cls.__qualname__}"


def _material(value: Any, where: str, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        raise _Lossy(f"{where} (nested more than {_MAX_DEPTH} levels)", value)
    if value is None or isinstance(value, bool):
        return value
    t = type(value)
    if t is str:
        return ["s", value]
    if t is int:
        return ["i", str(value)]
    if t is float:
        return ["f", value.hex() if math.isfinite(value) else repr(value)]
    if t is bytes:
        return ["b", value.hex()]
    if t in (list, tuple):
        return [t.__name__, [_material(v, f"{where}[{i}]", depth + 1) for i, v in enumerate(value)]]
    if t in (set, frozenset):
        items = [dumps_canonical(_material(v, f"{where}{{}}", depth + 1)) for v in value]
        return [t.__name__, sorted(items)]
    if t is dict:
        pairs = [
            [_material(k, f"{where} key", depth + 1), _material(v, f"{where}[{k!r}]", depth + 1)]
            for k, v in value.items()
        ]
        return ["dict", sorted(pairs, key=dumps_canonical)]
    return _structured(value, where, depth)


def _structured(value: Any, where: str, depth: int) -> Any:
    secret = getattr(value, "get_secret_value", None)
    if callable(secret):  # SecretStr, SecretBytes: the value, as a digest
        raw = secret()
        data = raw if isinstance(raw, bytes) else str(raw).encode("utf-8", "surrogatepass")
        return ["secret", _qualname(value), hashlib.sha256(data).hexdigest()]
    if isinstance(value, enum.Enum):
        return ["enum", _qualname(value), _material(value.value, f"{where}.value", depth + 1)]
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):
        return ["time", _qualname(value), value.isoformat()]
    if isinstance(value, datetime.timedelta | decimal.Decimal | uuid.UUID | pathlib.PurePath):
        return ["scalar", _qualname(value), str(value)]
    fields = _fields(value)
    if fields is not None:
        return [
            "object",
            _qualname(value),
            [[name, _material(v, f"{where}.{name}", depth + 1)] for name, v in fields],
        ]
    raise _Lossy(where, value)


def _fields(value: Any) -> list[tuple[str, Any]] | None:
    """Every field of a dataclass or pydantic model, excluded and private ones included."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return [(f.name, getattr(value, f.name)) for f in dataclasses.fields(value)]
    model_fields = getattr(type(value), "model_fields", None)
    if isinstance(model_fields, dict) and hasattr(value, "__pydantic_fields_set__"):
        out = [(name, getattr(value, name)) for name in model_fields]
        extra = getattr(value, "__pydantic_extra__", None) or {}
        out += [(f"extra:{k}", v) for k, v in sorted(extra.items())]
        private = getattr(value, "__pydantic_private__", None) or {}
        out += [(f"private:{k}", v) for k, v in sorted(private.items())]
        return out
    return None
