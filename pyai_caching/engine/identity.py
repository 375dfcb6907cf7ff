"""A model's identity by value: class chain, system, name, base URL, profile and plain configuration."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import threading
from typing import Any, Final

from pydantic_ai.models import Model

from pyai_caching._util.canonical_json import dumps_canonical
from pyai_caching._util.plain import NOT_PLAIN, plain_copy

__all__ = [
    "UNKEYABLE_MODEL",
    "model_identity",
]


def model_identity(model: Model) -> dict[str, Any]:
    """Who answers, by value: the model's class, provider system, model name, base URL and profile.

    `model` is the model that serves the request (an `agent.override(model=...)`, a `ModelFallback` candidate
    or a `SelectModel` choice already applied). Two model objects that agree on all of these send the same request
    to the same endpoint; anything that differs (another deployment behind another base URL, a custom profile
    that changes how tools or output are sent) gives another key. Wrappers of this library are skipped.
    """
    return {
        "class": _model_classes(model),
        "config": _model_config(model),
        "system": str(model.system),
        "name": str(model.model_name),
        "base_url": _text_or_none(getattr(model, "base_url", None)),
        "profile": _profile_fingerprint(model),
    }


_OWN_WRAPPERS: Final = frozenset({"RetryingModel", "CachingModel"})


def _model_classes(model: Model) -> list[str]:
    classes: list[str] = []
    current: Any = model
    for _ in range(16):  # a chain of wrappers (instrumentation, the user's own) around the model that answers
        cls = type(current)
        if cls.__name__ not in _OWN_WRAPPERS:
            classes.append(f"{cls.__module__}.{cls.__qualname__}")
        current = getattr(current, "wrapped", None)
        if current is None:
            break
    return classes


_NOT_CONFIG: Final = frozenset({"wrapped", "settings", "_settings", "profile", "_profile"})
"""Model attributes that are counted elsewhere in the key (settings, profile) or are the next model of a chain."""

UNKEYABLE_MODEL: Final = "<unkeyable>"
"""The `config` of a model whose state cannot be turned into key material: such a request is never cached."""


def _model_config(model: Model) -> list[dict[str, Any]] | str:
    """What configures each model of the chain, by value: plain attributes (functions of a user's class by
    qualified name).

    `TestModel(custom_output_text=...)` and the state of a user's own `WrapperModel` (a tenant it adds to every
    request) change what is answered. A `FunctionModel` is identified by its model name (by default derived from
    its function's name), as a provider's model is, so that a test model is the same in every process.
    pydantic-ai's own models also hold objects (providers, clients), which their base URL identifies; a model
    class of anyone else holding state that is not plain data makes the request uncacheable (`UNKEYABLE_MODEL`),
    since nothing can show that a stored answer fits it.
    """
    chain: list[dict[str, Any]] = []
    current: Any = model
    for _ in range(16):
        cls = type(current)
        if cls.__name__ not in _OWN_WRAPPERS:
            own = cls.__module__.split(".")[0] == "pydantic_ai"
            config: dict[str, Any] = {}
            for name, value in sorted(vars(current).items()):
                if name in _NOT_CONFIG or name.startswith(("last_", "_entered", "__")):
                    continue
                if own and callable(value):
                    continue  # a `FunctionModel`'s function: its model name identifies it, across processes too
                plain = _config_value(value)
                if plain is NOT_PLAIN:
                    if not own:
                        return UNKEYABLE_MODEL
                    continue
                config[name] = plain
            chain.append(config)
        current = getattr(current, "wrapped", None)
        if current is None:
            break
    return chain


def _config_value(value: Any) -> Any:
    plain = plain_copy(value)
    if plain is not NOT_PLAIN:
        return plain
    if isinstance(value, tuple):
        items = [_config_value(v) for v in value]
        return NOT_PLAIN if any(v is NOT_PLAIN for v in items) else items
    if isinstance(value, type) or callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__qualname__)}"
    return NOT_PLAIN


def _text_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


_profiles_lock = threading.Lock()
_profiles: dict[int, tuple[Any, Any, str]] = {}
"""Fingerprints of model profiles: `id -> (profile, copy when fingerprinted, fingerprint)`. The profile is held,
so its `id` cannot be reused while it is here, and the copy is compared by value on every use, so a profile
changed in place is fingerprinted again."""


def _profile_fingerprint(model: Model) -> str | None:
    try:
        profile: Any = model.profile
    except Exception:  # a model whose profile cannot be built: the rest of its identity still counts
        return None
    if profile is None:
        return None
    found = _profiles.get(id(profile))
    if found is not None and found[0] is profile and found[1] == profile:
        return found[2]
    fingerprint = hashlib.sha256(dumps_canonical(_stable(profile)).encode()).hexdigest()[:32]
    copied = dict(profile) if isinstance(profile, dict) else dataclasses.replace(profile) if _is_dc(profile) else None
    with _profiles_lock:
        if len(_profiles) > 256:
            _profiles.clear()
        _profiles[id(profile)] = (profile, copied if copied is not None else object(), fingerprint)
    return fingerprint


def _is_dc(value: Any) -> bool:
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def _stable(value: Any, depth: int = 0) -> Any:
    """A form of `value` that is the same in every process (sets sorted, classes and functions by name)."""
    if depth > 20:
        return "<deep>"
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, dict):
        return {str(k): _stable(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_stable(v, depth + 1) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((_stable(v, depth + 1) for v in value), key=dumps_canonical)
    if isinstance(value, type) or callable(value):
        return f"{getattr(value, '__module__', '?')}.{getattr(value, '__qualname__', type(value).__qualname__)}"
    if _is_dc(value):
        return {f.name: _stable(getattr(value, f.name), depth + 1) for f in dataclasses.fields(value)}
    return f"<{type(value).__module__}.{type(value).__qualname__}>"
