"""Which fields of pydantic-ai's messages, parts, tool definitions and settings reach the model, and so count in a key.

`tests/unit/test_keys.py` fails when pydantic-ai adds a field to a known kind, so that someone decides where it
belongs (see `pyai_caching.engine.canonical`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

__all__ = [
    "GLOBAL_VOLATILE",
    "MESSAGE_FIELDS",
    "PARAMETER_FIELDS",
    "PARAMETER_IGNORED",
    "PART_FIELDS",
    "SETTINGS_IGNORED",
    "TOOL_DEFINITION_FIELDS",
    "TOOL_DEFINITION_IGNORED",
    "TRANSPORT_SETTING_RE",
]


GLOBAL_VOLATILE: Final = frozenset(
    {
        "timestamp",
        "run_id",
        "conversation_id",
        "usage",
        "provider_response_id",
        "provider_details",
        "provider_url",
        "provider_name",
        "metadata",
        "state",
        "history_digest",
        "failed_attempts",
        "workspace_ref",
        "id",
        "finish_reason",
        "model_name",
        "model_id",
        "canonical_system",
        "signature",
        "record_id",
        "ui_visibility",
        "request_timestamp",
        "duration",
    }
)
"""Fields that never reach the model (or differ between two identical requests); dropped wherever they appear."""

MESSAGE_FIELDS: Final[Mapping[str, tuple[frozenset[str], frozenset[str]]]] = {
    # kind: (fields that count, fields that are ignored)
    "request": (
        frozenset({"kind", "parts", "instructions"}),
        frozenset({"timestamp", "run_id", "conversation_id", "metadata", "state"}),
    ),
    "response": (
        frozenset({"kind", "parts"}),
        frozenset(
            {
                "usage",
                "model_name",
                "model_id",
                "timestamp",
                "provider_name",
                "provider_url",
                "canonical_system",
                "provider_details",
                "provider_response_id",
                "finish_reason",
                "run_id",
                "conversation_id",
                "metadata",
                "workspace_ref",
                "history_digest",
                "failed_attempts",
                "state",
                "request_timestamp",
                "duration",
            }
        ),
    ),
}
"""The fields of `ModelRequest` and `ModelResponse`, split into those that count and those that do not."""

PART_FIELDS: Final[Mapping[str, tuple[frozenset[str], frozenset[str]]]] = {
    "system-prompt": (
        frozenset({"part_kind", "content", "scope"}),
        frozenset({"timestamp", "dynamic_ref", "context_id", "metadata"}),
    ),
    "user-prompt": (frozenset({"part_kind", "content"}), frozenset({"timestamp"})),
    "tool-return": (
        frozenset({"part_kind", "tool_name", "content", "tool_call_id", "tool_kind", "outcome"}),
        frozenset({"metadata", "timestamp", "retry", "ui_visibility"}),
    ),
    "retry-prompt": (frozenset({"part_kind", "content", "tool_name", "tool_call_id"}), frozenset({"timestamp"})),
    "text": (frozenset({"part_kind", "content"}), frozenset({"id", "provider_name", "provider_details", "citations"})),
    "tool-call": (
        frozenset({"part_kind", "tool_name", "args", "tool_call_id", "tool_kind"}),
        frozenset({"id", "provider_name", "provider_details", "ui_visibility"}),
    ),
    "thinking": (
        frozenset({"part_kind", "content"}),
        frozenset({"id", "signature", "provider_name", "provider_details"}),
    ),
    "file": (frozenset({"part_kind", "content"}), frozenset({"id", "provider_name", "provider_details"})),
    "builtin-tool-call": (
        frozenset({"part_kind", "tool_name", "args", "tool_call_id", "tool_kind"}),
        frozenset({"id", "provider_name", "provider_details", "ui_visibility"}),
    ),
    "builtin-tool-return": (
        frozenset({"part_kind", "tool_name", "content", "tool_call_id", "tool_kind", "outcome"}),
        frozenset({"metadata", "timestamp", "provider_name", "provider_details", "ui_visibility"}),
    ),
}
"""The fields of each known part kind, split into those that count and those that do not."""

TOOL_DEFINITION_FIELDS: Final = (
    "name",
    "parameters_json_schema",
    "description",
    "strict",
    "kind",
    "tool_kind",
    "defer_loading",
    "return_schema",
    "include_return_schema",
)
"""The fields of a `ToolDefinition` that reach the model; the rest (timeouts, toolset ids, metadata) do not."""

TOOL_DEFINITION_IGNORED: Final = frozenset(
    {
        "outer_typed_dict_key",
        "sequential",
        "metadata",
        "timeout",
        "unless_native",
        "with_native",
        "unless_tool_kind",
        "toolset_id",
        "capability_id",
        "ui_visibility",
        "durable",
    }
)
"""`ToolDefinition` fields that are local bookkeeping and stay out of the key."""

PARAMETER_FIELDS: Final = (
    "output_mode",
    "output_object",
    "prompted_output_template",
    "allow_text_output",
    "allow_image_output",
    "thinking",
)
"""Scalar fields of `ModelRequestParameters` that count (tools and instructions are handled separately)."""

PARAMETER_IGNORED: Final = frozenset(
    {
        "_telemetry_mcp_url_ids",
        "_telemetry_mcp_url_toolset_ids",
        "_telemetry_mcp_url_tool_names",
        "_framing_announcement",
        "tool_visibility",
        "revealed_tool_names",
        "introduced_tool_names",
        "deferred_capability_ids",
        "instruction_visibility",
        "cache",
        "deferred_capabilities",
    }
)
"""`ModelRequestParameters` fields that stay out of the key (telemetry, visibility bookkeeping, prompt caching)."""

SETTINGS_IGNORED: Final = frozenset(
    {
        "timeout",
        "request_timeout",
        "first_event_timeout",
        "max_retries",
        "extra_headers",
        "cache",
        "service_tier",
    }
)
"""Model settings that change how a request is sent, not what the model answers."""

TRANSPORT_SETTING_RE: Final = re.compile(r"(_headers|_timeout)$", re.I)
"""Provider-specific transport settings (`*_headers`, `*_timeout`), dropped like `SETTINGS_IGNORED`."""
