"""`LocalStore` under real file faults: a read-only folder or file, a file deleted or replaced while in use, a
corrupt file. Each fault is made for real on the file system; calls go through `cached_agent_run`.

Making a folder read-only: `chmod` does not stop root (tests may run as root, in CI containers), so as root the
folder or file is made immutable with `chattr +i` (ext4, xfs, btrfs; needs CAP_LINUX_IMMUTABLE, which root has
outside restricted containers). When neither works, the read-only tests are skipped with the reason.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sqlite3
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from _fault_kit import Echo, answer_to, warnings_with

from pyai_caching import cached_agent_run
from pyai_caching.stores import LocalStore

pytestmark = pytest.mark.faults


@contextlib.contextmanager
def read_only(*paths: Path) -> Iterator[None]:
    """Make `paths` unwritable for this process for the duration of the block (really: the test checks it)."""
    root = os.geteuid() == 0
    chattr = shutil.which("chattr")
    if root and chattr is None:
        pytest.skip("running as root without chattr: no way to make a folder read-only for this process")
    modes = {path: stat.S_IMODE(path.stat().st_mode) for path in paths}
    done: list[Path] = []
    try:
        for path in paths:
            if root:
                assert chattr is not None
                made = subprocess.run([chattr, "+i", str(path)], capture_output=True, text=True)
                if made.returncode != 0:
                    pytest.skip(f"running as root and `chattr +i` is refused here ({made.stderr.strip()})")
            else:
                path.chmod(modes[path] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
            done.append(path)
        first = paths[0]
        with pytest.raises(OSError):  # the fault is real
            _write_to(first / "probe" if first.is_dir() else first)
        yield
    finally:
        for path in done:
            if root:
                assert chattr is not None
                subprocess.run([chattr, "-i", str(path)], check=True)
            else:
                path.chmod(modes[path])


def _write_to(path: Path) -> None:
    with open(path, "ab") as file:
        file.write(b"")


async def populate(directory: Path, echo: Echo, *prompts: str) -> None:
    """Cache `prompts` in the folder's file, then close it (as a process that ends does)."""
    store = LocalStore(directory)
    for prompt in prompts:
        assert await cached_agent_run(echo.agent(), prompt, "t", store=store) == answer_to(prompt)
    await store.close()


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


