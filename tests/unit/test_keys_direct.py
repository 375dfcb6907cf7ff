"""The direct canonical form (read from message attributes) equals the reference form (pydantic-ai's own dump).

`key_canonical.canonical_messages` skips pydantic-ai's serializer for plain messages; these tests pin that the result
is the same, key order included, for every message class and value shape it may see.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_ai import messages as m

from pyai_caching._util import canonical_json as key_json
from pyai_caching.engine import canonical as key_canonical
from pyai_caching.engine import keys


class Color(StrEnum):
    RED = "red"


class Point(BaseModel):
    x: int
    y: float


@dataclass
class Box:
    width: int


def _reference(messages: list[Any]) -> list[dict[str, Any]]:
    return key_canonical.canonical_dumped_messages(m.ModelMessagesTypeAdapter.dump_python(messages, mode="json"))


def _same(messages: list[Any]) -> None:
    direct = key_canonical.canonical_messages(messages)
    reference = _reference(messages)
    assert json.dumps(direct) == json.dumps(reference)
    assert key_json.dumps_canonical(direct) == key_json.dumps_canonical(reference)


ARG_VALUES: list[Any] = [
    {"city": "Paris", "days": 3},
    '{"city": "Paris"}',
    None,
    {},
    {"nested": {"list": [1, 2.5, True, None, "x", {"deep": []}]}},
    {"ratio": 0.1, "big": 10**30, "neg": -0.0},
    {"unicode": "héllo ✓ \u2028", "ctrl": 'a\nb\tc"d\\'},
]

CONTENT_VALUES: list[Any] = [
    "plain text",
    "",
    {"id": 1, "name": "Ada"},
    [1, "two", {"three": 3}],
    [{"kind": "x", "timestamp": "t", "id": "i", "value": 1}],
    {"kind": "thing", "id": "dropped", "value": 2},
    42,
    3.5,
    True,
    None,
    # Not plain data: the reference path must be taken, and the result must still match.
    float("inf"),
    float("nan"),
    (1, 2),
    {1: "int key"},
    Color.RED,
    Point(x=1, y=2.0),
    Box(width=3),
    datetime(2026, 1, 1, tzinfo=UTC),
    b"bytes",
    {"set": {1, 2}},
]


@pytest.mark.parametrize("args", ARG_VALUES, ids=repr)
def test_tool_call_args(args: Any) -> None:
    _same(
        [
            m.ModelRequest(parts=[m.UserPromptPart("go")]),
            m.ModelResponse(parts=[m.ToolCallPart("lookup", args, tool_call_id="abc")]),
        ]
    )


@pytest.mark.parametrize("content", CONTENT_VALUES, ids=repr)
def test_tool_return_content(content: Any) -> None:
    _same(
        [
            m.ModelResponse(parts=[m.ToolCallPart("lookup", {"q": 1}, tool_call_id="abc")]),
            m.ModelRequest(parts=[m.ToolReturnPart("lookup", content, tool_call_id="abc")]),
        ]
    )


def test_every_common_part_kind_and_field() -> None:
    messages: list[Any] = [
        m.ModelRequest(
            parts=[
                m.SystemPromptPart("You are terse."),
                m.SystemPromptPart("Request scope.", scope="request"),
                m.UserPromptPart("Hello"),
            ],
            instructions="Be brief.",
            run_id="run-1",
            metadata={"trace": "x"},
        ),
        m.ModelResponse(
            parts=[
                m.ThinkingPart("thinking...", id="t1", signature="sig"),
                m.TextPart("Let me check.", id="p1"),
                m.ToolCallPart("a", {"x": 1}, tool_call_id="c1", tool_kind="custom"),
                m.ToolCallPart("b", '{"y": 2}', tool_call_id="c2"),
            ],
            model_name="gpt-x",
            provider_name="p",
            provider_response_id="resp-1",
            finish_reason="tool_call",
        ),
        m.ModelRequest(
            parts=[
                m.ToolReturnPart("b", "second first", tool_call_id="c2"),
                m.ToolReturnPart("a", {"ok": True}, tool_call_id="c1", outcome="failed", metadata={"m": 1}),
            ]
        ),
        m.ModelResponse(parts=[m.TextPart("Done.")]),
        m.ModelRequest(parts=[m.UserPromptPart("Again")], instructions=None),
    ]
    _same(messages)


def test_messages_that_need_the_reference_path_keep_ids_in_order() -> None:
    messages: list[Any] = [
        m.ModelResponse(parts=[m.ToolCallPart("a", {"x": 1}, tool_call_id="first")]),
        m.ModelRequest(
            parts=[
                m.UserPromptPart(["look", m.ImageUrl("https://example.com/a.png")]),
                m.ToolReturnPart("a", Point(x=1, y=2), tool_call_id="first"),
            ]
        ),
        m.ModelResponse(parts=[m.ToolCallPart("b", {"x": float("inf")}, tool_call_id="second")]),
        m.ModelRequest(parts=[m.ToolReturnPart("b", "ok", tool_call_id="second")]),
        m.ModelResponse(parts=[m.ToolCallPart("c", {}, tool_call_id="third")]),
        m.ModelRequest(
            parts=[
                m.ToolReturnPart("c", "ok", tool_call_id="third"),
                m.ToolReturnPart("c", "fix the args", tool_call_id="x", outcome="retried"),
            ]
        ),
    ]
    _same(messages)


def test_a_long_mixed_history_gives_the_same_key_both_ways() -> None:
    messages: list[Any] = []
    for i in range(50):
        messages.append(m.ModelRequest(parts=[m.UserPromptPart(f"question {i}")]))
        messages.append(m.ModelResponse(parts=[m.ToolCallPart("lookup", {"i": i}, tool_call_id=f"id-{i}")]))
        messages.append(
            m.ModelRequest(parts=[m.ToolReturnPart("lookup", {"i": i, "v": [i, i / 3]}, tool_call_id=f"id-{i}")])
        )
        messages.append(m.ModelResponse(parts=[m.TextPart(f"answer {i}")]))
    _same(messages)
    direct = key_canonical.canonical_messages(messages)
    reference = _reference(messages)
    direct_json = "[" + ",".join(key_json.dumps_canonical(x) for x in direct) + "]"
    reference_json = "[" + ",".join(key_json.dumps_canonical(x) for x in reference) + "]"
    assert keys.digest_json("ns", "{}", direct_json) == keys.digest_json("ns", "{}", reference_json)


def test_the_canonical_form_is_a_copy() -> None:
    args = {"list": [1, 2], "inner": {"a": 1}}
    content = {"rows": [{"a": 1}]}
    messages: list[Any] = [
        m.ModelResponse(parts=[m.ToolCallPart("t", args, tool_call_id="c")]),
        m.ModelRequest(parts=[m.ToolReturnPart("t", content, tool_call_id="c")]),
    ]
    canonical = key_canonical.canonical_messages(messages)
    before = json.dumps(canonical)
    args["list"].append(3)
    args["inner"]["b"] = 2
    content["rows"][0]["a"] = 99
    assert json.dumps(canonical) == before
