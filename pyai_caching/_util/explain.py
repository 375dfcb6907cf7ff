"""Explain a replay miss: find the nearest recorded request and say what differs. Pure: no I/O.

Requests are compared in their canonical JSON form (`pyai_caching.engine.canonical.CanonicalRequest.to_json_obj`): a
`header` (model, settings, parameters with tools and instructions) and the `messages`. The same walk compares
miss fingerprints (`pyai_caching.explain`), which keep that shape with digests in place of the texts.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Sequence
from typing import Any, Final

from pyai_caching._util.volatile import mask, phrase

__all__ = ["MISSING", "describe_differences", "differences", "nearest", "pretty", "similarity", "unified_diff", "where"]

MISSING: Final = object()
"""Stands for a field or item one of two compared requests does not have."""
_MISSING: Final = MISSING
_MAX_DIFFERENCES: Final = 12
_MAX_DIFF_LINES: Final = 80
_SNIPPET: Final = 60

Path = tuple[str | int, ...]


def pretty(obj: Any) -> str:
    """The readable JSON form used in cassettes and diffs: 2-space indent, sorted keys, UTF-8 kept."""
    return json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False)


def similarity(a_lines: Sequence[str], b_lines: Sequence[str]) -> float:
    """How alike two line lists are, from 0 (nothing shared) to 1 (equal)."""
    return difflib.SequenceMatcher(None, a_lines, b_lines, autojunk=False).ratio()


def nearest(request: dict[str, Any], candidates: Sequence[dict[str, Any]]) -> tuple[int, float] | None:
    """Index and similarity of the candidate request most like `request`, or `None` when there is none."""
    if not candidates:
        return None
    lines = pretty(request).splitlines()
    best: tuple[int, float] | None = None
    for i, candidate in enumerate(candidates):
        score = similarity(pretty(candidate).splitlines(), lines)
        if best is None or score > best[1]:
            best = (i, score)
    return best


def unified_diff(recorded: dict[str, Any], current: dict[str, Any], *, max_lines: int = _MAX_DIFF_LINES) -> str:
    """A unified diff of two requests' readable JSON (`-` recorded, `+` this request), at most `max_lines` long."""
    lines = list(
        difflib.unified_diff(
            pretty(recorded).splitlines(),
            pretty(current).splitlines(),
            fromfile="recorded",
            tofile="this request",
            n=2,
            lineterm="",
        )
    )
    if len(lines) > max_lines:
        lines = [*lines[:max_lines], f"... ({len(lines) - max_lines} more diff lines)"]
    return "\n".join(lines)


def describe_differences(
    recorded: dict[str, Any], current: dict[str, Any], *, limit: int = _MAX_DIFFERENCES
) -> list[str]:
    """One readable line per difference (`setting 'temperature': 0.0 -> 0.7`), at most `limit` lines."""
    found = differences(recorded, current)
    lines = [_describe(path, old, new, (current, recorded)) for path, old, new in found[:limit]]
    if len(found) > limit:
        lines.append(f"... and {len(found) - limit} more differences")
    return lines


def differences(recorded: Any, current: Any) -> list[tuple[Path, Any, Any]]:
    """Every leaf where two requests differ, as `(path, recorded value, current value)` in document order.

    A value absent on one side is `MISSING`. Lists of named items (tool definitions) are matched by name, and their
    path element is `"<name>"`; other lists are matched by position.
    """
    found: list[tuple[Path, Any, Any]] = []
    _walk((), recorded, current, found)
    return found


def _named(items: list[Any]) -> dict[str, Any] | None:
    """A list of tool definitions keyed by name (`{}` when empty), or `None` if the items are not all named dicts."""
    if not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        return None
    named = {i["name"]: i for i in items}
    return named if len(named) == len(items) else None


def _walk(path: Path, a: Any, b: Any, out: list[tuple[Path, Any, Any]]) -> None:
    if a == b:
        return
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(a.keys() | b.keys()):
            _walk((*path, k), a.get(k, _MISSING), b.get(k, _MISSING), out)
        return
    if isinstance(a, list) and isinstance(b, list):
        named_a, named_b = _named(a), _named(b)
        if named_a is not None and named_b is not None and (named_a or named_b):
            for name in sorted(named_a.keys() | named_b.keys()):
                _walk((*path, f"<{name}>"), named_a.get(name, _MISSING), named_b.get(name, _MISSING), out)
            return
        for i in range(max(len(a), len(b))):
            _walk((*path, i), a[i] if i < len(a) else _MISSING, b[i] if i < len(b) else _MISSING, out)
        return
    out.append((path, a, b))


