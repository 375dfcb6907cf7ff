"""Bounded texts for logs and error messages (pure)."""

from __future__ import annotations

import re

__all__ = ["shorten"]

_ELLIPSIS = "…"


def _cut_middle(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    keep = max(limit - len(_ELLIPSIS), 2)
    head = (keep + 1) // 2
    return f"{text[:head]}{_ELLIPSIS}{text[len(text) - (keep - head) :]}"


def shorten(text: str, limit: int = 300, *, word_limit: int = 80) -> str:
    """`text` in at most `limit` characters, cut in the middle, never at the end.

    A message says what failed at its start and what to do at its end ("... (a merge conflict?) or delete it"); what
    makes it long sits in between: paths, URLs, reprs. So every word (a run without spaces) longer than `word_limit`
    first loses its middle, then, if the text is still too long, the text loses its middle.
    """
    words = re.sub(rf"\S{{{word_limit + 1},}}", lambda m: _cut_middle(m[0], word_limit), text)
    return _cut_middle(words, limit)
