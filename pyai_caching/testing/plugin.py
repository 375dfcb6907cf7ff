"""pytest plugin: record real LLM responses once, replay them in every later run.

Registered through the `pytest11` entry point, so installing pyai_caching is enough. It does nothing for tests
that neither request the `llm_cassette` fixture nor carry the `llm_cassette` marker.

```python
@pytest.mark.llm_cassette
async def test_profile():
    profile = await make_profile("Ada")      # code that uses cached_agent_run or ResponseCache, unchanged
    assert profile.name == "Ada"
```

```
pytest --llm-record-mode=once      # with an API key: records tests/cassettes/test_profiles/test_profile.json
pytest                             # anywhere, no key: replays it (the default mode is `none`)
```

While a test's cassette is active, every `cached_agent_run` and every `ResponseCache` of the process reads and
writes the cassette in the test's record mode, whatever store and cache mode the code configured. A plain
`Agent` gets it with `agent.run(..., capabilities=[llm_cassette.capability()])`.

Record modes (`RecordMode`), as in VCR:

| mode | cassette exists | no cassette | cache mode |
|---|---|---|---|
| `none` (default) | replay; a miss fails | every request fails | `read_only` |
| `once` | replay; a miss fails | call the model, record | `read_only` / `read_write` |

"Exists" means the cassette existed when the test run started: a cassette that one test creates during the run
(several tests can share one with `@pytest.mark.llm_cassette("name")`) is still recorded into by the others.
| `new_episodes` | replay what matches, record what is new | record | `read_write` |
| `all` | call the model for every request, re-record | record | `refresh` |

The mode of a test is the first of: `--llm-record-mode` given on the command line, the `llm_record_mode` fixture
(return `None` for no suite-level choice, the default), the marker's `record_mode=`, then `none`.

In a replaying test (`read_only`), pydantic-ai's `ALLOW_MODEL_REQUESTS` is also set to `False`, so a real model
(OpenAI, Anthropic, ...) that the code calls outside any cache refuses the request too. In recording modes the
plugin leaves `ALLOW_MODEL_REQUESTS` as it is: if you set it to `False` yourself, recording is refused.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shlex
import time
import types
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

if TYPE_CHECKING:
    from pyai_caching._util.scrub import Scrubber
    from pyai_caching.capability import ResponseCache
    from pyai_caching.testing.cassette import CassetteStore
    from pyai_caching.types import CacheMode

__all__ = ["Cassette", "RecordMode"]


class RecordMode(StrEnum):
    """How a test uses its cassette (the VCR record modes)."""

    ONCE = "once"
    """Record when the test had no cassette when the run started; otherwise replay only (a miss fails)."""
    NEW_EPISODES = "new_episodes"
    """Replay what matches; call the model and record what does not."""
    NONE = "none"
    """Replay only: a miss fails with `CacheMissError` and no model is called (the default)."""
    ALL = "all"
    """Call the model for every request and record it again."""

    @classmethod
    def parse(cls, value: Any, *, source: str) -> RecordMode:
        """`value` as a `RecordMode`; anything else is a `ConfigurationError` naming `source` and the valid values."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        from pyai_caching.exceptions import ConfigurationError

        valid = ", ".join(repr(m.value) for m in cls)
        raise ConfigurationError(f"{source} must be one of {valid}, got {value!r}")

    def cache_mode(self, *, cassette_exists: bool) -> CacheMode:
        """The `CacheMode` this record mode means for a cassette that does (or does not) exist at test start."""
        from pyai_caching.types import CacheMode

        if self is RecordMode.ALL:
            return CacheMode.REFRESH
        if self is RecordMode.NEW_EPISODES or (self is RecordMode.ONCE and not cassette_exists):
            return CacheMode.READ_WRITE
        return CacheMode.READ_ONLY


@dataclass(kw_only=True)
class Cassette:
    """The cassette of one test, as the `llm_cassette` fixture returns it (active until the test ends)."""

    path: Path
    """The cassette file: `cassettes/<test module>/<test name>.json` next to the test file by default."""
    record_mode: RecordMode
    """The record mode in effect for this test."""
    cache_mode: CacheMode
    """What the record mode means for this cassette: `read_only`, `read_write` or `refresh`."""
    existed: bool
    """Whether the cassette file existed when the test run started (decides what `once` does)."""
    store: CassetteStore
    """The store every cache call of the test reads and writes."""
    nodeid: str
    """The pytest node id of the test."""

    def capability(self, *, namespace: str | None = None, task_name: str | None = None) -> ResponseCache:
        """A `ResponseCache` bound to this cassette, for a plain `Agent` that has no cache of its own.

        `agent.run(prompt, capabilities=[llm_cassette.capability()])` or
        `Agent(model, capabilities=[llm_cassette.capability()])` (build the agent inside the test).
        """
        from pyai_caching.capability import ResponseCache

        return ResponseCache(
            store=self.store,
            mode=self.cache_mode,
            ttl=None,
            namespace=namespace,
            task_name=task_name,
            on_cache_error="raise",
        )


