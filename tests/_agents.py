"""Real pydantic-ai agents for the tests, driven by `FunctionModel`s that count their calls."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, ToolCallPart, UserPromptPart
from pydantic_ai.models.function import AgentInfo, DeltaToolCall, FunctionModel
from pydantic_ai.usage import RequestUsage


def last_prompt(messages: list[ModelMessage]) -> str:
    """The text of the last user prompt in `messages` (empty if there is none)."""
    for message in reversed(messages):
        if isinstance(message, ModelRequest):
            for part in message.parts:
                if isinstance(part, UserPromptPart) and isinstance(part.content, str):
                    return part.content
    return ""


def answer_to(prompt: str) -> str:
    """What the echoing test models answer to `prompt`."""
    return f"answer to {prompt}"


@dataclass
class Counter:
    """A model function that answers from a fixed payload and counts how often it is called."""

    payload: Any = field(default_factory=lambda: {"name": "Ada", "age": 36})
    """What the model answers: args of the output tool, or text when the agent outputs `str`."""
    calls: int = 0
    """Model calls so far."""
    seen: list[list[ModelMessage]] = field(default_factory=list)
    """The messages of every call."""

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        self.seen.append(messages)
        usage = RequestUsage(input_tokens=100, output_tokens=20)
        if info.output_tools:
            return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, self._args(info))], usage=usage)
        text = self.payload if isinstance(self.payload, str) else json.dumps(self.payload)
        return ModelResponse(parts=[TextPart(text)], usage=usage)

    def _args(self, info: AgentInfo) -> Any:
        if not isinstance(self.payload, str):
            return self.payload
        properties = info.output_tools[0].parameters_json_schema.get("properties", {})
        return {"name": self.payload, "age": 1} if "name" in properties else {"response": self.payload}

    async def stream(self, messages: list[ModelMessage], info: AgentInfo) -> Any:
        self.calls += 1
        if info.output_tools:
            yield {0: DeltaToolCall(name=info.output_tools[0].name, json_args=json.dumps(self._args(info)))}
        else:
            text = self.payload if isinstance(self.payload, str) else json.dumps(self.payload)
            for i in range(0, len(text), 4):
                yield text[i : i + 4]

    def model(self, name: str = "test-model") -> FunctionModel:
        """A FunctionModel calling this counter (streaming too)."""
        return FunctionModel(self, stream_function=self.stream, model_name=name)


def make_agent(counter: Counter, output_type: Any = str, **kwargs: Any) -> Agent[Any, Any]:
    """An agent on `counter`'s model."""
    return Agent(counter.model(), output_type=output_type, **kwargs)
