"""Fixtures of the fault-injection tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyai_caching.engine import access as _access


@pytest.fixture(autouse=True)
def fresh_store_health() -> Iterator[None]:
    """Forget what earlier tests learned about failing stores (a later server may reuse a port, hence a name)."""
    _access.reset_health()
    yield
    _access.reset_health()
