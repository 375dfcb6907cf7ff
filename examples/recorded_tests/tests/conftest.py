"""Test configuration of the example.

This example ships cassettes recorded with a *stand-in* model, so that it runs anywhere without an API key and
without the `openai` package. In your own project you do not need any of this file: your agents use the real
model, `pytest --llm-record-mode=once` records with your API key, and CI replays. Set `PROFILES_REAL_MODEL=1`
to see that flow here (see README.md).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest
from profiles import MODEL, profile_agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart, ToolCallPart
from pydantic_ai.models import Model
from pydantic_ai.models.function import AgentInfo, FunctionModel

REAL_MODEL = bool(os.environ.get("PROFILES_REAL_MODEL"))


def _stand_in(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
    """Answers like the real model did, for the example only."""
    if info.output_tools:
        profile = {
            "name": "Ada Lovelace",
            "born": 1815,
            "known_for": "Writing the first published program, for Charles Babbage's Analytical Engine",
        }
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, profile)])
    return ModelResponse(parts=[TextPart("Ada Lovelace wrote the first published computer program.")])


@pytest.fixture
def model() -> Model | str:
    """The model the tests use: the real one with PROFILES_REAL_MODEL=1, else the example's stand-in."""
    return MODEL if REAL_MODEL else FunctionModel(_stand_in, model_name="stand-in")


@pytest.fixture(autouse=True)
def _use_model(model: Any) -> Iterator[None]:
    if REAL_MODEL:
        yield
        return
    with profile_agent.override(model=model):
        yield
