"""What the tests of a session did with their cassettes: kept per pytest session, merged from xdist workers into
the controller's, and reported at the end: recorded entries no test used, removed with `--llm-prune`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import pytest

__all__ = ["REPORTS", "STATE", "WORKER_OUTPUT_KEY", "CassetteUsage", "SessionState", "report_unused"]

WORKER_OUTPUT_KEY: Final = "pyai_caching_cassettes"
"""Where an xdist worker hands its `SessionState.usage` to the controller (in `workeroutput`)."""


@dataclass
class CassetteUsage:
    """What the tests of one session did with one cassette."""

    recorded: list[str] = field(default_factory=list)
    """Keys in the cassette file when the last of its tests ended, in file order."""
    used: set[str] = field(default_factory=set)
    """Keys some test of the session replayed or recorded."""
    tests: list[str] = field(default_factory=list)
    """Node ids of the tests that used the cassette."""
    all_passed: bool = True
    """Whether every one of those tests passed (only then are unused entries reported and pruned)."""

    def merge(self, other: CassetteUsage) -> None:
        seen = set(self.recorded)
        self.recorded.extend(k for k in other.recorded if k not in seen)
        self.used |= other.used
        self.tests.extend(other.tests)
        self.all_passed = self.all_passed and other.all_passed

    def to_json(self) -> dict[str, Any]:
        return {
            "recorded": self.recorded,
            "used": sorted(self.used),
            "tests": self.tests,
            "all_passed": self.all_passed,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CassetteUsage:
        return cls(
            recorded=list(data["recorded"]),
            used=set(data["used"]),
            tests=list(data["tests"]),
            all_passed=bool(data["all_passed"]),
        )


@dataclass
class SessionState:
    """The plugin's state for one pytest session (one per xdist worker, merged into the controller's)."""

    started: float = field(default_factory=time.time)
    """When the session started: a cassette modified after that was recorded during this run."""
    usage: dict[str, CassetteUsage] = field(default_factory=dict)
    """Per cassette (absolute path)."""
    summary: list[str] = field(default_factory=list)
    """Lines for the terminal summary."""

    def add(self, path: str, usage: CassetteUsage) -> None:
        if path in self.usage:
            self.usage[path].merge(usage)
        else:
            self.usage[path] = usage


STATE: Final = pytest.StashKey[SessionState]()
"""The session's `SessionState`, in `config.stash`."""
REPORTS: Final = pytest.StashKey[dict[str, pytest.TestReport]]()
"""The reports of a test that uses a cassette, by phase (`setup`, `call`, `teardown`), in `item.stash`."""


def report_unused(state: SessionState, root: Path, *, prune: bool) -> list[str]:
    """Summary lines for the cassettes with entries no test used (only cassettes whose tests all passed); with
    `prune`, those entries are removed first (a cassette left empty is deleted)."""
    from pyai_caching.testing.cassette import CassetteStore

    lines: list[str] = []
    pending = 0
    for path, usage in sorted(state.usage.items()):
        if not usage.all_passed:
            continue
        unused = [k for k in usage.recorded if k not in usage.used]
        if not unused:
            continue
        shown = _relative(Path(path), root)
        if prune:
            removed = CassetteStore(path).remove(unused)
            left = len(usage.recorded) - removed
            lines.append(
                f"{shown}: pruned {removed} unused entr{'y' if removed == 1 else 'ies'}"
                + (f" ({left} left)" if left else " (cassette deleted: nothing left)")
            )
        else:
            pending += 1
            lines.append(f"{shown}: {len(unused)} of {len(usage.recorded)} recorded entries unused")
    if pending:
        lines.append(
            f"{pending} cassette{'s' if pending != 1 else ''} with unused entries: run with --llm-prune to remove "
            "them (only cassettes whose tests all ran and passed are pruned)"
        )
    return lines


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
