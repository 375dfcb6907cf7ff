"""Escape data for a terminal: no value read from a store can move the cursor, retitle the window or hide text.

Prompts, task names, model names and keys come from stored data, which anyone with write access to the store can
plant. Printed raw, `ESC ] 0 ; title BEL` retitles the window, `ESC [ 2 J` clears the screen, `ESC ] 8 ;;` makes a
link and `\\x9b` (C1 CSI) starts a control sequence on terminals that honour 8-bit controls. Pure functions, no I/O.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["escape_json_text", "escape_text"]

_CONTROLS: Final = r"\x00-\x08\x0b-\x1f\x7f-\x9f"
"""C0 (but tab and newline), DEL and C1."""
_INVISIBLE: Final = r"\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
"""Bidirectional overrides and marks (they reorder what is shown), line and paragraph separators, and lone
surrogates (a JSON string may hold one; it cannot be written as UTF-8)."""

_MULTILINE: Final = re.compile(f"[{_CONTROLS}{_INVISIBLE}]")
_ONE_LINE: Final = re.compile(f"[\\t\\n{_CONTROLS}{_INVISIBLE}]")
_IN_JSON: Final = re.compile(f"[\\x7f-\\x9f{_INVISIBLE}]")
_NAMED: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escaped(match: re.Match[str]) -> str:
    char = match[0]
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_text(text: str, *, multiline: bool = False) -> str:
    """`text` with every control character written as an escape (`\\x1b`, `\\x9b`, `\\r`, `\\u202e`).

    `multiline=True` keeps newlines and tabs (message bodies); otherwise they are escaped too (names, keys, cells).
    """
    pattern = _MULTILINE if multiline else _ONE_LINE
    return pattern.sub(_escaped, text)


def escape_json_text(text: str) -> str:
    """The output of `json.dumps(..., ensure_ascii=False)` with the characters it leaves raw escaped as `\\uXXXX`.

    `json.dumps` already escapes C0 controls; DEL, C1 controls, bidirectional overrides and lone surrogates can
    only occur inside JSON strings, where `\\uXXXX` is the same character, so the JSON still means the same.
    """
    return _IN_JSON.sub(lambda m: f"\\u{ord(m[0]):04x}", text)
