"""Helpers of the security tests: a counting model and raw access to what a store holds."""

from __future__ import annotations

from dataclasses import dataclass, field

from _agents import answer_to, last_prompt
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel


@dataclass
class Echo:
    """A model that answers `answer to <prompt>` and counts its calls."""

    calls: int = 0
    settings_seen: list[object] = field(default_factory=list)

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        self.settings_seen.append(info.model_settings)
        return ModelResponse(parts=[TextPart(answer_to(last_prompt(messages)))])

    def agent(self) -> Agent[None, str]:
        return Agent(FunctionModel(self, model_name="echo"))
