"""Redis URLs: which deployment a `RedisStore` connects to, parsed and checked without any I/O.

`parse_url` turns `redis://`, `rediss://`, `unix://`, `redis+sentinel://`, `redis+cluster://` and
`rediss+cluster://` URLs into a `Target`; an invalid URL is a `ConfigurationError` whose message never contains
the password.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio.connection import AbstractConnection, Connection, SSLConnection, UnixDomainSocketConnection

from pyai_caching._util.urls import invalid_url_message
from pyai_caching.exceptions import ConfigurationError

__all__ = ["ACCEPTED_FORMS", "URL_OWNED_OPTIONS", "Target", "Topology", "parse_url"]

ACCEPTED_FORMS: Final = (
    "accepted forms: redis://[[user]:password@]host[:port][/db], "
    "rediss://[[user]:password@]host[:port][/db][?ssl_ca_certs=PATH&ssl_certfile=PATH&ssl_keyfile=PATH"
    "&ssl_cert_reqs=required|optional|none] (TLS), "
    "unix://[[user]:password@]/path/to/redis.sock[?db=N], "
    "redis+sentinel://[[user]:password@]host[:26379][,host[:port]...]/service_name[/db] (Sentinel), "
    "redis+cluster://[[user]:password@]host[:port][,host[:port]...] (Cluster; rediss+cluster:// for TLS); "
    "percent-encode special characters in the user and password (for example '@' as %40, '/' as %2F)"
)
"""The forms a Redis URL may take, as error messages list them."""
_SSL_OPTIONS: Final = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile", "ssl_cert_reqs")
_CERT_REQS: Final = ("required", "optional", "none")
URL_OWNED_OPTIONS: Final = frozenset(
    {
        "host",
        "port",
        "path",
        "db",
        "unix_socket_path",
        "connection_class",
        "connection_pool",
        "decode_responses",
        "startup_nodes",
        "ssl",
    }
)
"""Connection options that only the URL sets: `RedisStore` refuses them as keyword arguments."""
_SCHEMES: Final = ("redis", "rediss", "unix", "redis+sentinel", "redis+cluster", "rediss+cluster")
_SENTINEL_PORT: Final = 26379
_REDIS_PORT: Final = 6379

Topology = Literal["server", "sentinel", "cluster"]


@dataclass(frozen=True, slots=True)
class Target:
    """Where and how to connect, as parsed from the URL (the password stays out of `description`)."""

    description: str
    """The URL with the password replaced by `***`."""
    options: dict[str, Any]
    """Connection options taken from the URL: address, database, credentials, TLS."""
    connection_class: type[AbstractConnection] = Connection
    """redis-py's connection class (one server only)."""
    topology: Topology = "server"
    """One server, a Sentinel-monitored master, or a Redis Cluster."""
    nodes: tuple[tuple[str, int], ...] = ()
    """The sentinels (Sentinel) or the startup nodes (Cluster)."""
    service_name: str = ""
    """The name the sentinels monitor the master under (Sentinel only)."""


def parse_url(url: str) -> Target:
    if not isinstance(url, str):
        raise ConfigurationError(f"the Redis URL must be a str, got {type(url).__name__}; {ACCEPTED_FORMS}")
    url = url.strip()
    problem, target = _try_parse(url)
    if target is None:
        # Raised outside any `except` block so no exception that saw the raw URL is chained to it.
        raise ConfigurationError(invalid_url_message(url, problem))
    return target


_UNPARSABLE: Final = "it cannot be parsed (a port that is not an integer from 0 to 65535, or an unbalanced '[')"


@dataclass(slots=True)
class _Credentials:
    options: dict[str, Any] = field(default_factory=dict)
    shown: str = ""
    """`user:***@`, `user@`, `:***@` or nothing: how the user part appears in the description."""


def _credentials(username: str | None, password: str | None, params: dict[str, str]) -> tuple[str, _Credentials]:
    if "password" in params:
        if password is not None:
            return "the password is given both before '@' and as ?password=", _Credentials()
        password = params["password"] or None
    found = _Credentials()
    if username is not None:
        found.options["username"] = username
    if password is not None:
        found.options["password"] = password
    if username is not None or password is not None:
        found.shown = (username or "") + (":***" if password is not None else "") + "@"
    return "", found


def _query(scheme: str, text: str) -> tuple[str, dict[str, str] | None]:
    try:
        query = parse_qs(text, keep_blank_values=True, strict_parsing=bool(text))
    except ValueError:
        return "the query string cannot be parsed", None
    allowed = {"password"}
    if scheme != "redis+cluster" and scheme != "rediss+cluster":
        allowed.add("db")
    if scheme.startswith("rediss"):
        allowed.update(_SSL_OPTIONS)
    unknown = sorted(set(query) - allowed)
    if unknown:
        return f"unknown query parameter(s) {', '.join(unknown)} (allowed here: {', '.join(sorted(allowed))})", None
    repeated = sorted(name for name, values in query.items() if len(values) > 1)
    if repeated:
        return f"query parameter(s) given more than once: {', '.join(repeated)}", None
    return "", {name: values[0] for name, values in query.items()}


def _database(db_text: str | None) -> int | None:
    if db_text is None or db_text == "":
        return 0
    if db_text.isascii() and db_text.isdigit():
        return int(db_text)
    return None