def _snippet(value: Any, other: Any) -> str:
    """A short rendering of `value`, centred on where it starts to differ from `other` when both are strings."""
    if value is _MISSING:
        return "(absent)"
    if isinstance(value, str):
        if len(value) <= _SNIPPET:
            return repr(value)
        lo = 0
        if isinstance(other, str):
            while lo < min(len(value), len(other)) and value[lo] == other[lo]:
                lo += 1
            lo = max(0, lo - 20)
        text = value[lo : lo + _SNIPPET]
        return repr(f"{'...' if lo > 0 else ''}{text}{'...' if lo + _SNIPPET < len(value) else ''}")
    text = json.dumps(value, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= _SNIPPET else text[: _SNIPPET - 3] + "..."


def _subpath(path: Path) -> str:
    out = ""
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += f".{p}" if out else str(p)
    return out


def _describe(path: Path, old: Any, new: Any, docs: tuple[dict[str, Any], ...]) -> str:
    where = _where(path, docs)
    whole_item = bool(path) and isinstance(path[-1], str) and path[-1].startswith("<")
    if whole_item and old is _MISSING:
        return f"{where}: added in this request"
    if whole_item and new is _MISSING:
        return f"{where}: recorded, but absent from this request"
    if old is _MISSING:
        return f"{where}: added in this request ({_snippet(new, None)})"
    if new is _MISSING:
        return f"{where}: recorded but absent now ({_snippet(old, None)})"
    line = f"{where}: {_snippet(old, new)} -> {_snippet(new, old)}"
    if isinstance(old, str) and isinstance(new, str):
        (masked_old, kinds_old), (masked_new, kinds_new) = mask(old), mask(new)
        if kinds_new and masked_old == masked_new:
            line += f" (only {phrase(sorted(set(kinds_old) | set(kinds_new)))} differs)"
    return line


def _part_kind(docs: tuple[dict[str, Any], ...], message: int, part: int) -> str | None:
    for doc in docs:
        try:
            kind = doc["messages"][message]["parts"][part]["part_kind"]
        except (KeyError, IndexError, TypeError):
            continue
        if isinstance(kind, str):
            return kind
    return None


def where(path: Path, docs: tuple[dict[str, Any], ...]) -> str:
    """Where `path` points in a request, in words: `tool 'search' description`, `message 2, part 1 (user-prompt)`.

    `docs` are the compared requests (the first one that has the part names its kind).
    """
    return _where(path, docs)


def _where(path: Path, docs: tuple[dict[str, Any], ...]) -> str:
    if path[:2] == ("header", "model"):
        return "model" + (f" {_subpath(path[2:])}" if path[2:] else "")
    if path[:2] == ("header", "settings") and len(path) >= 3:
        rest = _subpath(path[3:])
        return f"setting {path[2]!r}" + (f" ({rest})" if rest else "")
    if path[:2] == ("header", "parameters") and len(path) >= 3:
        group = path[2]
        label = {"function_tools": "tool", "output_tools": "output tool"}.get(str(group))
        if label is not None and len(path) >= 4 and isinstance(path[3], str) and path[3].startswith("<"):
            rest = _subpath(path[4:])
            return f"{label} {path[3][1:-1]!r}" + (f" {rest}" if rest else "")
        if group == "instructions" and len(path) == 4 and isinstance(path[3], int):
            return f"instructions {path[3] + 1}"
        named = {"output_object": "output schema", "prompted_output_template": "output prompt template"}.get(str(group))
        if named is not None:
            return named + (f" {_subpath(path[3:])}" if path[3:] else "")
        return f"request parameter {_subpath(path[2:])}"
    if path[:1] == ("messages",) and len(path) >= 2 and isinstance(path[1], int):
        where = f"message {path[1] + 1}"
        if len(path) >= 4 and path[2] == "parts" and isinstance(path[3], int):
            kind = _part_kind(docs, path[1], path[3])
            where += f", part {path[3] + 1}" + (f" ({kind})" if kind else "")
            rest = _subpath(path[4:])
        else:
            rest = _subpath(path[2:])
        return where + (f" {rest}" if rest else "")
    return _subpath(path) or "request"
