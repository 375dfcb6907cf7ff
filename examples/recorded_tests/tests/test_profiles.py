"""Tests that run the real agent; their model responses are replayed from tests/cassettes/."""

from __future__ import annotations

from typing import Any

import pytest
from profiles import make_profile
from pydantic_ai import Agent


@pytest.mark.llm_cassette
async def test_make_profile() -> None:
    # make_profile uses cached_agent_run: the marker is enough, the code under test is unchanged.
    profile = await make_profile("Ada Lovelace")
    assert profile.born == 1815
    assert "Babbage" in profile.known_for


async def test_one_sentence_summary(llm_cassette: Any, model: Any) -> None:
    # A plain Agent built in the test gets the cassette through a capability.
    agent = Agent(model, instructions="Answer in one sentence.", capabilities=[llm_cassette.capability()])
    result = await agent.run("Who was Ada Lovelace?")
    assert "Ada Lovelace" in result.output
