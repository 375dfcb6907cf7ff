"""pydantic-ai's internals that the library reads, all in `pyai_caching.engine.pai_compat`, checked against the pinned
pydantic-ai. A rename there must fail here, loudly, rather than silently turn the fast path off, or (worse) make it
ignore something such as `agent.override()`."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path
from typing import Any

import pydantic_ai
import pytest
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
from pydantic_ai.models.function import AgentInfo, FunctionModel
from pydantic_ai.models.test import TestModel

import pyai_caching
from pyai_caching import MemoryStore, cached_agent_run
from pyai_caching.engine import pai_compat

PACKAGE = Path(pyai_caching.__file__).parent


def test_every_private_agent_attribute_read_exists() -> None:
    agent = Agent(TestModel())
    missing = [name for name in pai_compat.PRIVATE_AGENT_ATTRIBUTES if name not in vars(agent)]
    assert not missing, f"pydantic-ai {pydantic_ai.__version__} renamed Agent attributes: {missing}"


def test_every_private_stream_attribute_used_exists() -> None:
    from pydantic_ai.models import ModelRequestParameters, StreamedResponse
    from pydantic_ai.models.function import FunctionStreamedResponse

    async def nothing() -> Any:
        return
        yield

    stream = FunctionStreamedResponse(ModelRequestParameters(), _model_name="m", _iter=nothing())
    missing = [name for name in pai_compat.PRIVATE_STREAM_ATTRIBUTES if not hasattr(stream, name)]
    assert not missing, f"pydantic-ai {pydantic_ai.__version__} renamed StreamedResponse attributes: {missing}"
    assert "_get_event_iterator" in StreamedResponse.__abstractmethods__
    assert callable(pai_compat.ModelResponsePartsManager(model_request_parameters=ModelRequestParameters()).apply_event)
    assert callable(pai_compat.StreamRestorer().restore)


def test_every_public_attribute_read_exists() -> None:
    agent = Agent(TestModel(), model_settings={"temperature": 0.0})
    missing = [name for name in pai_compat.PUBLIC_AGENT_PROPERTIES if not hasattr(agent, name)]
    assert not missing


def test_every_override_variable_is_found() -> None:
    # The variables Agent.__init__ declares, read from pydantic-ai's source, against those found on an instance.
    source = inspect.getsource(Agent.__init__)
    declared = set(re.findall(r"self\.(_override_\w+)\s*(?::|=)", source))
    found = {v.name for v in pai_compat.override_variables(Agent(TestModel()))}
    assert declared, "Agent.__init__ no longer declares _override_* context variables: read agent.override() again"
    assert found == declared


def test_the_internals_imported_from_pydantic_ai_exist() -> None:
    from pydantic_ai._agent_graph import GraphAgentState, _gather_output
    from pydantic_ai._run_context import get_current_run_context

    assert callable(_gather_output)
    assert callable(get_current_run_context)
    assert {"run_id", "conversation_id", "metadata", "message_history"} <= set(vars(GraphAgentState()))
    assert callable(Agent(TestModel())._prepare_output_schema)


def test_no_other_module_reads_pydantic_ai_internals() -> None:
    offenders = [
        f"{path.relative_to(PACKAGE)}: from {node.module}"
        for path in PACKAGE.rglob("*.py")
        if path.name != "pai_compat.py"
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pydantic_ai._")
    ]
    assert not offenders


def _echo(tag: str) -> FunctionModel:
    """A model whose answer shows what it was sent: its own tag, the instructions and the settings."""

    def answer(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        return ModelResponse(parts=[TextPart(f"{tag}|{info.instructions}|{info.model_settings}")])

    return FunctionModel(answer, model_name=tag)


@pytest.mark.parametrize("override", ["model", "instructions", "model_settings"])
async def test_an_override_is_never_answered_by_the_fast_path(override: str) -> None:
    agent = Agent(_echo("plain"), instructions="be brief")
    store = MemoryStore()
    assert await cached_agent_run(agent, "q", "t", store=store) == (await agent.run("q")).output
    changed = {
        "model": {"model": _echo("other")},
        "instructions": {"instructions": "be long"},
        "model_settings": {"model_settings": {"temperature": 0.5}},
    }[override]
    with agent.override(**changed):  # type: ignore[arg-type]
        expected = (await agent.run("q")).output
        assert await cached_agent_run(agent, "q", "t", store=store) == expected
