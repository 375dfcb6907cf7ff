"""`pyai-caching clear`: delete this library's entries (all, or those matching the filters), after asking. Other keys
are never touched."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from pyai_caching._util.escape import escape_text
from pyai_caching.cli.browse import Selection, delete_keys, entry_keys, read_entries
from pyai_caching.cli.common import (
    CliError,
    DirOption,
    ExitCode,
    JsonOption,
    NamespaceOption,
    RedisUrlOption,
    TaskOption,
    execute,
    fail,
    missing_file,
    parse_duration,
    prefix_or_exit,
    store_or_exit,
)
from pyai_caching.cli.render import make_console, print_json, scan_progress, size_text
from pyai_caching.stores import Store

__all__ = ["clear"]


def clear(
    namespace: NamespaceOption = None,
    task: TaskOption = None,
    older_than: Annotated[
        str | None,
        typer.Option(
            "--older-than", help="Only entries written longer ago than this (90m, 12h, 7d, 2w).", show_default=False
        ),
    ] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    redis_url: RedisUrlOption = None,
    directory: DirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Delete this library's entries (all, or those matching the filters). Other keys are never touched."""
    try:
        age = parse_duration(older_than, "--older-than") if older_than is not None else None
    except CliError as e:
        fail(str(e), e.code, as_json)
    selection = Selection(prefix=prefix_or_exit(namespace, as_json), task=task, older_than=age)
    store = store_or_exit(redis_url, directory, as_json)
    keys, size = execute(as_json, store, lambda: _matching(store, selection, as_json))
    where = store.description
    if not keys:
        if as_json:
            print_json({"store": where, "matched": 0, "deleted": 0})
        else:
            make_console().print("No matching entries: nothing to delete.", soft_wrap=True)
        return
    if not yes:
        _confirm(f"Delete {_entries(len(keys))}{_size_note(size)} from {escape_text(where)}?", as_json)

    async def delete() -> int:
        with scan_progress(not as_json, "Deleting") as progress:
            return await delete_keys(store, keys, progress)

    deleted = execute(as_json, store, delete)
    if as_json:
        print_json({"store": where, "matched": len(keys), "deleted": deleted})
    else:
        message = f"Deleted {_entries(deleted)}{_size_note(size)} from {escape_text(where)}."
        make_console().print(message, soft_wrap=True)


async def _matching(store: Store, selection: Selection, as_json: bool) -> tuple[list[str], int | None]:
    """The keys of the entries to delete, and their total size (`None` when only the keys were read)."""
    if missing_file(store):
        return [], 0
    with scan_progress(not as_json, "Scanning") as progress:
        if not selection.needs_values:  # the keys alone decide: no need to read the values
            return [key async for key in entry_keys(store, selection.prefix, progress)], None
        keys: list[str] = []
        size = 0
        async for info in read_entries(store, selection, progress=progress):
            keys.append(info.key)
            size += info.size
        return keys, size


def _confirm(question: str, as_json: bool) -> None:
    """Ask on stderr; anything but yes (a refusal, an empty answer, the end of the input) exits with an error."""
    try:
        confirmed = typer.confirm(question, default=False, err=True)
    except typer.Abort:
        confirmed = False
    if not sys.stdin.isatty():
        sys.stderr.write("\n")  # the answer came from a pipe and was not echoed
    if not confirmed:
        fail("nothing deleted (not confirmed); pass --yes to delete without asking", ExitCode.ERROR, as_json)


def _entries(n: int) -> str:
    return "1 entry" if n == 1 else f"{n:,} entries"


def _size_note(size: int | None) -> str:
    return "" if size is None else f" ({size_text(size)})"