# --- options, marker, session state ------------------------------------------------------------------------

_MARKER: Final = "llm_cassette"
_WORKER_OUTPUT_KEY: Final = "pyai_caching_cassettes"
_UNSAFE_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9_.\-\[\]=,+@]")
_MAX_NAME: Final = 120


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("pyai_caching", "record and replay LLM responses (pyai_caching)")
    group.addoption(
        "--llm-record-mode",
        action="store",
        dest="llm_record_mode",
        default=None,
        choices=[m.value for m in RecordMode],
        help=(
            "how tests with an LLM cassette use it: 'none' (default: replay only, a miss fails), 'once' (record "
            "tests that have no cassette yet), 'new_episodes' (record what is not in the cassette), 'all' "
            "(re-record everything). Overrides the llm_record_mode fixture and the llm_cassette marker."
        ),
    )
    parser.addini(
        "llm_placeholder_keys",
        type="bool",
        default=True,
        help=(
            "replaying (no --llm-record-mode, or 'none'): set placeholder API keys for the providers whose key "
            "variables are unset, so that agents built from a model name can be collected (default: true)"
        ),
    )
    group.addoption(
        "--llm-prune",
        action="store_true",
        dest="llm_prune",
        default=False,
        help=(
            "at the end of the run, remove the recorded entries no test used from the cassettes of the tests "
            "that ran (only cassettes whose tests all passed)"
        ),
    )


@dataclass
class _Usage:
    """What the tests of one session did with one cassette."""

    recorded: list[str] = field(default_factory=list)
    """Keys in the cassette file when the last of its tests ended, in file order."""
    used: set[str] = field(default_factory=set)
    """Keys some test of the session replayed or recorded."""
    tests: list[str] = field(default_factory=list)
    """Node ids of the tests that used the cassette."""
    all_passed: bool = True
    """Whether every one of those tests passed (only then are unused entries reported and pruned)."""

    def merge(self, other: _Usage) -> None:
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
    def from_json(cls, data: dict[str, Any]) -> _Usage:
        return cls(
            recorded=list(data["recorded"]),
            used=set(data["used"]),
            tests=list(data["tests"]),
            all_passed=bool(data["all_passed"]),
        )


@dataclass
class _SessionState:
    """The plugin's state for one pytest session (one per xdist worker, merged into the controller's)."""

    started: float = field(default_factory=time.time)
    """When the session started: a cassette modified after that was recorded during this run."""
    usage: dict[str, _Usage] = field(default_factory=dict)
    """Per cassette (absolute path)."""
    summary: list[str] = field(default_factory=list)
    """Lines for the terminal summary."""

    def add(self, path: str, usage: _Usage) -> None:
        if path in self.usage:
            self.usage[path].merge(usage)
        else:
            self.usage[path] = usage


