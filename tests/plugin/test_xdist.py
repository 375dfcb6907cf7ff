"""The plugin under pytest-xdist: workers record and replay their own cassettes; the controller reports and prunes.

The inner sessions run in a subprocess (`-n 2` starts two worker processes). Both workers share one cassette
through `@pytest.mark.llm_cassette("shared")`, so concurrent writers of one file are exercised too.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from _project import make_project

TESTS = """
import pytest

from agents import make_profile


@pytest.mark.parametrize("who", ["Ada", "Grace", "Edsger", "Barbara"])
async def test_own(llm_cassette, who):
    assert (await make_profile(f"Profile for {who}")).name == "Ada"


@pytest.mark.parametrize("who", ["Alan", "Margaret", "Donald", "Frances"])
@pytest.mark.llm_cassette("shared")
async def test_shared(who):
    assert (await make_profile(f"Profile for {who}")).name == "Ada"
"""


@pytest.fixture(autouse=True)
def _environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_CACHE_DIR", str(tmp_path / "local-cache"))
    for name in ("LLM_CACHE_REDIS_URL", "LLM_CACHE_SECRET", "STAND_IN", "PROMPT"):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.slow
def test_record_replay_and_prune_with_two_workers(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    make_project(pytester, TESTS)
    folder = pytester.path / "cassettes" / "test_agents"

    recorded = pytester.runpytest_subprocess("-n", "2", "--llm-record-mode=once")
    recorded.assert_outcomes(passed=8)
    assert len(list(folder.glob("test_own*.json"))) == 4
    shared = json.loads((folder / "shared.json").read_text(encoding="utf-8"))
    assert len(shared["entries"]) == 4, "two workers recording into one cassette keep every entry"

    monkeypatch.setenv("STAND_IN", "fail")
    replayed = pytester.runpytest_subprocess("-n", "2")
    replayed.assert_outcomes(passed=8)
    assert "unused" not in replayed.stdout.str(), "entries used on either worker count as used"

    extra = dict(shared["entries"][0])
    extra["key"] = extra["key"][:-3] + "00}"
    shared["entries"].append(extra)
    (folder / "shared.json").write_text(json.dumps(shared, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    pruned = pytester.runpytest_subprocess("-n", "2", "--llm-prune")
    pruned.assert_outcomes(passed=8)
    pruned.stdout.fnmatch_lines(["cassettes/test_agents/shared.json: pruned 1 unused entry (4 left)"])
    assert len(json.loads((folder / "shared.json").read_text(encoding="utf-8"))["entries"]) == 4
