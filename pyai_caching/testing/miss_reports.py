"""How a replay miss (`CacheMissError`) reads in pytest's report: the test's own frames, and the error's name."""

from __future__ import annotations

import os
import types
from pathlib import Path
from typing import Any

import pytest

__all__ = ["is_cache_miss", "name_the_miss", "without_library_frames"]


def _library_folders() -> tuple[str, ...]:
    """The folders whose frames a replay miss hides: this library's, pydantic-ai's and pydantic-graph's."""
    import pydantic_ai
    import pydantic_graph

    import pyai_caching

    return tuple(str(Path(m.__file__ or "").parent) + os.sep for m in (pyai_caching, pydantic_ai, pydantic_graph))


def is_cache_miss(excinfo: pytest.ExceptionInfo[BaseException] | None) -> bool:
    """Whether the test failed with a `CacheMissError`."""
    if excinfo is None:
        return False
    from pyai_caching.exceptions import CacheMissError

    return isinstance(excinfo.value, CacheMissError)


def without_library_frames(excinfo: Any) -> Any:
    """The same exception with the library's own frames dropped from its traceback: a replay miss is explained by
    its message, not by a hundred lines of agent graph. (`--full-trace` keeps them.)"""
    folders = _library_folders()
    frames = []
    tb = excinfo.tb
    while tb is not None:
        if not tb.tb_frame.f_code.co_filename.startswith(folders):
            frames.append((tb.tb_frame, tb.tb_lasti, tb.tb_lineno))
        tb = tb.tb_next
    trimmed = None
    for frame, lasti, lineno in reversed(frames):
        trimmed = types.TracebackType(trimmed, frame, lasti, lineno)
    if trimmed is None:
        return excinfo
    error = excinfo.value.with_traceback(trimmed)
    return pytest.ExceptionInfo.from_exc_info((type(error), error, trimmed))


def name_the_miss(report: pytest.TestReport, excinfo: Any) -> None:
    """`CacheMissError: ...` in the short summary: the name in full, not a module path cut at the terminal width."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        crash.message = f"{type(excinfo.value).__name__}: {excinfo.value}"
