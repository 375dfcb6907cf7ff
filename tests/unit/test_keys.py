"""Keys are pure: canonical forms, stability, and a guard against pydantic-ai adding fields unnoticed."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import typing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic_ai import messages as m
from pydantic_ai.models import ModelRequestParameters
from pydantic_ai.models.function import FunctionModel
from pydantic_ai.tools import ToolDefinition

from pyai_caching import ConfigurationError
from pyai_caching._util import canonical_json as key_json
from pyai_caching._util.redact import secret_digest
from pyai_caching.engine import canonical as key_canonical
from pyai_caching.engine import fields as key_fields
from pyai_caching.engine import keys

ROOT = Path(__file__).resolve().parents[2]


def _union_classes(union: Any) -> list[type]:
    out = []
    for arg in typing.get_args(typing.get_args(union)[0]):
        cls = typing.get_args(arg)[0] if typing.get_origin(arg) is typing.Annotated else arg
        out.append(cls)
    return out


def _part_kind(cls: type) -> str:
    return next(f.default for f in dataclasses.fields(cls) if f.name == "part_kind")  # type: ignore[arg-type, return-value]


GENERIC_PART_KINDS = {
    # Kinds the key handles generically (every field but the globally volatile ones). Decided, not forgotten.
    "speech",
    "retry-feedback",
    "tool-availability-delta",
    "capability-load-delta",
    "model-settings-delta",
    "instruction-delta",
    "instruction-baseline",
    "compaction",
    "capability",
}


@pytest.mark.parametrize(
    "cls",
    sorted({*_union_classes(m.ModelRequestPart), *_union_classes(m.ModelResponsePart)}, key=lambda c: c.__name__),
    ids=lambda c: c.__name__,
)
def test_every_part_field_is_decided(cls: type) -> None:
    """Fails when pydantic-ai adds a part kind or a field: decide whether it belongs in the key."""
    kind = _part_kind(cls)
    if kind in GENERIC_PART_KINDS:
        assert kind not in key_fields.PART_FIELDS
        return
    assert kind in key_fields.PART_FIELDS, f"new part kind {kind!r} ({cls.__name__}): add it to key_fields.PART_FIELDS"
    counted, ignored = key_fields.PART_FIELDS[kind]
    fields = {f.name for f in dataclasses.fields(cls)}
    undecided = fields - counted - ignored
    assert not undecided, f"{cls.__name__} has fields not listed in key_fields.PART_FIELDS[{kind!r}]: {undecided}"


@pytest.mark.parametrize(("cls", "kind"), [(m.ModelRequest, "request"), (m.ModelResponse, "response")])
def test_every_message_field_is_decided(cls: type, kind: str) -> None:
    counted, ignored = key_fields.MESSAGE_FIELDS[kind]
    undecided = {f.name for f in dataclasses.fields(cls)} - counted - ignored
    assert not undecided, f"{cls.__name__} has new fields: {undecided}; list them in key_fields.MESSAGE_FIELDS"


def test_every_tool_definition_and_parameter_field_is_decided() -> None:
    tool_fields = {f.name for f in dataclasses.fields(ToolDefinition)}
    assert tool_fields == set(key_fields.TOOL_DEFINITION_FIELDS) | key_fields.TOOL_DEFINITION_IGNORED
    param_fields = {f.name for f in dataclasses.fields(ModelRequestParameters)}
    handled = {"function_tools", "output_tools", "native_tools", "instruction_parts"}
    assert param_fields == set(key_fields.PARAMETER_FIELDS) | handled | key_fields.PARAMETER_IGNORED


def _history(t0: datetime, ids: tuple[str, str]) -> list[m.ModelMessage]:
    return [
        m.ModelRequest(parts=[m.UserPromptPart("weather in Paris and Rome?", timestamp=t0)], run_id="r1"),
        m.ModelResponse(
            parts=[
                m.ToolCallPart("weather", {"city": "Paris"}, tool_call_id=ids[0]),
                m.ToolCallPart("weather", {"city": "Rome"}, tool_call_id=ids[1]),
            ],
            usage=m.RequestUsage(input_tokens=5) if hasattr(m, "RequestUsage") else None,  # type: ignore[arg-type]
            timestamp=t0,
            provider_response_id="resp_1",
            model_name="gpt-x",
        ),
        m.ModelRequest(
            parts=[
                m.ToolReturnPart("weather", "sunny", tool_call_id=ids[0], timestamp=t0),
                m.ToolReturnPart("weather", "rainy", tool_call_id=ids[1], timestamp=t0),
            ]
        ),
    ]


def _key(messages: list[m.ModelMessage], settings: Any = None, params: ModelRequestParameters | None = None) -> str:
    model = FunctionModel(lambda *_: m.ModelResponse(parts=[]), model_name="test-model")
    canonical = key_canonical.canonical_request(model, messages, settings, params or ModelRequestParameters())
    return keys.request_digest(canonical, "default")


def test_volatile_fields_do_not_change_the_key() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    a = _key(_history(t0, ("call_abc", "call_def")))
    b = _key(_history(t0 + timedelta(days=3), ("pyd_ai_123", "pyd_ai_456")))
    assert a == b


def test_tool_call_pairing_is_kept() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    straight = _history(t0, ("a", "b"))
    crossed = _history(t0, ("a", "b"))
    returns = crossed[2].parts
    crossed[2] = m.ModelRequest(
        parts=[
            dataclasses.replace(returns[0], tool_call_id="b"),  # type: ignore[type-var]
            dataclasses.replace(returns[1], tool_call_id="a"),  # type: ignore[type-var]
        ]
    )
    assert _key(straight) != _key(crossed)


def test_content_changes_change_the_key() -> None:
    base = [m.ModelRequest(parts=[m.UserPromptPart("hello")])]
    assert _key(base) != _key([m.ModelRequest(parts=[m.UserPromptPart("hello!")])])
    assert _key(base, {"temperature": 0.1}) != _key(base, {"temperature": 0.2})
    assert _key(base, {"temperature": 0.1}) == _key(base, {"temperature": 0.1, "timeout": 3, "max_retries": 2})


def test_secrets_in_settings_never_reach_the_canonical_form() -> None:
    settings: Any = {
        "temperature": 0.3,
        "extra_headers": {"Authorization": "Bearer sk-secret-123"},
        "openai_api_key": "sk-secret-456",
    }
    model = FunctionModel(lambda *_: m.ModelResponse(parts=[]), model_name="x")
    canonical = key_canonical.canonical_request(model, [], settings, ModelRequestParameters())
    text = key_json.dumps_canonical(canonical.to_json_obj())
    assert "sk-secret" not in text
    assert canonical.header["settings"] == {"temperature": 0.3, "openai_api_key": secret_digest("sk-secret-456")}


def test_key_is_stable_across_processes_and_hash_seeds() -> None:
    code = (
        f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_keys import _history, _key\n"
        "from datetime import datetime, UTC\n"
        "history = _history(datetime(2026, 1, 1, tzinfo=UTC), ('x', 'y'))\n"
        "print(_key(history, {'temperature': 0.5, 'stop_sequences': ['a']}))"
    )
    results = set()
    for seed in ("0", "1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
        results.add(out.stdout.strip())
    assert len(results) == 1
    from datetime import datetime as dt

    assert results == {
        _key(_history(dt(2026, 1, 1, tzinfo=UTC), ("x", "y")), {"temperature": 0.5, "stop_sequences": ["a"]})
    }


def test_key_survives_json_round_trip_of_history() -> None:
    history = _history(datetime.now(UTC), ("id1", "id2"))
    reloaded = m.ModelMessagesTypeAdapter.validate_json(m.ModelMessagesTypeAdapter.dump_json(history))
    assert _key(history) == _key(reloaded)


def test_fragment_digest_equals_whole_digest() -> None:
    history = _history(datetime.now(UTC), ("id1", "id2"))
    model = FunctionModel(lambda *_: m.ModelResponse(parts=[]), model_name="x")
    canonical = key_canonical.canonical_request(model, history, None, ModelRequestParameters())
    whole = keys.request_digest(canonical, "ns")
    fragments = [json.dumps(x, sort_keys=True, separators=(",", ":"), ensure_ascii=False) for x in canonical.messages]
    parts = keys.digest_json("ns", key_json.dumps_canonical(canonical.header), "[" + ",".join(fragments) + "]")
    assert whole == parts


@pytest.mark.parametrize("bad", ["", "a:b", "a*", "{x}", "with space", "x" * 65, "-lead", "ü"])
def test_bad_namespaces_are_rejected(bad: str) -> None:
    with pytest.raises(ConfigurationError, match="namespace"):
        keys.validate_namespace(bad)


@pytest.mark.parametrize("good", ["default", "tenant-1", "prod.eu_west", "A" * 64])
def test_good_namespaces(good: str) -> None:
    assert keys.validate_namespace(good) == good
    assert keys.entry_key(good, "r", "ab").startswith(keys.namespace_prefix(good))
