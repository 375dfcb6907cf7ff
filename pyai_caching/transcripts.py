"""Turning a plain transcript into pydantic-ai message history.

`transcript_history` accepts, mixed freely:

* `{"role": "user" | "assistant" | "system", "content": "..."}` dicts,
* plain strings (user turns),
* `pyai_caching.types.ModelMessage(role, content)` records,
* pydantic-ai messages (`ModelRequest` / `ModelResponse`), passed through unchanged.

A custom `message_converter(list) -> list` may first turn any other shape into those forms.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from pydantic_ai.messages import (
    ModelMessage as PydanticAIMessage,
)
from pydantic_ai.messages import (
    ModelRequest,
    ModelResponse,
    SystemPromptPart,
    TextPart,
    UserPromptPart,
)

from pyai_caching.exceptions import ConfigurationError
from pyai_caching.types import ModelMessage

__all__ = ["MessageConverter", "default_message_converter", "to_history"]

MessageConverter = Callable[[list[Any]], Sequence[Any]]
"""A callable that turns a transcript (a list of anything) into a list of the accepted message forms."""

_ROLES = ("user", "assistant", "system")


def _one(index: int, item: Any) -> PydanticAIMessage:
    if isinstance(item, ModelRequest | ModelResponse):
        return item
    if isinstance(item, str):
        return ModelRequest(parts=[UserPromptPart(item)])
    if isinstance(item, ModelMessage):
        role, content = item.role, item.content
    elif isinstance(item, Mapping):
        missing = [k for k in ("role", "content") if k not in item]
        if missing:
            raise ConfigurationError(
                f"transcript_history[{index}]: a message dict needs 'role' and 'content'; missing {missing}"
            )
        role, content = item["role"], item["content"]
    else:
        raise ConfigurationError(
            f"transcript_history[{index}]: unsupported message of type {type(item).__name__}; use a "
            "{'role': ..., 'content': ...} dict, a string (user turn), pyai_caching.types.ModelMessage, a "
            "pydantic-ai ModelRequest/ModelResponse, or pass message_converter="
        )
    if role not in _ROLES:
        raise ConfigurationError(
            f"transcript_history[{index}]: unknown role {role!r}; expected one of {', '.join(_ROLES)}"
        )
    if not isinstance(content, str):
        raise ConfigurationError(f"transcript_history[{index}]: content must be a string, got {type(content).__name__}")
    if role == "user":
        return ModelRequest(parts=[UserPromptPart(content)])
    if role == "system":
        return ModelRequest(parts=[SystemPromptPart(content)])
    return ModelResponse(parts=[TextPart(content)])


def default_message_converter(items: list[Any]) -> list[PydanticAIMessage]:
    """Convert every accepted message form to pydantic-ai messages; raise `ValueError` naming the bad index."""
    return [_one(i, item) for i, item in enumerate(items)]


def to_history(transcript: Sequence[Any] | None, converter: MessageConverter | None = None) -> list[PydanticAIMessage]:
    """`transcript` (optionally pre-converted by `converter`) as pydantic-ai message history."""
    if transcript is None:
        return []
    if isinstance(transcript, str | bytes) or not isinstance(transcript, Sequence):
        raise ConfigurationError(f"transcript_history must be a list of messages, got {type(transcript).__name__}")
    items = list(transcript)
    if converter is not None:
        if not callable(converter):
            raise ConfigurationError(f"message_converter must be callable, got {type(converter).__name__}")
        converted = converter(items)
        if isinstance(converted, str | bytes) or not isinstance(converted, Sequence):
            raise ConfigurationError(
                f"message_converter must return a list of messages, got {type(converted).__name__}"
            )
        items = list(converted)
    return default_message_converter(items)