def _tls(params: dict[str, str], options: dict[str, Any]) -> str:
    for name in _SSL_OPTIONS:
        if params.get(name):
            options[name] = params[name]
    reqs = options.get("ssl_cert_reqs")
    if reqs is not None and reqs not in _CERT_REQS:
        return f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}"
    return ""


def _shown_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _try_parse(url: str) -> tuple[str, Target | None]:
    try:
        parts = urlsplit(url)
    except ValueError:
        return _UNPARSABLE, None
    scheme = parts.scheme.lower()
    if scheme not in _SCHEMES:
        shown = f"{scheme!r}" if scheme else "none"
        return f"unsupported scheme {shown}", None
    if "+" in scheme:
        return _try_parse_group(scheme, parts.netloc, parts.path, parts.query, parts.fragment)
    try:
        port = parts.port
    except ValueError:
        return _UNPARSABLE, None
    if parts.fragment:
        return "a '#fragment' is not allowed", None
    problem, params = _query(scheme, parts.query)
    if params is None:
        return problem, None
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password else None
    problem, credentials = _credentials(username, password, params)
    if problem:
        return problem, None
    options = credentials.options

    db_text = params.get("db")
    if scheme == "unix":
        if parts.hostname or port is not None:
            return "a unix:// URL takes no host or port, only a path: unix:///path/to/redis.sock", None
        path = unquote(parts.path)
        if not path.startswith("/") or path == "/":
            return "a unix:// URL needs the absolute path of the socket: unix:///path/to/redis.sock", None
        options["path"] = path
        connection_class: type[AbstractConnection] = UnixDomainSocketConnection
        address = f"{credentials.shown}{path}"
    else:
        if not parts.hostname:
            return "the host is missing", None
        if port == 0:
            return "the port must be an integer from 1 to 65535", None
        host = unquote(parts.hostname)
        path = parts.path
        if path not in ("", "/"):
            if db_text is not None:
                return "the database is given both as the path and as ?db=", None
            db_text = path[1:]
        options["host"] = host
        options["port"] = port or _REDIS_PORT
        connection_class = Connection
        address = f"{credentials.shown}{_shown_host(host)}:{options['port']}"

    db = _database(db_text)
    if db is None:
        return "the database index must be a non-negative integer (the path '/N', or ?db=N)", None
    options["db"] = db

    if scheme == "rediss":
        connection_class = SSLConnection
        problem = _tls(params, options)
        if problem:
            return problem, None
    elif scheme == "unix":
        return "", Target(f"unix://{address}?db={db}", options, connection_class)
    return "", Target(f"{scheme}://{address}/{db}", options, connection_class)


def _try_parse_group(scheme: str, netloc: str, path: str, query: str, fragment: str) -> tuple[str, Target | None]:
    """`redis+sentinel://` and `redis+cluster://` URLs: several `host[:port]`, separated by commas."""
    sentinel = scheme == "redis+sentinel"
    if fragment:
        return "a '#fragment' is not allowed", None
    problem, params = _query(scheme, query)
    if params is None:
        return problem, None
    userinfo, at, hosts_text = netloc.rpartition("@")
    user, colon, secret = userinfo.partition(":")
    username = unquote(user) if at and user else None
    password = unquote(secret) if at and colon and secret else None
    problem, credentials = _credentials(username, password, params)
    if problem:
        return problem, None
    options = credentials.options

    nodes: list[tuple[str, int]] = []
    for item in hosts_text.split(","):
        if not item:
            return "the host is missing" if not hosts_text else "an empty host in the comma-separated list", None
        try:
            node = urlsplit("//" + item)
            host, port = node.hostname, node.port
        except ValueError:
            return _UNPARSABLE, None
        if not host or node.username is not None or node.password is not None:
            return _UNPARSABLE if host else "the host is missing", None
        if port == 0:
            return "the port must be an integer from 1 to 65535", None
        nodes.append((unquote(host), port or (_SENTINEL_PORT if sentinel else _REDIS_PORT)))
    shown_nodes = ",".join(f"{_shown_host(host)}:{port}" for host, port in nodes)

    if not sentinel:
        if path not in ("", "/", "/0"):
            return "Redis Cluster has only database 0: give no path (redis+cluster://host:port,host:port)", None
        if scheme == "rediss+cluster":
            options["ssl"] = True
            problem = _tls(params, options)
            if problem:
                return problem, None
        return "", Target(
            f"{scheme}://{credentials.shown}{shown_nodes}", options, topology="cluster", nodes=tuple(nodes)
        )

    segments = path[1:].split("/") if path.startswith("/") else []
    service_name = unquote(segments[0]) if segments else ""
    if not service_name:
        return "the Sentinel service name is missing (redis+sentinel://host:26379/mymaster)", None
    if len(segments) > 2:
        return "the path must be /service_name or /service_name/db", None
    db_text = params.get("db")
    if len(segments) == 2 and segments[1] != "":
        if db_text is not None:
            return "the database is given both as the path and as ?db=", None
        db_text = segments[1]
    db = _database(db_text)
    if db is None:
        return "the database index must be a non-negative integer (/service_name/N, or ?db=N)", None
    options["db"] = db
    description = f"{scheme}://{credentials.shown}{shown_nodes}/{service_name}/{db}"
    return "", Target(description, options, topology="sentinel", nodes=tuple(nodes), service_name=service_name)