_STATE: Final = pytest.StashKey[_SessionState]()
_REPORTS: Final = pytest.StashKey[dict[str, pytest.TestReport]]()
_PLACEHOLDERS: Final = pytest.StashKey[dict[str, str | None]]()
"""The variables the plugin set to a placeholder, with the value each had before (`None`: unset)."""


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Before any conftest or test module is imported: placeholder API keys when the run replays."""
    _set_placeholder_keys(early_config, getattr(early_config.known_args_namespace, "llm_record_mode", None))


def _set_placeholder_keys(config: pytest.Config, record_mode: str | None) -> None:
    if _PLACEHOLDERS in config.stash:
        return
    config.stash[_PLACEHOLDERS] = {}
    if record_mode not in (None, RecordMode.NONE) or not config.getini("llm_placeholder_keys"):
        return
    from pyai_caching.testing.placeholder_keys import PLACEHOLDER, to_fill

    for name in to_fill(os.environ):
        config.stash[_PLACEHOLDERS][name] = os.environ.get(name)
        os.environ[name] = PLACEHOLDER


def pytest_unconfigure(config: pytest.Config) -> None:
    from pyai_caching.testing.placeholder_keys import PLACEHOLDER

    for name, before in config.stash.get(_PLACEHOLDERS, {}).items():
        if os.environ.get(name) != PLACEHOLDER:
            continue  # changed by the tests: theirs now
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def pytest_report_header(config: pytest.Config) -> list[str]:
    placeholders: dict[str, str | None] = config.stash.get(_PLACEHOLDERS, {})
    names = list(placeholders)
    if not names:
        return []
    shown = ", ".join(names) if config.get_verbosity() > 0 else ", ".join(names[:3]) + ", ...; -v lists them"
    return [
        f"pyai_caching: replay mode: placeholder keys in {len(names)} unset API key variables ({shown}); no model "
        "request leaves in replay (ini llm_placeholder_keys = false turns this off)"
    ]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{_MARKER}(name=None, record_mode=None): record the test's LLM responses into a cassette and replay them "
        "(name: cassette file name instead of the test name; record_mode: 'once', 'new_episodes', 'none', 'all')",
    )
    config.stash[_STATE] = _SessionState()
    _set_placeholder_keys(config, config.getoption("llm_record_mode"))  # when loaded after the conftests (-p)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    miss = _is_cache_miss(call.excinfo)
    if miss and not item.config.getoption("fulltrace", False):
        call.excinfo = _without_library_frames(call.excinfo)
    report: pytest.TestReport = yield
    if miss:
        _name_the_miss(report, call.excinfo)
    if "llm_cassette" in getattr(item, "fixturenames", ()) or item.get_closest_marker(_MARKER) is not None:
        item.stash.setdefault(_REPORTS, {})[report.when] = report
    return report


def _library_folders() -> tuple[str, ...]:
    """The folders whose frames a replay miss hides: this library's, pydantic-ai's and pydantic-graph's."""
    import pydantic_ai
    import pydantic_graph

    import pyai_caching

    return tuple(str(Path(m.__file__ or "").parent) + os.sep for m in (pyai_caching, pydantic_ai, pydantic_graph))


def _is_cache_miss(excinfo: pytest.ExceptionInfo[BaseException] | None) -> bool:
    if excinfo is None:
        return False
    from pyai_caching.exceptions import CacheMissError

    return isinstance(excinfo.value, CacheMissError)


def _without_library_frames(excinfo: Any) -> Any:
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


def _name_the_miss(report: pytest.TestReport, excinfo: Any) -> None:
    """`CacheMissError: ...` in the short summary: the name in full, not a module path cut at the terminal width."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        crash.message = f"{type(excinfo.value).__name__}: {excinfo.value}"


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: merge what a worker's tests did with their cassettes."""
    data = getattr(node, "workeroutput", {}).get(_WORKER_OUTPUT_KEY)
    if data:
        state = node.config.stash[_STATE]
        for path, usage in data.items():
            state.add(path, _Usage.from_json(usage))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash.get(_STATE, None)
    if state is None or not state.usage:
        return
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller reports and prunes
        workeroutput[_WORKER_OUTPUT_KEY] = {p: u.to_json() for p, u in state.usage.items()}
        return
    prune = bool(config.getoption("llm_prune")) and exitstatus != pytest.ExitCode.INTERRUPTED
    state.summary = _report_unused(state, Path(str(config.rootpath)), prune=prune)


def _report_unused(state: _SessionState, root: Path, *, prune: bool) -> list[str]:
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


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(_STATE, None)
    if state is not None and state.summary:
        terminalreporter.write_sep("-", "pyai_caching: LLM cassettes")
        for line in state.summary:
            terminalreporter.write_line(line)


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# --- fixtures ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def llm_record_mode() -> str | None:
    """The suite's record mode: redefine this fixture in a `conftest.py` to return one.

    `None` (the default) means no suite-level choice. `--llm-record-mode` on the command line wins over it, and
    it wins over a marker's `record_mode=`.
    """
    return None


@pytest.fixture
def llm_cassette_dir(request: pytest.FixtureRequest) -> Path:
    """The folder of this test's cassette: `cassettes/<test module>/` next to the test file. Redefine to move it."""
    module = Path(str(request.node.path))
    return module.parent / "cassettes" / module.stem


@pytest.fixture(scope="session")
def llm_cassette_scrubber() -> Scrubber | None:
    """A hook that scrubs your own fields (emails, names) from entries before they are written; `None` by default.

    Redefine it to return a callable that receives an entry (parsed JSON: `meta`, `request` with `header` and
    `messages`, `response`) and returns the entry to write (or `None` after editing it in place). Well-known
    secrets (API keys, authorization headers, tokens) are always scrubbed first. Scrubbing never changes which
    request an entry answers; a scrubbed response is replayed scrubbed.
    """
    return None


