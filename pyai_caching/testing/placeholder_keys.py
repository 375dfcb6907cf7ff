"""Placeholder API keys for replaying tests: which provider variables to fill, and with what. Pure: no I/O.

pydantic-ai refuses to build `Agent("openai:gpt-4o")` when `OPENAI_API_KEY` is unset, so a test module with such
an agent at module level cannot even be collected in CI. A replaying test never sends a request (the cache answers,
and `ALLOW_MODEL_REQUESTS` is off), so the pytest plugin fills the unset variables with a placeholder.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

__all__ = ["PLACEHOLDER", "PROVIDER_KEYS", "to_fill"]

PLACEHOLDER: Final = "pyai-caching-replay-placeholder-not-a-key"
"""The value set: a real provider rejects it, and it says where it came from."""

PROVIDER_KEYS: Final = (
    ("OPENAI_API_KEY",),
    ("ANTHROPIC_API_KEY",),
    ("GOOGLE_API_KEY", "GEMINI_API_KEY"),
    ("GROQ_API_KEY",),
    ("MISTRAL_API_KEY",),
    ("CO_API_KEY",),
    ("DEEPSEEK_API_KEY",),
    ("XAI_API_KEY",),
    ("OPENROUTER_API_KEY",),
    ("TOGETHER_API_KEY",),
    ("FIREWORKS_API_KEY",),
    ("CEREBRAS_API_KEY",),
    ("GITHUB_API_KEY",),
    ("MOONSHOTAI_API_KEY",),
    ("NEBIUS_API_KEY",),
    ("OVHCLOUD_API_KEY",),
    ("SAMBANOVA_API_KEY",),
    ("META_API_KEY",),
    ("ALIBABA_API_KEY", "DASHSCOPE_API_KEY"),
    ("ZAI_API_KEY",),
    ("CRUSOE_API_KEY",),
    ("HEROKU_INFERENCE_KEY",),
    ("OTARI_API_KEY",),
    ("STAV_API_KEY",),
    ("VERCEL_AI_GATEWAY_API_KEY", "VERCEL_OIDC_TOKEN"),
    ("VOYAGE_API_KEY",),
)
"""The key variables of pydantic-ai's providers (2.78) that need nothing but a key to build a model, each with the
alternatives the provider also reads (the first is the one filled). Left out: providers that need more than a key
(Azure, Bedrock, Vertex, Cloudflare, Snowflake), the Pydantic AI Gateway (it checks the key's format), and
`HF_TOKEN` (Hugging Face downloads would send it)."""


def to_fill(environ: Mapping[str, str]) -> list[str]:
    """The variables to set: the first of each provider's names, when none of them holds a value (a value that is
    already the placeholder counts as unset, so that nested or repeated sessions report the same)."""
    return [
        names[0]
        for names in PROVIDER_KEYS
        if not any(environ.get(name) and environ.get(name) != PLACEHOLDER for name in names)
    ]
