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
from collections.abc import Callable
from typing import Final

__all__ = ["KIND_NAMES", "mask", "phrase"]

_MONTHS: Final = (
    "Jan(?:uary)?", "Feb(?:ruary)?", "Mar(?:ch)?", "Apr(?:il)?", "May", "June?", "July?", "Aug(?:ust)?",
    "Sep(?:t(?:ember)?)?", "Oct(?:ober)?", "Nov(?:ember)?", "Dec(?:ember)?",
)  # fmt: skip
_MONTH: Final = "(?:" + "|".join(_MONTHS) + ")"
_WEEKDAYS: Final = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_CLOCK_TAIL: Final = r":\d{2}(?::\d{2}(?:[.,]\d{1,9})?)?"
_ZONE: Final = r"(?:\s?(?:Z|UTC|GMT|[+-]\d{2}:?\d{2}))?"
_END: Final = r"(?![\w:])"


def _word_led(words: tuple[str, ...], tail: str) -> re.Pattern[str]:
    """`words` (each followed by `tail`) at a word start. Every branch starts with a literal letter, so the regex
    engine skips straight to the letters that can start one (a leading `\b` would make it try every position)."""
    return re.compile("|".join(f"{w[0]}(?<!\\w{w[0]}){w[1:]}{tail}" for w in words))


# Digit-led tokens: the pattern starts with `\d` (then checks the word boundary behind it), for the same reason.
_DIGIT_LED: Final = re.compile(
    r"\d(?<!\w\d)(?:"
    + "|".join(
        (
            rf"(?P<timestamp>\d{{3}}-\d{{2}}-\d{{2}}[T ]\d{{1,2}}{_CLOCK_TAIL}{_ZONE}{_END})",
            r"(?P<uuid>[0-9A-Fa-f]{7}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b)",
            r"(?P<date>\d{3}-\d{2}-\d{2}\b|\d?[/.]\d{1,2}[/.]\d{2,4}\b"
            rf"|\d?(?:st|nd|rd|th)? {_MONTH}\.?,? \d{{4}}\b)",
            rf"(?P<time>\d?{_CLOCK_TAIL}(?:\s?[AaPp]\.?[Mm]\.?)?{_ZONE}{_END})",
            r"(?P<unix_time>(?<=1)\d{9}(?:\.\d{1,9})?\b|(?<=1)\d{12}\b)",
        )
    )
    + ")"
)
_LETTER_LED_UUID: Final = re.compile(
    r"[A-Fa-f](?<!\w[A-Fa-f])[0-9A-Fa-f]{7}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\b"
)
_MONTH_LED_DATE: Final = _word_led(_MONTHS, r"\.? \d{1,2}(?:st|nd|rd|th)?,? \d{4}\b")
_WEEKDAY: Final = _word_led(_WEEKDAYS, r"\b")

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

    def by_group(match: re.Match[str]) -> str:
        kind = match.lastgroup or "token"
        kinds.add(kind)
        return f"<{kind}>"

    def named(kind: str) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            kinds.add(kind)
            return f"<{kind}>"

        return replace

    masked = _DIGIT_LED.sub(by_group, text)
    if "-" in masked:
        masked = _LETTER_LED_UUID.sub(named("uuid"), masked)
    masked = _MONTH_LED_DATE.sub(named("date"), masked)
    masked = _WEEKDAY.sub(named("weekday"), masked)
    return masked, tuple(sorted(kinds))


def phrase(kinds: tuple[str, ...] | list[str]) -> str:
    """`("date", "time")` -> `"a date and a time"`."""
    words = [KIND_NAMES.get(k, "a volatile token") for k in kinds] or ["a volatile token"]
    if len(words) == 1:
        return words[0]
    return ", ".join(words[:-1]) + " and " + words[-1]
