"""Placeholder API keys in the environment while a run replays (see `placeholder_keys`), restored at its end."""

from __future__ import annotations

import os
from typing import Final

import pytest

from pyai_caching.testing.record_modes import RecordMode

__all__ = ["fill", "header", "restore"]

_PLACEHOLDERS: Final = pytest.StashKey[dict[str, str | None]]()
"""The variables the plugin set to a placeholder, with the value each had before (`None`: unset)."""


def fill(config: pytest.Config, record_mode: str | None) -> None:
    """Set the placeholder in the unset key variables when the run replays (once per session)."""
    if _PLACEHOLDERS in config.stash:
        return
    config.stash[_PLACEHOLDERS] = {}
    if record_mode not in (None, RecordMode.NONE) or not config.getini("llm_placeholder_keys"):
        return
    from pyai_caching.testing.placeholder_keys import PLACEHOLDER, to_fill

    for name in to_fill(os.environ):
        config.stash[_PLACEHOLDERS][name] = os.environ.get(name)
        os.environ[name] = PLACEHOLDER


def restore(config: pytest.Config) -> None:
    """Give back the values the variables had, unless the tests changed them."""
    from pyai_caching.testing.placeholder_keys import PLACEHOLDER

    for name, before in config.stash.get(_PLACEHOLDERS, {}).items():
        if os.environ.get(name) != PLACEHOLDER:
            continue  # changed by the tests: theirs now
        if before is None:
            del os.environ[name]
        else:
            os.environ[name] = before


def header(config: pytest.Config) -> list[str]:
    """The line of pytest's report header that says which variables hold the placeholder (none: no line)."""
    placeholders: dict[str, str | None] = config.stash.get(_PLACEHOLDERS, {})
    names = list(placeholders)
    if not names:
        return []
    shown = ", ".join(names) if config.get_verbosity() > 0 else ", ".join(names[:3]) + ", ...; -v lists them"
    return [
        f"pyai_caching: replay mode: placeholder keys in {len(names)} unset API key variables ({shown}); no model "
        "request leaves in replay (ini llm_placeholder_keys = false turns this off)"
    ]
