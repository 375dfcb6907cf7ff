"""`LocalStore` beyond the shared contract: where the file lives, several processes at once, purging."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import platformdirs
import pytest

import pyai_caching.stores
from pyai_caching.exceptions import ConfigurationError
from pyai_caching.stores import LocalStore

REPO = Path(pyai_caching.stores.__file__).resolve().parents[2]

WRITER = textwrap.dedent(
    """
    import asyncio, os, sys, time
    from pyai_caching.stores import LocalStore

    async def main(directory: str, name: str, count: int, go: str) -> None:
        open(f"{go}.{name}", "w").close()  # ready: wait for the other writer, then start together
        deadline = time.monotonic() + 30
        while not os.path.exists(go):
            assert time.monotonic() < deadline, "no go"
            await asyncio.sleep(0.001)
        store = LocalStore(directory)
        for i in range(count):
            key = f"pyai_caching:{name}:{i}"
            await store.set(key, key.encode() * 20, ttl=None)
            assert await store.get(key) == key.encode() * 20, key
        await store.close()

    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]))
    """
)


def rows(path: Path) -> list[tuple[str, float | None]]:
    """The rows of the database file, read directly, expired or not."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        found: list[tuple[str, float | None]] = db.execute(
            "SELECT key, expires_at FROM entries ORDER BY key"
        ).fetchall()
    return found


def test_file_location_argument_then_env_then_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_CACHE_DIR", str(tmp_path / "from-env"))
    assert LocalStore(tmp_path / "explicit").path == tmp_path / "explicit" / "pyai_caching.sqlite3"
    assert LocalStore(str(tmp_path / "explicit")).path == tmp_path / "explicit" / "pyai_caching.sqlite3"
    assert LocalStore().path == tmp_path / "from-env" / "pyai_caching.sqlite3"

    monkeypatch.setenv("LLM_CACHE_DIR", "")
    default = Path(platformdirs.user_cache_dir("pyai_caching", appauthor=False)).absolute() / "pyai_caching.sqlite3"
    assert LocalStore().path == default
    monkeypatch.delenv("LLM_CACHE_DIR")
    assert LocalStore().path == default


def test_description_and_construction_does_no_io(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "not" / "yet")
    assert store.description == f"local:{tmp_path / 'not' / 'yet' / 'pyai_caching.sqlite3'}"
    assert not (tmp_path / "not").exists()


def test_directory_of_the_wrong_type_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="directory must be a path or None, got int"):
        LocalStore(3)  # type: ignore[arg-type]


async def test_env_dir_is_created_and_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_CACHE_DIR", str(tmp_path / "a" / "b"))
    store = LocalStore()
    await store.set("pyai_caching:k", b"v", ttl=None)
    await store.close()
    assert rows(tmp_path / "a" / "b" / "pyai_caching.sqlite3") == [("pyai_caching:k", None)]


async def test_two_stores_on_one_folder_see_each_other(tmp_path: Path) -> None:
    first, second = LocalStore(tmp_path), LocalStore(tmp_path)
    await first.set("pyai_caching:k", b"from first", ttl=None)
    assert await second.get("pyai_caching:k") == b"from first"
    assert await second.delete("pyai_caching:k") is True
    assert await first.get("pyai_caching:k") is None
    await first.close()
    await second.close()


def test_two_processes_write_and_read_the_same_folder_at_once(tmp_path: Path) -> None:
    go = tmp_path / "go"
    names = ("left", "right")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path / "cache"), name, "200", str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        for name in names
    ]
    try:
        deadline = time.monotonic() + 30
        while not all(Path(f"{go}.{name}").exists() for name in names):
            assert time.monotonic() < deadline, "the writers did not start"
            assert all(writer.poll() is None for writer in writers), "a writer died while starting"
            time.sleep(0.005)
        go.touch()
        for writer in writers:
            _, err = writer.communicate(timeout=60)
            assert writer.returncode == 0, err.decode()
    finally:
        for writer in writers:
            if writer.poll() is None:
                writer.kill()
            writer.communicate()

    async def read_all() -> dict[str, bytes | None]:
        store = LocalStore(tmp_path / "cache")
        keys = [f"pyai_caching:{name}:{i}" for name in ("left", "right") for i in range(200)]
        found = dict(zip(keys, await asyncio.gather(*(store.get(key) for key in keys)), strict=True))
        await store.close()
        return found

    found = asyncio.run(read_all())
    assert found == {key: key.encode() * 20 for key in found}
    assert len(found) == 400


async def test_expired_rows_are_purged_from_the_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.set("pyai_caching:gone", b"v", ttl=0.05)
    await store.set("pyai_caching:kept", b"v", ttl=None)
    deadline = time.monotonic() + 5
    while await store.get("pyai_caching:gone") is not None:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    # Invisible at once, but still in the file until a purge (at most one a minute per store, when writing).
    assert [key for key, _ in rows(store.path)] == ["pyai_caching:gone", "pyai_caching:kept"]
    await store.close()

    other = LocalStore(tmp_path)
    await other.set("pyai_caching:new", b"v", ttl=60)  # a fresh store purges on its first write
    assert [key for key, _ in rows(store.path)] == ["pyai_caching:kept", "pyai_caching:new"]
    await other.close()


async def test_file_uses_wal_and_records_created_and_expiry_times(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    before = time.time()
    await store.set("pyai_caching:k", b"v", ttl=30)
    with contextlib.closing(sqlite3.connect(store.path)) as db:
        (mode,) = db.execute("PRAGMA journal_mode").fetchone()
        created_at, expires_at = db.execute("SELECT created_at, expires_at FROM entries").fetchone()
    assert mode == "wal"
    assert before <= created_at <= time.time()
    assert expires_at == pytest.approx(created_at + 30)
    await store.close()


def test_the_store_works_across_event_loops(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)

    async def write() -> None:
        await store.set("pyai_caching:k", b"v", ttl=None)

    async def read() -> bytes | None:
        return await store.get("pyai_caching:k")

    asyncio.run(write())
    assert asyncio.run(read()) == b"v"
    asyncio.run(store.close())
