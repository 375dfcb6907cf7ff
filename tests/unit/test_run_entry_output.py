"""A run entry read without its messages (the hit path of `cached_agent_run` without `full_result`).

Run entries hold the model's raw messages and a projection of the final response, never a validated output.
"""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from pydantic_ai import messages as m
from pydantic_ai.usage import RunUsage

from pyai_caching.engine.entries import EntryDecodeError, EntryMeta, RunEntry, decode_run_entry, encode_entry

SECRET = b"0123456789abcdef0123456789abcdef"


FINAL = {
    "text": None,
    "tool_calls": [{"tool_name": "final_result", "args": {"name": "Ada"}}],
    "part_kinds": ["tool-call"],
}


def _entry() -> RunEntry:
    return RunEntry(
        meta=EntryMeta(namespace="ns", model="function:m", task="t", cost=Decimal("0.25"), requests=2),
        usage=RunUsage(requests=2, input_tokens=10, output_tokens=5),
        final=FINAL,
        output_tool_name="final_result",
        new_messages=[
            m.ModelRequest(parts=[m.UserPromptPart("Ada")]),
            m.ModelResponse(parts=[m.ToolCallPart("final_result", {"name": "Ada", "age": 36}, tool_call_id="c")]),
        ],
    )


@pytest.mark.parametrize("secret", [None, SECRET])
def test_output_only_decoding_matches_the_full_decoding(secret: bytes | None) -> None:
    raw = encode_entry(_entry(), secret=secret)
    full = decode_run_entry(raw, secret=secret)
    head = decode_run_entry(raw, secret=secret, messages=False)
    assert head.final == full.final == FINAL
    assert head.meta == full.meta
    assert head.usage == full.usage
    assert head.output_tool_name == full.output_tool_name == "final_result"
    assert len(full.new_messages) == 2
    assert head.new_messages == []


def _tampered(change: dict[str, object]) -> bytes:
    data = json.loads(encode_entry(_entry()))
    data.update(change)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    "change",
    [
        {"final": "not an object"},
        {"version": 3},
        {"kind": "response"},
        {"format": "someone-else"},
        {"meta": {"namespace": "ns"}},
    ],
    ids=["bad final", "future version", "wrong kind", "foreign format", "bad meta"],
)
def test_output_only_decoding_still_rejects_invalid_entries(change: dict[str, object]) -> None:
    with pytest.raises(EntryDecodeError):
        decode_run_entry(_tampered(change), messages=False)


def test_a_version_1_run_entry_is_a_miss() -> None:
    """Version 1 held the validated output (which a hit would have validated again): never served."""
    with pytest.raises(EntryDecodeError):
        decode_run_entry(_tampered({"version": 1, "output": {"name": "Ada"}}), messages=False)


def test_output_only_decoding_checks_the_signature() -> None:
    raw = encode_entry(_entry(), secret=SECRET)
    with pytest.raises(EntryDecodeError):
        decode_run_entry(raw, secret=b"another secret of 32 bytes......", messages=False)
    with pytest.raises(EntryDecodeError):
        decode_run_entry(raw[:-5], secret=SECRET, messages=False)
