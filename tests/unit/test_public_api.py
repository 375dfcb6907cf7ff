"""The public names resolve, and importing the package stays cheap."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pyai_caching
from pyai_caching import exceptions


@pytest.mark.parametrize("name", pyai_caching.__all__)
def test_every_public_name_resolves(name: str) -> None:
    assert getattr(pyai_caching, name) is not None
    assert name in dir(pyai_caching)


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        pyai_caching.nope  # noqa: B018


def test_import_does_not_load_pydantic_ai() -> None:
    code = "import sys, pyai_caching, pyai_caching.pytest_plugin; print('pydantic_ai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_exception_tree_has_one_root() -> None:
    for name in exceptions.__all__:
        assert issubclass(getattr(exceptions, name), exceptions.PyAICachingError)
    assert issubclass(exceptions.ConfigurationError, ValueError)
