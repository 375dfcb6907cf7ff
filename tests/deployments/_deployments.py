"""Constants shared by the deployment tests and their fixtures."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from _redis_servers import RedisServer, TLSFiles

ACL_USER = "cache"
ACL_PASSWORD = "c@che/pw:1"
"""Special characters on purpose: URLs must percent-encode them."""
ACL_PASSWORD_IN_URL = "c%40che%2Fpw%3A1"

MINIMAL_ACL: tuple[str, ...] = (
    "resetchannels",
    "~pyai_caching:*",
    "~pyai_caching_ledger:*",
    "+client|setname",
    "+select",
    "+get",
    "+strlen",
    "+set",
    "+unlink",
    "+scan",
    "+evalsha",
    "+script|load",
    "+pttl",
    "+type",
    "+pexpire",
    "+del",
    "+multi",
    "+exec",
    "+hincrby",
    "+expire",
    "+hgetall",
    "+xadd",
    "+xrange",
    "+xlen",
    "+cluster|slots",
    "+command",
)
"""The documented least-privilege rule (docs/guide/deployments.md, "A least-privilege ACL user"), token by token;
the tests prove it is enough and that each permission in it is needed (and tests/docs that the docs show it)."""


@dataclass(frozen=True)
class TLSDeployment:
    """A TLS-only server that requires a client certificate signed by its CA."""

    server: RedisServer
    """The server (`server.port` is its TLS port)."""
    files: TLSFiles
    """The CA, and the server's certificate and key."""
    client_cert: Path
    """A client certificate signed by the same CA."""
    client_key: Path
    """Its key."""

    def url(self, *, cert: bool = True, ca: bool = True, db: int = 0) -> str:
        """`rediss://127.0.0.1:<port>/<db>?ssl_ca_certs=...&ssl_certfile=...&ssl_keyfile=...`."""
        params = []
        if ca:
            params.append(f"ssl_ca_certs={self.files.ca_cert}")
        if cert:
            params += [f"ssl_certfile={self.client_cert}", f"ssl_keyfile={self.client_key}"]
        query = "?" + "&".join(params) if params else ""
        return f"rediss://127.0.0.1:{self.server.port}/{db}{query}"
