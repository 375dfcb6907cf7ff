"""Short, helpful errors for bad Redis URLs: the problem, the nearest valid URL, and nothing secret. Pure: no I/O.

```
invalid Redis URL 'redsi://localhost:6379': unsupported scheme 'redsi'; did you mean 'redis://localhost:6379'?
invalid Redis URL 'localhost:6379': no scheme; did you mean 'redis://localhost:6379'?
```
"""

from __future__ import annotations

import difflib
import re
from typing import Final

__all__ = ["MAX_MESSAGE", "SCHEMES", "hide_credentials", "invalid_url_message", "nearest_url", "scheme_problem"]

SCHEMES: Final = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster", "rediss+cluster")
"""The URL schemes a `RedisStore` accepts."""

MAX_MESSAGE: Final = 200
"""An invalid-URL message is never longer than this."""

_FORMS: Final = "forms: redis://host:6379/0, rediss://, unix://, redis+sentinel://, redis+cluster://"
_MAX_SHOWN_URL: Final = 60
_SCHEME_RE: Final = re.compile(r"^(?P<scheme>[^:/?#\s]*)://")
_NAMED_SCHEME_RE: Final = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*):")
_PASSWORD_PARAM_RE: Final = re.compile(r"(?i)(password=)[^&#]*")


def hide_credentials(url: str) -> str:
    """`url` with everything that could be a password hidden: the whole user part and any `password=` value."""
    match = _SCHEME_RE.match(url)
    head, rest = (url[: match.end()], url[match.end() :]) if match else ("", url)
    at = rest.rfind("@")
    if at >= 0:
        rest = "***" + rest[at:]
    return head + _PASSWORD_PARAM_RE.sub(r"\g<1>***", rest)


def scheme_problem(url: str) -> str | None:
    """What is wrong with the scheme of `url` (`None` when it is one of `SCHEMES`)."""
    url = url.strip()
    named = _NAMED_SCHEME_RE.match(url)
    if named is not None and named["scheme"].lower() in SCHEMES:
        return None  # the rest is for the full parser
    match = _SCHEME_RE.match(url)
    if match is None or not match["scheme"]:
        return "no scheme"
    return f"unsupported scheme {match['scheme'].lower()!r}"


def nearest_url(url: str) -> str | None:
    """The valid-looking URL `url` was probably meant to be (`redsi://h` -> `redis://h`, `h:6379` ->
    `redis://h:6379`, `/run/redis.sock` -> `unix:///run/redis.sock`), or `None` when there is no good guess."""
    url = url.strip()
    match = _SCHEME_RE.match(url)
    if match is None:
        named = _NAMED_SCHEME_RE.match(url)
        if named is not None and named["scheme"].lower() in SCHEMES:
            return None
        if url.startswith("/"):
            return f"unix://{url}"
        host = url.split("/", 1)[0].rsplit("@", 1)[-1]
        if host and re.fullmatch(r"[\w.\-]+(:\d+)?|\[[0-9a-fA-F:.]+\](:\d+)?", host):
            return f"redis://{url}"
        return None
    scheme = match["scheme"].lower()
    close = difflib.get_close_matches(scheme, SCHEMES, n=1, cutoff=0.6)
    if not close or close[0] == scheme or (scheme.startswith("rediss") and not close[0].startswith("rediss")):
        return None  # never suggest dropping TLS (`rediss+sentinel://` does not exist; `redis+sentinel://` is clear)
    return f"{close[0]}://{url[match.end() :]}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def invalid_url_message(url: str, problem: str) -> str:
    """One line of at most `MAX_MESSAGE` characters: the URL (credentials hidden), the problem, the nearest valid
    URL when there is a good guess, and the accepted forms when they fit."""
    shown = hide_credentials(url.strip())
    guess = nearest_url(shown)
    head = f"invalid Redis URL {_clip(shown, _MAX_SHOWN_URL)!r}: "
    hint = f"; did you mean {_clip(guess, _MAX_SHOWN_URL)!r}?" if guess is not None else ""
    room = MAX_MESSAGE - len(head) - len(hint) - (0 if hint else len(_FORMS) + 2)
    message = f"{head}{_clip(problem, max(room, 20))}{hint}"
    forms = f" ({_FORMS})" if hint else f"; {_FORMS}"
    if len(message) + len(forms) <= MAX_MESSAGE:
        message += forms
    return message[:MAX_MESSAGE]
