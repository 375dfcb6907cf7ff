"""Replaying is easy to read and easy to set up: a miss shows its diff without the library's frames, and agents
built from a model name (`Agent("openai:gpt-4o")` at module level) are collected and replayed with no API key."""

from __future__ import annotations

import os
from pathlib import Path

import pydantic_ai
import pydantic_graph
import pytest
from _openai_stub import ANSWER, openai_stand_in
from _project import INI, make_project

import pyai_caching
import pyai_caching.api
import pyai_caching.capability
import pyai_caching.testing.cassette
from pyai_caching.testing.placeholder_keys import PLACEHOLDER, PROVIDER_KEYS

# The modules the inner sessions use are imported here, before pytester snapshots `sys.modules`: its restore after
# each inner session cannot then leave two copies of them (issue 14: lazy imports meet pytester's restore).
KEY_NAMES = [name for names in PROVIDER_KEYS for name in names]
LIBRARY_FOLDERS = tuple(
    str(Path(m.__file__ or "").parent) + os.sep for m in (pyai_caching, pydantic_ai, pydantic_graph)
)


@pytest.fixture(autouse=True)
def _environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_CACHE_DIR", str(tmp_path / "local-cache"))
    for name in ("LLM_CACHE_REDIS_URL", "LLM_CACHE_SECRET", "STAND_IN", "PROMPT", "OPENAI_BASE_URL", *KEY_NAMES):
        monkeypatch.delenv(name, raising=False)


def run(pytester: pytest.Pytester, *args: str, **env: str) -> pytest.RunResult:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        return pytester.runpytest_inprocess("-p", "no:randomly", *args)


# --- a replay miss -----------------------------------------------------------------------------------------------


def test_a_replay_miss_shows_its_diff_without_the_librarys_frames(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    run(pytester, "--llm-record-mode=once", "-k", "test_profile").assert_outcomes(passed=1, deselected=2)

    changed = {"STAND_IN": "fail", "PROMPT": "Make a profile for Grace"}
    result = run(pytester, "-k", "test_profile", "-rf", COLUMNS="80", **changed)

    result.assert_outcomes(failed=1, deselected=2)
    lines = result.stdout.lines
    start = next(i for i, line in enumerate(lines) if "_ test_profile _" in line)
    first_error = next(i for i, line in enumerate(lines) if line.startswith("E   "))
    traceback = lines[start:first_error]
    assert not [line for line in traceback if any(folder in line for folder in LIBRARY_FOLDERS)]
    assert "agents.py:" in "\n".join(lines[first_error:])  # the last frame shown is the user's call
    assert first_error - start < 25, "\n".join(traceback)
    explanation = "\n".join(lines[first_error : first_error + 20])
    assert "content: 'Make a profile for Ada' -> 'Make a profile for Grace'" in explanation
    assert "Diff of the canonical requests" in explanation
    result.stdout.fnmatch_lines(["FAILED test_agents.py::test_profile - CacheMissError: no cached response*"])
    summary = next(line for line in lines if line.startswith("FAILED"))
    assert len(summary) <= 80 or os.environ.get("CI")  # on CI, pytest prints the whole message
    assert "pyai_caching.exceptions" not in summary

    full = run(pytester, "-k", "test_profile", "--full-trace", **changed)
    assert any(folder in full.stdout.str() for folder in LIBRARY_FOLDERS)


def test_other_failures_keep_their_traceback(pytester: pytest.Pytester) -> None:
    make_project(pytester, "from agents import make_profile\n\nasync def test_plain():\n    assert 1 == 2\n")
    result = run(pytester)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["E       assert 1 == 2"])


# --- placeholder keys --------------------------------------------------------------------------------------------

OPENAI_TESTS = f"""
import pytest
from pydantic_ai import Agent

from pyai_caching import cached_agent_run

agent = Agent("openai:gpt-4o")  # at import: pydantic-ai needs OPENAI_API_KEY to build it


@pytest.mark.llm_cassette
async def test_hello():
    assert await cached_agent_run(agent, "Say hello", "hello") == {ANSWER!r}
"""


def test_a_module_level_agent_of_a_real_provider_replays_with_no_key(pytester: pytest.Pytester) -> None:
    make_project(pytester, OPENAI_TESTS, name="test_openai")
    with openai_stand_in() as (base_url, requests):
        recorded = run(pytester, "--llm-record-mode=once", OPENAI_API_KEY="sk-recording-key", OPENAI_BASE_URL=base_url)
    recorded.assert_outcomes(passed=1)
    assert len(requests) == 1
    cassette = pytester.path / "cassettes" / "test_openai" / "test_hello.json"
    assert "sk-recording-key" not in cassette.read_text(encoding="utf-8")

    # No key and no server: the endpoint is part of the key (another base URL is another deployment), so the
    # replay names the one that was recorded, which is no longer listening.
    replayed = run(pytester, OPENAI_BASE_URL=base_url)

    replayed.assert_outcomes(passed=1)
    replayed.stdout.fnmatch_lines(
        [
            f"pyai_caching: replay mode: placeholder keys in {len(PROVIDER_KEYS)} unset API key variables "
            "(OPENAI_API_KEY, ANTHROPIC_API_KEY, GOOGLE_API_KEY, ...; -v lists them); no model request leaves in "
            "replay (ini llm_placeholder_keys = false turns this off)"
        ]
    )
    assert not [name for name in KEY_NAMES if name in os.environ]  # restored when the session ended
    verbose = run(pytester, "-v", OPENAI_BASE_URL=base_url)
    verbose.assert_outcomes(passed=1)
    assert ", ".join(names[0] for names in PROVIDER_KEYS) in verbose.stdout.str()


def test_placeholders_fill_only_unset_variables(pytester: pytest.Pytester) -> None:
    make_project(
        pytester,
        "import os\n\ndef test_keys():\n"
        f"    assert os.environ['OPENAI_API_KEY'] == {PLACEHOLDER!r}\n"
        "    assert os.environ['ANTHROPIC_API_KEY'] == 'sk-ant-mine'\n"
        "    assert os.environ['GEMINI_API_KEY'] == 'gemini-mine'\n"
        "    assert 'GOOGLE_API_KEY' not in os.environ  # the provider reads either: the set one is enough\n"
        f"    assert os.environ['GROQ_API_KEY'] == {PLACEHOLDER!r}  # empty counts as unset\n",
        name="test_placeholder_values",
    )
    result = run(pytester, ANTHROPIC_API_KEY="sk-ant-mine", GEMINI_API_KEY="gemini-mine", GROQ_API_KEY="")
    result.assert_outcomes(passed=1)
    assert "OPENAI_API_KEY" not in os.environ


def test_recording_or_opting_out_sets_no_placeholder(pytester: pytest.Pytester) -> None:
    make_project(pytester, OPENAI_TESTS, name="test_openai")
    recording = run(pytester, "--llm-record-mode=once")  # recording needs the real key: none is invented
    recording.assert_outcomes(errors=1)
    recording.stdout.fnmatch_lines(["*UserError: Set the `OPENAI_API_KEY` environment variable*"])
    assert "placeholder keys" not in recording.stdout.str()

    pytester.makeini(INI + "llm_placeholder_keys = false\n")
    opted_out = run(pytester)
    opted_out.assert_outcomes(errors=1)
    assert "placeholder keys" not in opted_out.stdout.str()
