"""Hostile values that anyone with write access to a store can plant under `pyai_caching:`, and how to plant them
(raw bytes in Redis, raw rows in the embedded store's SQLite file)."""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import redis
from pydantic_ai.messages import ModelResponse, TextPart

from pyai_caching.engine.entries import EntryMeta, ResponseEntry, encode_entry

TERMINAL_ATTACKS = {
    "window title (OSC 0)": "\x1b]0;pwned\x07",
    "screen clear": "\x1b[2J\x1b[H",
    "OSC 8 link": "\x1b]8;;https://evil.example/\x1b\\click me\x1b]8;;\x1b\\",
    "C1 CSI": "\x9b31mred\x9b0m",
    "carriage return": "safe\roverwritten",
    "bell and backspace": "\x07\x08\x08",
    "bidi override": "\u202egnp.exe",
    "null byte": "a\x00b",
}
"""Control sequences a planted string may hold, by what they do to a terminal that prints them raw."""

RAW_CONTROLS = frozenset(chr(c) for c in [*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0)]) | {"\u202e"}
"""Characters that must never reach a terminal from data (tab and newline are layout, not data)."""


def base_envelope(task: str = "planted") -> dict[str, Any]:
    """A valid request-level envelope, as parsed JSON."""
    meta = EntryMeta(
        namespace="default", model="test:planted", task=task, cost=Decimal("0.001"), created_at=time.time() - 60
    )
    entry = ResponseEntry(meta=meta, request={"header": {}, "messages": []}, response=ModelResponse([TextPart("hi")]))
    doc: dict[str, Any] = json.loads(encode_entry(entry))
    return doc


def _with(path: str, value: Any) -> bytes:
    doc = base_envelope()
    *parents, last = path.split(".")
    target: Any = doc
    for name in parents:
        target = target[name]
    target[last] = value
    return json.dumps(doc, allow_nan=True).encode()


def _raw_with(path: str, literal: str) -> bytes:
    """An envelope with `literal` as the raw JSON text of one field (numbers JSON cannot write from Python)."""
    marker = "__PLANTED__"
    return _with(path, marker).replace(json.dumps(marker).encode(), literal.encode())


def _nested(depth: int) -> Any:
    value: Any = "bottom"
    for _ in range(depth):
        value = {"a": [value]}
    return value


@dataclass(frozen=True)
class Planted:
    """One hostile value."""

    name: str
    value: bytes | str | int | float
    readable: bool
    """Whether the CLI can still read it as an entry (with its bad fields shown as unknown)."""


_valid = json.dumps(base_envelope()).encode()
_ATTACK_PROMPT = {"part_kind": "user-prompt", "content": "".join(TERMINAL_ATTACKS.values())}

HOSTILE: tuple[Planted, ...] = (
    Planted("empty", b"", False),
    Planted("not JSON", b"this is not json", False),
    Planted("invalid UTF-8", b"\x80\x81\xfe\xff", False),
    Planted("UTF-8 BOM", b"\xef\xbb\xbf" + _valid, True),
    Planted("truncated entry", _valid[: len(_valid) // 2], False),
    Planted("100k open brackets", b"[" * 100_000, False),
    Planted("deep nesting that loads", json.dumps(_nested(400)).encode(), False),
    Planted("deep nesting inside an envelope", _with("request", _nested(300)), False),
    Planted("null", b"null", False),
    Planted("a number", b"42", False),
    Planted("a string", b'"pyai_caching"', False),
    Planted("a list", b"[]", False),
    Planted("a list of envelopes", b"[" + _valid + b"]", False),
    Planted("a 5000-digit number", b"1" * 5000, False),
    Planted("future version", _with("version", 3), False),
    Planted("version as a string", _with("version", "1"), False),
    Planted("version true", _with("version", True), False),
    Planted("huge version", _raw_with("version", "9" * 4000), False),
    Planted("no kind", _with("kind", None), False),
    Planted("unknown kind", _with("kind", "\x1b[2Jevil"), False),
    Planted("meta a string", _with("meta", "meta"), False),
    Planted("meta a list", _with("meta", [1, 2]), False),
    Planted("created_at 1e308", _with("meta.created_at", 1e308), True),
    Planted("created_at -1e308", _with("meta.created_at", -1e308), True),
    Planted("created_at infinity", _raw_with("meta.created_at", "1e999"), True),
    Planted("created_at NaN", _raw_with("meta.created_at", "NaN"), True),
    Planted("created_at a string", _with("meta.created_at", "yesterday"), True),
    Planted("created_at huge int", _raw_with("meta.created_at", "9" * 4000), True),
    Planted("cost 1e999999999", _with("meta.cost", "1e999999999"), True),
    Planted("cost NaN", _with("meta.cost", "NaN"), True),
    Planted("cost negative", _with("meta.cost", "-5"), True),
    Planted("cost an object", _with("meta.cost", {"usd": 1}), True),
    Planted("cost 1e308", _with("meta.cost", 1e308), True),
    Planted("requests a string", _with("meta.requests", "many"), True),
    Planted("task a list", _with("meta.task", ["a"]), True),
    Planted("task of control sequences", _with("meta.task", "".join(TERMINAL_ATTACKS.values())), True),
    Planted("model of control sequences", _with("meta.model", "\x1b]0;title\x07\x9b2J"), True),
    Planted("task a lone surrogate", _with("meta.task", "\udc80"), True),
    Planted("request a string", _with("request", "request"), True),
    Planted("response a list", _with("response", [1, "two", None]), True),
    Planted("messages of numbers", _with("request.messages", [1, 2.5, None, "x"]), True),
    Planted("parts an object", _with("response.parts", {"part_kind": "text"}), True),
    Planted("usage of strings", _with("response.usage", {"input_tokens": "many", "output_tokens": [1]}), True),
    Planted("tools of junk", _with("request.header", {"parameters": {"function_tools": [1, {"name": None}]}}), True),
    Planted("prompt of control sequences", _with("request.messages", [{"parts": [_ATTACK_PROMPT]}]), True),
    Planted("bad signature line", b"pyai_caching-hmac-sha256:" + b"0" * 64 + b"\n" + b"garbage", False),
    Planted("short signature line", b"pyai_caching-hmac-sha256:abc", False),
)
"""At least 30 hostile values, each with whether the CLI can still read it."""

SQLITE_ONLY: tuple[Planted, ...] = (
    Planted("SQLite TEXT value", json.dumps(base_envelope()), False),
    Planted("SQLite INTEGER value", 7, False),
    Planted("SQLite REAL value", 1.5, False),
)
"""Values of another SQLite type than BLOB in the embedded store's `value` column."""


def plant_local(directory: Path, key: str, value: bytes | str | int | float) -> None:
    """Write a raw row into the embedded store's SQLite file (which must exist already)."""
    with sqlite3.connect(directory / "pyai_caching.sqlite3") as connection:
        connection.execute(
            "INSERT OR REPLACE INTO entries (key, value, created_at, expires_at) VALUES (?, ?, ?, NULL)",
            (key, value, time.time()),
        )
    connection.close()


def plant_redis(client: redis.Redis, key: str, value: bytes | str | int | float) -> None:
    """Write a raw value into Redis."""
    client.set(key, value)
