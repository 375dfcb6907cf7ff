"""Bounded error texts: long values lose their middle, so a message keeps what failed and how to fix it."""

from __future__ import annotations

import pytest

from pyai_caching._util.text import shorten

PATH = "/tmp/" + "deep-folder/" * 40 + "c.json"
MESSAGE = (
    f"cassette {PATH} is not valid JSON (line 1); fix it (a merge conflict?) or delete it and record the test again"
)


def test_a_short_text_is_kept_whole() -> None:
    assert shorten("cache get failed: timeout") == "cache get failed: timeout"


def test_a_long_value_loses_its_middle_and_the_hint_at_the_end_survives() -> None:
    text = shorten(MESSAGE)
    assert text.startswith("cassette /tmp/deep-folder/")
    assert "c.json is not valid JSON (line 1); fix it (a merge conflict?)" in text
    assert text.endswith("or delete it and record the test again")
    assert "…" in text
    assert len(text) < len(MESSAGE)


@pytest.mark.parametrize("limit", [10, 50, 300])
@pytest.mark.parametrize("text", ["x" * 1000, "word " * 400, MESSAGE * 5])
def test_the_result_never_exceeds_the_limit_and_keeps_both_ends(text: str, limit: int) -> None:
    result = shorten(text, limit)
    assert len(result) <= limit
    assert result[:3] == text[:3]
    assert result[-3:] == text[-3:]