@pytest.mark.parametrize("what", ["folder", "file and folder", "file"])
async def test_a_read_only_cache_serves_hits_and_skips_writes_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, what: str
) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    echo = Echo()
    await populate(tmp_path, echo, "cached 1", "cached 2")
    database = tmp_path / "pyai_caching.sqlite3"
    assert files_in(tmp_path) == ["pyai_caching.sqlite3"]  # closed cleanly: no -wal, no -shm
    targets = {"folder": [tmp_path], "file and folder": [tmp_path, database], "file": [database]}[what]
    calls = echo.calls

    with read_only(*targets):
        store = LocalStore(tmp_path)  # a new process starting on the read-only cache
        for prompt in ("cached 1", "cached 2", "cached 1"):
            assert await cached_agent_run(echo.agent(), prompt, "t", store=store) == answer_to(prompt)
        assert echo.calls == calls  # all hits
        for i in range(3):
            assert await cached_agent_run(echo.agent(), f"new {i}", "t", store=store) == answer_to(f"new {i}")
        assert echo.calls == calls + 3  # new prompts are answered by the model, and not stored
        await store.close()

    warned = warnings_with(caplog, "calls go on without the cache")
    assert len(warned) == 1, caplog.text
    assert "read-only" in warned[0]
    assert not any("unable to open database file" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("deleted", ["the file", "the file, its -wal and -shm"])
async def test_a_deleted_cache_file_is_noticed_and_a_new_one_is_used(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, deleted: str
) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    echo = Echo()
    store = LocalStore(tmp_path)
    assert await cached_agent_run(echo.agent(), "before", "t", store=store) == answer_to("before")

    assert "pyai_caching.sqlite3-wal" in files_in(tmp_path)  # in use
    doomed = files_in(tmp_path) if "wal" in deleted else ["pyai_caching.sqlite3"]
    for name in doomed:  # `rm ~/.cache/pyai_caching/...` while the process runs
        (tmp_path / name).unlink()
    assert await cached_agent_run(echo.agent(), "after", "t", store=store) == answer_to("after")
    assert await cached_agent_run(echo.agent(), "before", "t", store=store) == answer_to("before")
    assert echo.calls == 3  # "before" was in the deleted file: asked again

    other_process = LocalStore(tmp_path)
    calls = echo.calls
    for prompt in ("after", "before"):  # what the first store wrote after the deletion is in the new file
        assert await cached_agent_run(echo.agent(), prompt, "t", store=other_process) == answer_to(prompt)
    assert echo.calls == calls
    assert len(warnings_with(caplog, "was deleted while in use")) == 1
    await store.close()
    await other_process.close()


async def test_a_replaced_cache_file_is_noticed_and_reopened(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    echo = Echo()
    await populate(tmp_path / "elsewhere", echo, "from the other file")
    store = LocalStore(tmp_path / "cache")
    assert await cached_agent_run(echo.agent(), "mine", "t", store=store) == answer_to("mine")

    # Another file is moved into its place (a restored backup, a synced folder).
    os.replace(tmp_path / "elsewhere" / "pyai_caching.sqlite3", tmp_path / "cache" / "pyai_caching.sqlite3")
    calls = echo.calls
    assert await cached_agent_run(echo.agent(), "from the other file", "t", store=store) == answer_to(
        "from the other file"
    )
    assert echo.calls == calls  # a hit, from the file now at the path
    assert len(warnings_with(caplog, "was replaced while in use")) == 1
    await store.close()


def garbage_everywhere(database: Path) -> None:
    database.write_bytes(b"this is not an SQLite file " * 2000)


def garbage_after_the_header(database: Path) -> None:
    """Keep the first page (the header and the schema), overwrite the pages that hold the entries."""
    with open(database, "r+b") as file:
        file.seek(4096)
        size = database.stat().st_size
        file.write(bytes((i * 37 + 11) % 256 for i in range(size - 4096)))


@pytest.mark.parametrize("corrupt", [garbage_everywhere, garbage_after_the_header])
async def test_a_corrupt_cache_file_is_moved_aside_and_a_new_one_started(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, corrupt: object
) -> None:
    caplog.set_level(logging.WARNING, logger="pyai_caching")
    echo = Echo()
    await populate(tmp_path, echo, *(f"cached {i}" for i in range(30)))
    database = tmp_path / "pyai_caching.sqlite3"
    assert callable(corrupt)
    corrupt(database)
    with pytest.raises(sqlite3.DatabaseError), contextlib.closing(sqlite3.connect(database)) as db:
        db.execute("SELECT count(*) FROM entries WHERE length(value) > 0").fetchall()  # the fault is real

    store = LocalStore(tmp_path)  # the next process
    calls = echo.calls
    for _ in range(2):
        for i in (0, 29):
            assert await cached_agent_run(echo.agent(), f"cached {i}", "t", store=store) == answer_to(f"cached {i}")
    assert echo.calls == calls + 2  # asked again once, then hits from the new file
    aside = [name for name in files_in(tmp_path) if ".corrupt-" in name and not name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1
    assert aside[0].startswith("pyai_caching.sqlite3.corrupt-")
    assert (tmp_path / aside[0]).read_bytes()[:27] != b"SQLite format 3\x00"[:27] or corrupt is garbage_after_the_header
    warned = warnings_with(caplog, "was corrupt")
    assert len(warned) == 1
    assert "moved it aside" in warned[0]
    with contextlib.closing(sqlite3.connect(database)) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    await store.close()
