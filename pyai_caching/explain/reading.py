"""The miss log and the stored entries, as `pyai-caching explain` reads them (no prompt is ever read back)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from pyai_caching.engine.entries import EntryDecodeError, decode_response_entry
from pyai_caching.engine.keys import KEY_PREFIX, KeyKind, kind_prefix, validate_namespace
from pyai_caching.explain.fingerprint import fingerprint
from pyai_caching.explain.log import MISS_KIND, PAGES, RECORD_VERSION, miss_key
from pyai_caching.stores import Store

__all__ = ["Candidate", "Miss", "candidates", "leaves", "read_misses"]

REPORT_SCHEMA: Final = "pyai_caching.explain/1"
"""The `schema` field of `MissReport.to_json()`; changed only when a field changes meaning or goes away."""

Verdict = Literal["volatile_token", "changed", "same_ingredients", "no_other_entry"]
"""Why a miss missed, in one word:

* `volatile_token`: the nearest entry differs only in volatile tokens (a date, a time, a UUID) of some texts;
* `changed`: it differs in at least one ingredient in another way (listed in `differences`);
* `same_ingredients`: the nearest entry has the same ingredients (the key differs by `cache_version`, or the
  entry was written by another version of the key schema);
* `no_other_entry`: no other entry stored in the namespace before the miss is left to compare with."""

_MISS_KEY_RE: Final = re.compile(
    "^" + re.escape(KEY_PREFIX) + r"(?P<namespace>[^:]+):" + MISS_KIND + r":\{(?P<page>[0-9a-f]{2})\}$"
)
_ENTRY_KEY_RE: Final = re.compile(
    "^" + re.escape(KEY_PREFIX) + r"(?P<namespace>[^:]+):" + KeyKind.REQUEST + r":\{[0-9a-f]{64}\}$"
)
_BATCH: Final = 64
_SHORTLIST: Final = 8
_MAX_DIFFERENCES: Final = 12
_MAX_TEXT: Final = 200
_MAX_TIME: Final = 253402300799.0
_MAX_DEPTH: Final = 32


# --- what was recorded ------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Miss:
    """One miss as the miss log recorded it."""

    at: float
    """Unix time of the miss."""
    namespace: str
    """The namespace of the cache that missed."""
    key: str
    """The store key the request was looked up under."""
    task: str | None
    """The task name of the cache, if any."""
    model: str | None
    """`<system>:<model name>` of the model the request was for."""
    versioned: bool
    """Whether the cache had a `cache_version`."""
    fingerprint: dict[str, Any] = field(repr=False)
    """The request's ingredients as digests (see `pyai_caching.explain.fingerprint`)."""


def _text(value: Any) -> str | None:
    return value[:_MAX_TEXT] if isinstance(value, str) else None


def _miss(namespace: str, item: Any) -> Miss | None:
    """A recorded miss, or `None` for anything that is not one (a planted or foreign value)."""
    if not isinstance(item, dict):
        return None
    at, key, fp = item.get("at"), item.get("key"), item.get("fp")
    if isinstance(at, bool) or not isinstance(at, int | float) or not 0 <= at <= _MAX_TIME:
        return None
    if not isinstance(key, str) or not isinstance(fp, dict) or not isinstance(fp.get("header"), dict):
        return None
    if _deeper_than(fp, _MAX_DEPTH):  # a fingerprint is a few levels deep: this one was planted
        return None
    return Miss(
        at=float(at),
        namespace=namespace,
        key=key[:_MAX_TEXT],
        task=_text(item.get("task")),
        model=_text(item.get("model")),
        versioned=bool(item.get("version")),
        fingerprint=fp,
    )


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether `value` nests lists and dicts deeper than `limit` (iterative: no recursion on planted data)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False


def _page(namespace: str, raw: object) -> list[Miss]:
    if not isinstance(raw, bytes):
        return []
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError):
        return []
    if not isinstance(doc, dict) or doc.get("kind") != "misses" or doc.get("version") != RECORD_VERSION:
        return []
    items = doc.get("misses")
    if not isinstance(items, list):
        return []
    return [m for m in (_miss(namespace, i) for i in items[: PAGES * 4]) if m is not None]


