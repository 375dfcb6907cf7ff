"""Keep secrets out of logs, errors, reprs and entries. Pure functions, no I/O.

One definition of a secret-looking name (`is_secret_name`), used by the canonical request (what is hashed into a
key and stored in an entry) and by cassette scrubbing. A value under such a name is replaced by a digest
placeholder (`redact`): `"<secret sha256:0123456789abcdef>"`, the first 64 bits of an HMAC-SHA256 of the value
(as canonical JSON) under a fixed library key. Two different values get different placeholders (so two
credentials never share a cache entry) and the same value always gets the same one (so keys stay stable across
processes); the value itself cannot be read back. Like any hash, a guessable value (a short password) could be
confirmed by trying candidates: the placeholder hides a secret, it does not make a weak one strong.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import re
from typing import Any, Final

__all__ = [
    "SECRET_PLACEHOLDER_RE",
    "is_secret_name",
    "redact",
    "redact_url",
    "redact_url_in_text",
    "secret_digest",
]

_URL_CREDENTIALS_RE = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]{0,30}://)(?P<user>[^:@/\s]{0,256}):(?P<pw>[^/\s]{1,256})@"
)
_URL_PASSWORD_PARAM_RE = re.compile(r"(?i)([?&]password=)[^&#\s'\"]*")

_SECRET_WORDS: Final = frozenset(
    {
        "auth",
        "authorization",
        "bearer",
        "cookie",
        "cookies",
        "credential",
        "credentials",
        "jwt",
        "passphrase",
        "passwd",
        "password",
        "passwords",
        "pwd",
        "secret",
        "secrets",
        "session",
        "sessionid",
        "token",
    }
)
"""Whole words (of a name split at `_`, `-`, `.`, spaces and camelCase humps) that make it secret-looking."""

_SECRET_FRAGMENTS: Final = (
    "accesskey",
    "accesstoken",
    "apikey",
    "authorization",
    "authtoken",
    "clientsecret",
    "cookie",
    "credential",
    "encryptionkey",
    "idtoken",
    "passwd",
    "password",
    "privatekey",
    "refreshtoken",
    "secret",
    "sessiontoken",
    "signingkey",
    "subscriptionkey",
)
"""Fragments that make a name secret-looking wherever they appear in it once its separators are removed
(`x-api-key` -> `xapikey`, `clientSecret` -> `clientsecret`)."""

_WORD_RE: Final = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_DIGEST_KEY: Final = b"pyai_caching/secret-digest/v1"
_DIGEST_HEX: Final = 16
SECRET_PLACEHOLDER_RE: Final = re.compile(r"<secret sha256:[0-9a-f]{16}>")
"""What `redact` writes in place of a secret value (matched whole with `fullmatch`)."""


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether `name` (a settings key, a header, a field) looks like it holds a credential.

    `api_key`, `apikey`, `X-Api-Key`, `secret`, `client_secret`, `password`, `passwd`, `token`, `access_token`,
    `auth_token`, `refresh_token`, `authorization`, `auth`, `cookie`, `credential(s)`, `private_key`, `session`,
    `session_id`, ... but not `max_tokens`, `prompt_cache_key` or `author`.
    """
    words = [w.lower() for w in _WORD_RE.findall(name)]
    if any(w in _SECRET_WORDS for w in words):
        return True
    compact = "".join(words)
    return any(fragment in compact for fragment in _SECRET_FRAGMENTS)


def secret_digest(value: Any) -> str:
    """The placeholder that stands for `value`: `<secret sha256:...>` (see the module docstring)."""
    if isinstance(value, str) and SECRET_PLACEHOLDER_RE.fullmatch(value):
        return value  # already a placeholder: redacting twice changes nothing
    try:
        payload = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError):
        payload = f"{type(value).__qualname__}:{value!r}"
    mac = hmac.new(_DIGEST_KEY, payload.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
    return f"<secret sha256:{mac[:_DIGEST_HEX]}>"


def redact(obj: Any) -> Any:
    """A copy of `obj` (JSON-like data) in which the value of every secret-looking key, at any depth of dicts and
    lists, is replaced by its digest placeholder. Anything else is returned as it is."""
    if isinstance(obj, dict):
        return {k: secret_digest(v) if isinstance(k, str) and is_secret_name(k) else redact(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [redact(v) for v in obj]
    return obj


def redact_url(url: str) -> str:
    """`url` with its password replaced by `***` (the user name stays, it helps debugging), also when the URL
    cannot be parsed (several hosts, an unencoded `@` in the password) and when it is given as `?password=`."""
    head, sep, rest = url.partition("://")
    if not sep:
        return redact_url_in_text(url)
    at = rest.rfind("@")
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        rest = f"{user}:***{rest[at:]}" if colon else rest
    return redact_url_in_text(head + sep + rest)


def redact_url_in_text(text: str) -> str:
    """`text` with the password of every `scheme://user:password@` and `?password=` inside it replaced by `***`."""
    text = _URL_CREDENTIALS_RE.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _URL_PASSWORD_PARAM_RE.sub(r"\g<1>***", text)
