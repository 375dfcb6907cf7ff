"""Secret scrubbing for entries written to files people commit (cassettes). Pure: no I/O.

Two rules, applied to a parsed JSON entry, returning a scrubbed copy:

* **names**: in the request's settings (`request.header.settings`, at any depth: `extra_body`, header dicts),
  the value of every key whose name looks like a credential (`pyai_caching._util.redact.is_secret_name`: `api_key`,
  `authorization`, `password`, `secret`, `token`, `access_token`, `cookie`, `session`, ...) is replaced (the
  canonical request already holds only a digest there);
* **shapes**: everywhere in the entry (messages, responses, settings), every string fragment shaped like a
  well-known credential is replaced: provider API keys (`sk-...`, `sk-ant-...`, `AIza...`, `gsk_...`, `hf_...`,
  `xai-...`), AWS access key ids, GitHub and Slack tokens, `Bearer ...`, `Authorization: ...`, JWTs, PEM private
  keys, `password=...`-style assignments and passwords inside URLs.

Replacements read `<scrubbed>`. Scrubbing happens after the entry's key was computed, so it never changes what a
request matches.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, Final

from pyai_caching._util.redact import is_secret_name, redact_url_in_text

__all__ = ["SCRUBBED", "Scrubber", "scrub_entry", "scrub_text"]

SCRUBBED: Final = "<scrubbed>"
"""What a scrubbed value is replaced with."""

Scrubber = Callable[[dict[str, Any]], "dict[str, Any] | None"]
"""A user hook: receives an entry (parsed JSON) and returns the entry to write (or `None` after editing it in place)."""

# Every quantifier is bounded or anchored on a literal, so a long string (base64 image data) scans in linear time.
_SHAPES: Final[tuple[tuple[re.Pattern[str], str], ...]] = (
    (
        re.compile(r"-----BEGIN [A-Z ]{0,40}PRIVATE KEY-----.{0,20000}?-----END [A-Z ]{0,40}PRIVATE KEY-----", re.S),
        SCRUBBED,
    ),
    (re.compile(r"(?i)\b(bearer)\s+[A-Za-z0-9._~+/\-]{8,}=*"), rf"\1 {SCRUBBED}"),
    (
        re.compile(
            r"(?i)\b((?:proxy-)?authorization[\"']?\s{0,5}[:=]\s{0,5}[\"']?)[^\s\"',;]{1,40}(?:\s+[^\s\"',;]+)?"
        ),
        rf"\1{SCRUBBED}",
    ),
    (re.compile(r"\bsk-(?:ant-|proj-|or-|svcacct-)?[A-Za-z0-9_\-]{16,}"), SCRUBBED),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), SCRUBBED),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"), SCRUBBED),
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{30,})"), SCRUBBED),
    (re.compile(r"\bxox[abposr]-[A-Za-z0-9\-]{10,}"), SCRUBBED),
    (re.compile(r"\b(?:gsk_[A-Za-z0-9]{20,}|hf_[A-Za-z0-9]{30,}|xai-[A-Za-z0-9]{20,})"), SCRUBBED),
    (re.compile(r"\beyJ[A-Za-z0-9_\-]{8,}\.eyJ[A-Za-z0-9_\-]{8,}\.[A-Za-z0-9_\-]{8,}"), SCRUBBED),
    (
        re.compile(
            r"(?i)(?<![A-Za-z0-9])((?:[A-Za-z0-9]{1,20}[_\-]){0,3}"
            r"(?:api[_\-]?key|apikey|secret|passw(?:or)?d|(?:access|auth|refresh)[_\-]?token)"
            r"[\"']?\s{0,5}[:=]\s{0,5}[\"']?)[^\s\"'`,;]{6,}"
        ),
        rf"\1{SCRUBBED}",
    ),
)


def scrub_text(text: str) -> str:
    """`text` with every credential-shaped fragment replaced by `<scrubbed>` (URL passwords by `***`)."""
    if len(text) < 8:
        return text
    for pattern, replacement in _SHAPES:
        text = pattern.sub(replacement, text)
    return redact_url_in_text(text)


def _scrub_values(obj: Any) -> Any:
    if isinstance(obj, str):
        return scrub_text(obj)
    if isinstance(obj, dict):
        return {k: _scrub_values(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrub_values(v) for v in obj]
    return obj


def _scrub_names(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: (SCRUBBED if isinstance(k, str) and is_secret_name(k) else _scrub_names(v)) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_scrub_names(v) for v in obj]
    return obj


def scrub_entry(entry: dict[str, Any]) -> dict[str, Any]:
    """A scrubbed copy of a parsed entry (see the module docstring); `entry` itself is not modified."""
    out: dict[str, Any] = _scrub_values(entry)
    request = out.get("request")
    if isinstance(request, dict):
        header = request.get("header")
        if isinstance(header, dict) and isinstance(header.get("settings"), dict):
            header["settings"] = _scrub_names(header["settings"])
    return out
