"""Fixtures of the CLI tests (the helpers are in `_cli_support`)."""

from __future__ import annotations

import pytest
from _cli_support import Cli
from typer.testing import CliRunner


@pytest.fixture
def cli() -> Cli:
    """Runs `pyai-caching` in this process (Typer's `CliRunner`)."""
    return Cli(CliRunner())
