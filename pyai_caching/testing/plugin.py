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

from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pyai_caching.testing import miss_reports, placeholder_env
from pyai_caching.testing.fixture import Cassette, active, new_cassette, usage_of
from pyai_caching.testing.options import MARKER, MARKER_HELP, add_options
from pyai_caching.testing.record_modes import RecordMode
from pyai_caching.testing.usage import REPORTS, STATE, WORKER_OUTPUT_KEY, CassetteUsage, SessionState, report_unused

if TYPE_CHECKING:
    from pyai_caching._util.scrub import Scrubber

__all__ = ["Cassette", "RecordMode"]

# --- hooks: options, session, reports -----------------------------------------------------------------------


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: pytest.Config) -> None:
    """Before any conftest or test module is imported: placeholder API keys when the run replays."""
    placeholder_env.fill(early_config, getattr(early_config.known_args_namespace, "llm_record_mode", None))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    config.stash[STATE] = SessionState()
    placeholder_env.fill(config, config.getoption("llm_record_mode"))  # when loaded after the conftests (-p)


def pytest_unconfigure(config: pytest.Config) -> None:
    placeholder_env.restore(config)


def pytest_report_header(config: pytest.Config) -> list[str]:
    return placeholder_env.header(config)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    miss = miss_reports.is_cache_miss(call.excinfo)
    if miss and not item.config.getoption("fulltrace", False):
        call.excinfo = miss_reports.without_library_frames(call.excinfo)
    report: pytest.TestReport = yield
    if miss:
        miss_reports.name_the_miss(report, call.excinfo)
    if "llm_cassette" in getattr(item, "fixturenames", ()) or item.get_closest_marker(MARKER) is not None:
        item.stash.setdefault(REPORTS, {})[report.when] = report
    return report


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node: Any, error: Any) -> None:
    """xdist controller: merge what a worker's tests did with their cassettes."""
    data = getattr(node, "workeroutput", {}).get(WORKER_OUTPUT_KEY)
    if data:
        state = node.config.stash[STATE]
        for path, usage in data.items():
            state.add(path, CassetteUsage.from_json(usage))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    config = session.config
    state = config.stash.get(STATE, None)
    if state is None or not state.usage:
        return
    workeroutput = getattr(config, "workeroutput", None)
    if workeroutput is not None:  # an xdist worker: the controller reports and prunes
        workeroutput[WORKER_OUTPUT_KEY] = {p: u.to_json() for p, u in state.usage.items()}
        return
    prune = bool(config.getoption("llm_prune")) and exitstatus != pytest.ExitCode.INTERRUPTED
    state.summary = report_unused(state, Path(str(config.rootpath)), prune=prune)


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(STATE, None)
    if state is not None and state.summary:
        terminalreporter.write_sep("-", "pyai_caching: LLM cassettes")
        for line in state.summary:
            terminalreporter.write_line(line)


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
    cassette = new_cassette(request, llm_record_mode, llm_cassette_dir, llm_cassette_scrubber)
    with active(cassette):
        yield cassette
    request.config.stash[STATE].add(str(cassette.path), usage_of(cassette, request.node))


@pytest.fixture(autouse=True)
def _llm_cassette_marker(request: pytest.FixtureRequest) -> None:
    """Activate the cassette of a test that carries the `llm_cassette` marker without requesting the fixture."""
    if request.node.get_closest_marker(MARKER) is not None:
        request.getfixturevalue("llm_cassette")