@pytest.fixture
def llm_cassette(
    request: pytest.FixtureRequest,
    llm_record_mode: str | None,
    llm_cassette_dir: Path,
    llm_cassette_scrubber: Scrubber | None,
) -> Iterator[Cassette]:
    """Record or replay this test's LLM responses (see the module docstring); returns the active `Cassette`."""
    from pyai_caching.engine import overrides as _overrides
    from pyai_caching.testing.cassette import CassetteStore
    from pyai_caching.types import CacheMode

    name, marker_mode = _marker_options(request.node)
    record_mode = _resolve_record_mode(request.config.getoption("llm_record_mode"), llm_record_mode, marker_mode)
    path = Path(llm_cassette_dir) / (name or _default_name(request.node.nodeid))
    existed = _existed_before(path, request.config.stash[_STATE].started)
    cache_mode = record_mode.cache_mode(cassette_exists=existed)
    nodeid = request.node.nodeid
    store = CassetteStore(path, scrub=llm_cassette_scrubber, miss_hint=_rerecord_hint(nodeid, path.is_file()))
    cassette = Cassette(
        path=path,
        record_mode=record_mode,
        cache_mode=cache_mode,
        existed=existed,
        store=store,
        nodeid=nodeid,
    )
    with contextlib.ExitStack() as stack:
        if cache_mode is CacheMode.READ_ONLY:
            from pydantic_ai.models import override_allow_model_requests

            stack.enter_context(override_allow_model_requests(False))
        stack.enter_context(_overrides.activated(store, cache_mode))
        yield cassette

    from pyai_caching.exceptions import CacheError

    try:
        recorded = store.recorded_keys()
    except CacheError:  # an unreadable cassette already failed the test
        recorded = []
    call = request.node.stash.get(_REPORTS, {}).get("call")
    usage = _Usage(
        recorded=recorded,
        used=set(store.used_keys),
        tests=[nodeid],
        all_passed=call is not None and call.passed,
    )
    request.config.stash[_STATE].add(str(path), usage)


@pytest.fixture(autouse=True)
def _llm_cassette_marker(request: pytest.FixtureRequest) -> None:
    """Activate the cassette of a test that carries the `llm_cassette` marker without requesting the fixture."""
    if request.node.get_closest_marker(_MARKER) is not None:
        request.getfixturevalue("llm_cassette")


def _marker_options(node: Any) -> tuple[str | None, Any]:
    marker = node.get_closest_marker(_MARKER)
    if marker is None:
        return None, None
    from pyai_caching.exceptions import ConfigurationError

    kwargs = dict(marker.kwargs)
    unknown = set(kwargs) - {"name", "record_mode"}
    if unknown or len(marker.args) > 1 or (marker.args and "name" in kwargs):
        raise ConfigurationError(
            f"@pytest.mark.llm_cassette takes an optional name and record_mode= (got args {marker.args!r}, "
            f"keywords {sorted(kwargs)!r})"
        )
    name = marker.args[0] if marker.args else kwargs.get("name")
    if name is not None:
        if not isinstance(name, str) or not name.strip() or "/" in name or "\\" in name or name in (".", ".."):
            raise ConfigurationError(
                f"@pytest.mark.llm_cassette name must be a file name (no folders), got {name!r}; "
                "redefine the llm_cassette_dir fixture to change the folder"
            )
        name = name if name.endswith(".json") else f"{name}.json"
    return name, kwargs.get("record_mode")


def _resolve_record_mode(cli: str | None, fixture: Any, marker: Any) -> RecordMode:
    """CLI > `llm_record_mode` fixture > marker > `none`."""
    if cli is not None:
        return RecordMode.parse(cli, source="--llm-record-mode")
    if fixture is not None:
        return RecordMode.parse(fixture, source="the llm_record_mode fixture")
    if marker is not None:
        return RecordMode.parse(marker, source="@pytest.mark.llm_cassette(record_mode=...)")
    return RecordMode.NONE


def _existed_before(path: Path, started: float) -> bool:
    """Whether `path` existed before the run started (a cassette recorded during this run does not count)."""
    try:
        return path.stat().st_mtime < started
    except FileNotFoundError:
        return False


def _default_name(nodeid: str) -> str:
    """`test_name.json` (`TestClass.test_name[param].json` for classes and parameters), safe as a file name."""
    _, _, rest = nodeid.partition("::")
    name = _UNSAFE_NAME_CHARS.sub("_", (rest or nodeid).replace("::", "."))
    if len(name) > _MAX_NAME:
        name = f"{name[: _MAX_NAME - 17]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"
    return f"{name}.json"


def _rerecord_hint(nodeid: str, existed: bool) -> str:
    target = shlex.quote(nodeid)
    if not existed:
        return f"To record it (with the model's API key set): pytest {target} --llm-record-mode=once"
    return (
        f"To record what changed: pytest {target} --llm-record-mode=new_episodes --llm-prune "
        f"(--llm-prune drops the entries no longer used), or --llm-record-mode=all to record the whole test again."
    )