async def _get_many(store: Store, keys: Sequence[str]) -> list[object]:
    out: list[object] = []
    for start in range(0, len(keys), _BATCH):
        chunk = keys[start : start + _BATCH]
        out.extend(await asyncio.gather(*(store.get(k) for k in chunk), return_exceptions=True))
    for value in out:
        if isinstance(value, BaseException) and not _unreadable(value):
            raise value  # the store is down or refuses us: the command fails
    return out


def _unreadable(error: BaseException) -> bool:
    """A value the store cannot return as bytes (another Redis type, a planted SQLite value): skipped, not fatal."""
    return isinstance(error, TypeError | ValueError | OverflowError) or "WRONGTYPE" in str(error)


async def read_misses(store: Store, namespace: str | None = None) -> list[Miss]:
    """Every miss recorded in `namespace` (`None`: in every namespace), newest first."""
    if namespace is not None:
        namespace = validate_namespace(namespace)
        keys = [(namespace, miss_key(namespace, page)) for page in range(PAGES)]
    else:
        keys = []
        async for key in store.scan(KEY_PREFIX):
            match = _MISS_KEY_RE.match(key)
            if match is not None:
                keys.append((match["namespace"], key))
    values = await _get_many(store, [k for _, k in keys])
    misses: dict[tuple[str, str, float], Miss] = {}
    for (ns, _), raw in zip(keys, values, strict=True):
        for miss in _page(ns, raw):
            misses[(miss.namespace, miss.key, miss.at)] = miss  # a page written twice holds the same misses
    return sorted(misses.values(), key=lambda m: m.at, reverse=True)


# --- what is stored ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Candidate:
    key: str
    task: str | None
    model: str
    created_at: float
    fingerprint: dict[str, Any]
    leaves: frozenset[tuple[str, str]]


def leaves(fp: Any, path: str = "", out: set[tuple[str, str]] | None = None) -> set[tuple[str, str]]:
    """The fingerprint as a set of `(path, leaf)` pairs, to shortlist candidates cheaply."""
    out = set() if out is None else out
    if isinstance(fp, dict):
        for k, v in fp.items():
            leaves(v, f"{path}/{k}", out)
    elif isinstance(fp, list):
        for i, v in enumerate(fp):
            name = v.get("name") if isinstance(v, dict) else None
            leaves(v, f"{path}/{name if isinstance(name, str) else i}", out)
    else:
        out.add((path, json.dumps(fp)))
    return out


async def candidates(store: Store, namespaces: set[str], limit: int) -> tuple[dict[str, list[Candidate]], bool]:
    """The request-level entries of `namespaces` (at most `limit` read), fingerprinted; and whether any were left."""
    found: dict[str, list[Candidate]] = {ns: [] for ns in namespaces}
    keys: list[tuple[str, str]] = []
    truncated = False
    for namespace in sorted(namespaces):
        async for key in store.scan(kind_prefix(namespace, KeyKind.REQUEST)):
            match = _ENTRY_KEY_RE.match(key)
            if match is None or match["namespace"] != namespace:
                continue
            if len(keys) >= limit:
                truncated = True
                break
            keys.append((namespace, key))
    for start in range(0, len(keys), _BATCH):
        chunk = keys[start : start + _BATCH]
        for (namespace, key), raw in zip(chunk, await _get_many(store, [k for _, k in chunk]), strict=True):
            if not isinstance(raw, bytes):
                continue
            try:
                entry = decode_response_entry(raw)  # signatures are not checked: the CLI holds no secret
            except (EntryDecodeError, RecursionError):
                continue
            if entry.request is None:
                continue
            fp = fingerprint(entry.request)
            found[namespace].append(
                Candidate(
                    key=key,
                    task=entry.meta.task,
                    model=entry.meta.model,
                    created_at=entry.meta.created_at,
                    fingerprint=fp,
                    leaves=frozenset(leaves(fp)),
                )
            )
    return found, truncated
