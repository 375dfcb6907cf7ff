"""Keep secrets out of logs, errors and entries."""

from __future__ import annotations

import re
from urllib.parse import urlsplit, urlunsplit

__all__ = ["redact_url", "redact_url_in_text"]

_URL_CREDENTIALS_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:@/\s]*):(?P<pw>[^@/\s]+)@")


def redact_url(url: str) -> str:
    """`url` with its password replaced by `***` (the user name stays, it helps debugging)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return redact_url_in_text(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    netloc = f"{user}:***@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def redact_url_in_text(text: str) -> str:
    """`text` with the password of every `scheme://user:password@` inside it replaced by `***`."""
    return _URL_CREDENTIALS_RE.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
