"""`CassetteStore`: recorded model responses in one readable JSON file, for test suites.

The pytest plugin (`pyai_caching.pytest_plugin`) gives every test its own cassette; the store can also be used on
its own (`ResponseCache(store=CassetteStore("tests/cassettes/x.json"), mode="read_only")`).

A cassette looks like this (pretty-printed, sorted keys, entries in the order they were first recorded, trailing
newline), so a pull request shows what the model was asked and what it said:

```json
{
  "entries": [
    {
      "format": "pyai_caching",
      "key": "pyai_caching:default:r:{3f1c...}",
      "kind": "response",
      "meta": {"created_at": 1767225600.0, "model": "openai:gpt-4o", ...},
      "request": {"header": {"model": ..., "parameters": ..., "settings": ...}, "messages": [...]},
      "response": {"kind": "response", "parts": [...], "usage": ...},
      "version": 1
    }
  ],
  "format": "pyai_caching-cassette",
  "version": 1
}
```

Rules:

* Only request-level entries are kept; run-level entries (keys with `:run:`) are ignored on write and missing on
  read. Entries never expire (`ttl` is ignored) and are never signed (a signed value is refused).
* Secrets are scrubbed before anything is written (`pyai_caching._util.scrub`), then the optional `scrub` hook runs
  on the entry. Scrubbing never changes a key: keys are computed from the unscrubbed request before the entry
  reaches the store. What is scrubbed in a *response* is replayed scrubbed. The events recorded from a streamed
  response are kept only when scrubbing changed neither them nor the response (a secret split across deltas
  matches no pattern); otherwise they are dropped and a streamed replay gets the response in one chunk.
* Writes are atomic: the whole file is written to a temporary file in the same folder and renamed over the
  cassette, so a reader (another test run, another xdist worker) sees the old file or the new one, never half of
  one. Writers of one folder take turns through an advisory lock on the folder (POSIX), and every write merges
  with what is on disk, so two processes recording into one cassette do not lose each other's entries.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, Final

from pyai_caching._util.explain import describe_differences, nearest, unified_diff
from pyai_caching._util.scrub import Scrubber, scrub_entry
from pyai_caching.engine.stream_replay import drop_scrubbed_stream
from pyai_caching.exceptions import CacheError, ConfigurationError

if sys.platform != "win32":
    import fcntl

__all__ = ["CASSETTE_FORMAT", "CASSETTE_VERSION", "CassetteStore"]

CASSETTE_FORMAT: Final = "pyai_caching-cassette"
"""The `format` field of a cassette file."""

CASSETTE_VERSION: Final = 1
"""The `version` field of a cassette file this release reads and writes."""

_SIGNED_PREFIX: Final = b"pyai_caching-hmac-sha256:"

_Entries = dict[str, dict[str, Any]]
_Stamp = tuple[int, int, int]


def _is_run_key(key: str) -> bool:
    return ":run:" in key


def _display(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows)
        return str(path)


class CassetteStore:
    """A `Store` kept in one pretty-printed JSON file (a cassette) that people review and commit.

    Args:
        path: The cassette file. It (and its folder) is created on the first write.
        scrub: A hook called with each entry (parsed JSON, already scrubbed of well-known secrets) before it is
            written; it returns the entry to write, or `None` after editing it in place. Use it for your own
            fields (emails, names). It must keep the entry valid (replace strings, do not delete fields).
        miss_hint: A line appended to the explanation of a replay miss (the plugin puts the command that
            records the test there).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        scrub: Scrubber | None = None,
        miss_hint: str | None = None,
    ) -> None:
        if not isinstance(path, str | os.PathLike):
            raise ConfigurationError(f"path must be a file path (str or os.PathLike), got {type(path).__name__}")
        if scrub is not None and not callable(scrub):
            raise ConfigurationError(
                f"scrub must be a callable taking and returning an entry dict, got {type(scrub).__name__}"
            )
        self._path = Path(path).absolute()
        self._scrub = scrub
        self.miss_hint = miss_hint
        """A line appended to the explanation of a replay miss, or `None`."""
        self._lock = threading.RLock()
        self._entries: _Entries | None = None
        self._stamp: _Stamp | None = None
        self._used: set[str] = set()

    # --- what the plugin reads -----------------------------------------------------------------------------

    @property
    def path(self) -> Path:
        """The cassette file (absolute)."""
        return self._path

    @property
    def description(self) -> str:
        return f"cassette {_display(self._path)}"

    @property
    def used_keys(self) -> frozenset[str]:
        """Keys this store served (hits) or recorded since it was created."""
        with self._lock:
            return frozenset(self._used)

    def exists(self) -> bool:
        """Whether the cassette file exists."""
        return self._path.is_file()

    def recorded_keys(self) -> list[str]:
        """The keys in the cassette file now, in file order (re-read from disk)."""
        entries, _ = self._read()
        return list(entries)

    def remove(self, keys: Iterable[str]) -> int:
        """Remove the entries with these keys (unused ones, when pruning); return how many were removed.

        A cassette left with no entries is deleted.
        """
        wanted = set(keys)
        return self._modify(lambda entries: [k for k in entries if k in wanted])

    # --- the Store protocol --------------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        if _is_run_key(key):
            return None
        item = self._find(key)
        if item is None:
            return None
        return json.dumps({k: v for k, v in item.items() if k != "key"}, ensure_ascii=False).encode()

    async def set(self, key: str, value: bytes, *, ttl: float | None) -> None:
        if _is_run_key(key):
            return
        item = self._prepare(key, value)
        if item is None:
            return

        def put(entries: _Entries) -> list[str]:
            entries[key] = item
            return []

        self._modify(put, always_write=True)
        with self._lock:
            self._used.add(key)

    async def delete(self, key: str) -> bool:
        return self._modify(lambda entries: [key] if key in entries else []) > 0

    async def scan(self, prefix: str) -> AsyncIterator[str]:
        entries, _ = self._read()
        for key in entries:
            if key.startswith(prefix):
                yield key

    async def clear(self, prefix: str) -> int:
        return self._modify(lambda entries: [k for k in entries if k.startswith(prefix)])

    async def close(self) -> None:
        return None

    # --- explaining a miss ---------------------------------------------------------------------------------

    def explain_miss(self, request: dict[str, Any]) -> str:
        """Why no recorded entry matches `request` (a canonical request): the nearest one and what differs."""
        current = self._scrubbed_request(request)
        with self._lock:
            self._refresh()
            entries = dict(self._entries or {})
        where = _display(self._path)
        lines: list[str] = []
        recorded = [
            (i, item["request"]) for i, item in enumerate(entries.values()) if isinstance(item.get("request"), dict)
        ]
        if not self.exists():
            lines.append(f"Cassette {where} does not exist: nothing was recorded for this test yet.")
        elif not recorded:
            lines.append(f"Cassette {where} holds no recorded request.")
        else:
            found = nearest(current, [r for _, r in recorded])
            assert found is not None
            index, score = found
            position, nearest_request = recorded[index]
            lines.append(
                f"No request recorded in cassette {where} matches it ({len(recorded)} recorded). "
                f"The nearest one (entries[{position}], {score:.0%} alike) differs in:"
            )
            lines.extend(f"  - {d}" for d in describe_differences(nearest_request, current))
            lines.append("Diff of the canonical requests (- recorded, + this request):")
            lines.extend(f"    {line}" for line in unified_diff(nearest_request, current).splitlines())
        if self.miss_hint:
            lines.append(self.miss_hint)
        return "\n".join(lines)

    def _scrubbed_request(self, request: dict[str, Any]) -> dict[str, Any]:
        """The request as it would be written, so that a miss message neither leaks nor shows scrubbed fields."""
        scrubbed: dict[str, Any] = scrub_entry({"request": request})["request"]
        if self._scrub is not None:
            try:
                result = self._scrub({"request": scrubbed})
                if result is not None and isinstance(result.get("request"), dict):
                    scrubbed = result["request"]
            except Exception:  # a hook written for whole entries may not expect a request alone
                pass
        return scrubbed

    # --- entries in memory and on disk ---------------------------------------------------------------------

    def _prepare(self, key: str, value: bytes) -> dict[str, Any] | None:
        if value.startswith(_SIGNED_PREFIX):
            raise CacheError(
                f"{self.description} keeps unsigned entries: do not give a signing secret (secret= or "
                "LLM_CACHE_SECRET) to a cache that writes to a cassette",
                operation="set",
                store=self.description,
            )
        try:
            entry = json.loads(value)
        except ValueError as e:
            raise CacheError(
                f"{self.description} was given a value that is not a JSON entry ({e})",
                operation="set",
                store=self.description,
            ) from None
        if not isinstance(entry, dict) or entry.get("kind") != "response":
            return None
        original, entry = entry, scrub_entry(entry)
        if self._scrub is not None:
            result = self._scrub(entry)
            if result is not None:
                entry = result
            self._check_entry(entry)
        entry = drop_scrubbed_stream(original, entry)
        return {"key": key, **{k: v for k, v in entry.items() if k != "key"}}

    def _check_entry(self, entry: Any) -> None:
        from pyai_caching.engine.entries import EntryDecodeError, decode_response_entry

        try:
            if not isinstance(entry, dict):
                raise EntryDecodeError(f"got {type(entry).__name__}")
            decode_response_entry(json.dumps(entry).encode())
        except (EntryDecodeError, TypeError, ValueError) as e:
            raise ConfigurationError(
                f"the cassette scrub hook returned an entry that is no longer valid ({e}): replace string values "
                "and keep every field and its type"
            ) from None

    def _find(self, key: str) -> dict[str, Any] | None:
        with self._lock:
            self._refresh()
            assert self._entries is not None
            item = self._entries.get(key)
            if item is not None:
                self._used.add(key)
            return item

    def _refresh(self) -> None:
        """Load the file if it was never loaded or changed on disk since (another process recorded into it)."""
        if self._entries is None or self._stat() != self._stamp:
            self._entries, self._stamp = self._read()

    def _stat(self) -> _Stamp | None:
        try:
            st = os.stat(self._path)
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _read(self) -> tuple[_Entries, _Stamp | None]:
        try:
            with open(self._path, "rb") as f:
                st = os.fstat(f.fileno())
                raw = f.read()
        except FileNotFoundError:
            return {}, None
        return self._parse(raw), (st.st_ino, st.st_mtime_ns, st.st_size)

    def _parse(self, raw: bytes) -> _Entries:
        where = _display(self._path)
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise CacheError(
                f"cassette {where} is not valid JSON ({e}); fix it (a merge conflict?) or delete it and record "
                "the test again",
                operation="get",
                store=self.description,
            ) from None
        if not isinstance(doc, dict) or doc.get("format") != CASSETTE_FORMAT:
            raise CacheError(
                f'{where} is not a pyai_caching cassette (no "format": {CASSETTE_FORMAT!r}); delete it or point '
                "the test at another file",
                operation="get",
                store=self.description,
            )
        if doc.get("version") != CASSETTE_VERSION:
            raise CacheError(
                f"cassette {where} has version {doc.get('version')!r} but this pyai_caching reads version "
                f"{CASSETTE_VERSION}: record the test again",
                operation="get",
                store=self.description,
            )
        items = doc.get("entries")
        if not isinstance(items, list) or not all(isinstance(i, dict) and isinstance(i.get("key"), str) for i in items):
            raise CacheError(
                f'cassette {where} is malformed ("entries" must be a list of objects with a "key"); '
                "delete it and record the test again",
                operation="get",
                store=self.description,
            )
        return {i["key"]: i for i in items}

    def _write(self, entries: _Entries) -> None:
        folder = self._path.parent
        if not entries:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._path)
            return
        doc = {"format": CASSETTE_FORMAT, "version": CASSETTE_VERSION, "entries": list(entries.values())}
        text = json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{self._path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
                f.write(text)
            os.chmod(tmp, 0o644)
            os.replace(tmp, self._path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    @contextlib.contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Serialize writers of this cassette's folder across processes (advisory `flock` on the folder)."""
        if sys.platform == "win32":
            yield
            return
        fd = os.open(self._path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _modify(self, change: Callable[[_Entries], list[str]], *, always_write: bool = False) -> int:
        """Apply `change` to the entries on disk (it edits them and returns keys to remove); write if needed.

        Returns how many keys were removed.
        """
        with self._lock:
            if not always_write and not self._path.is_file():
                return 0
            self._path.parent.mkdir(parents=True, exist_ok=True)
            with self._file_lock():
                entries, _ = self._read()
                removed = change(entries)
                for key in removed:
                    entries.pop(key, None)
                if always_write or removed:
                    self._write(entries)
                self._entries, self._stamp = entries, self._stat()
            return len(removed)
