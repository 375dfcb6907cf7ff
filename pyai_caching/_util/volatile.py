"""Volatile tokens in text: dates, times, timestamps, UUIDs. Pure: no I/O.

A prompt that carries the current date, time or a fresh UUID is a different request on every call, so it never
hits. `mask` replaces each such token by a placeholder naming its kind (`<date>`, `<time>`, ...): two texts whose
masked forms are equal differ only in volatile tokens, which is what a miss explanation says plainly.

Only well-delimited shapes count (ISO and common written dates, clock times, ISO timestamps, Unix times in seconds
or milliseconds from 2001 to 2286, UUIDs, full weekday names): a false positive would only soften an explanation,
never change a key. Every quantifier is bounded, so a long text is scanned in linear time.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["KIND_NAMES", "mask", "phrase"]

_MONTH: Final = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?"
    r"|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_CLOCK: Final = r"\d{1,2}:\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?"
_ZONE: Final = r"(?:\s?(?:Z|UTC|GMT|[+-]\d{2}:?\d{2}))?"

_VOLATILE: Final = re.compile(
    "|".join(
        (
            rf"(?P<timestamp>\b\d{{4}}-\d{{2}}-\d{{2}}[T ]{_CLOCK}{_ZONE}(?![\w:]))",
            r"(?P<uuid>\b[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b)",
            r"(?P<date>\b\d{4}-\d{2}-\d{2}\b|\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"
            rf"|\b{_MONTH}\.? \d{{1,2}}(?:st|nd|rd|th)?,? \d{{4}}\b"
            rf"|\b\d{{1,2}}(?:st|nd|rd|th)? {_MONTH}\.?,? \d{{4}}\b)",
            rf"(?P<time>\b{_CLOCK}(?:\s?[AaPp]\.?[Mm]\.?)?{_ZONE}(?![\w:]))",
            r"(?P<unix_time>\b1\d{9}(?:\.\d{1,9})?\b|\b1\d{12}\b)",
            r"(?P<weekday>\b(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)\b)",
        )
    )
)

KIND_NAMES: Final = {
    "timestamp": "a timestamp",
    "uuid": "a UUID",
    "date": "a date",
    "time": "a time",
    "unix_time": "a Unix timestamp",
    "weekday": "a weekday",
}
"""The kinds of volatile token `mask` finds, with the words a person reads."""

_MAX_SCANNED: Final = 200_000
"""Longer texts (an inline image, a document) are not scanned: they are reported as changed, not as volatile."""


def mask(text: str) -> tuple[str, tuple[str, ...]]:
    """`text` with every volatile token replaced by `<kind>`, and the kinds found (sorted, no repeats)."""
    if len(text) > _MAX_SCANNED:
        return text, ()
    kinds: set[str] = set()

    def placeholder(match: re.Match[str]) -> str:
        kind = match.lastgroup or "token"
        kinds.add(kind)
        return f"<{kind}>"

    masked = _VOLATILE.sub(placeholder, text)
    return masked, tuple(sorted(kinds))


def phrase(kinds: tuple[str, ...] | list[str]) -> str:
    """`("date", "time")` -> `"a date and a time"`."""
    words = [KIND_NAMES.get(k, "a volatile token") for k in kinds] or ["a volatile token"]
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]
