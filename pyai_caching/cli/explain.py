"""`pyai-caching explain`: why recent requests missed. The nearest stored entry, and the ingredient that differed.

The report itself is `pyai_caching.explain.miss_report` (and `render_report` for the text); this module parses the
options, opens the store and prints.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.text import Text

from pyai_caching.cli.common import (
    DirOption,
    JsonOption,
    NamespaceOption,
    RedisUrlOption,
    TaskOption,
    execute,
    missing_file,
    prefix_or_exit,
    store_or_exit,
)
from pyai_caching.cli.render import make_console, print_json
from pyai_caching.explain import MissReport, miss_report, render_report
from pyai_caching.stores import Store

__all__ = ["explain"]


def explain(
    task: TaskOption = None,
    last: Annotated[
        int, typer.Option("--last", "-l", min=1, help="How many of the most recent misses to explain.")
    ] = 10,
    namespace: NamespaceOption = None,
    redis_url: RedisUrlOption = None,
    directory: DirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Why recent requests missed: the nearest stored entry and the ingredient that differed (a tool, a setting,
    a message), and plainly when only a volatile token (a date, a time, a UUID) in a prompt changed."""
    if namespace is not None:
        prefix_or_exit(namespace, as_json)  # a namespace that cannot exist is a usage error
    store = store_or_exit(redis_url, directory, as_json)
    report = execute(as_json, store, lambda: _report(store, namespace, task, last))
    if as_json:
        print_json(report.to_json())
    else:
        make_console().print(Text(render_report(report)), soft_wrap=True)


async def _report(store: Store, namespace: str | None, task: str | None, last: int) -> MissReport:
    if missing_file(store):  # reading the embedded store must not create its file
        return MissReport(
            namespace=namespace, task=task, recorded=0, misses=(), entries_compared=0, entries_truncated=False
        )
    return await miss_report(store, namespace=namespace, task=task, last=last)
