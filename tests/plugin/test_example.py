"""The example project under examples/recorded_tests replays its committed cassettes (no model, no key)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "recorded_tests"


def test_the_example_replays_its_committed_cassettes(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_CACHE_DIR", str(tmp_path / "local-cache"))
    for name in ("LLM_CACHE_REDIS_URL", "LLM_CACHE_SECRET", "PROFILES_REAL_MODEL"):
        monkeypatch.delenv(name, raising=False)
    shutil.copytree(EXAMPLE, pytester.path, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    before = {p: p.read_bytes() for p in pytester.path.rglob("*.json")}
    assert len(before) == 2

    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)
    assert {p: p.read_bytes() for p in pytester.path.rglob("*.json")} == before, "replaying never writes"
