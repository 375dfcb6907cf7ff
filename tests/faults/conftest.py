"""Fixtures of the fault-injection tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pyai_caching import _access


@pytest.fixture(autouse=True)
def fresh_store_health() -> Iterator[None]:
    """Forget what earlier tests learned about failing stores (a later server may reuse a port, hence a name)."""
    _access._failing.clear()
    _access._failed_at.clear()
    _access._recovered_at.clear()
    _access._down_until.clear()
    yield
    _access._failing.clear()
    _access._failed_at.clear()
    _access._recovered_at.clear()
    _access._down_until.clear()
