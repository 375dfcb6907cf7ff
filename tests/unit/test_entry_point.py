"""`pyai-caching --version` answers without importing the command line app or pydantic-ai (it is instant)."""

from __future__ import annotations

import subprocess
import sys

from pyai_caching import __version__

PROBE = (
    "import sys; sys.argv = ['pyai-caching', '--version']; from pyai_caching._cli_entry import main; main(); "
    "print(sorted(m for m in ('typer', 'rich', 'pydantic_ai', 'redis') if m in sys.modules))"
)


def test_version_imports_nothing_heavy() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out == [f"pyai-caching {__version__}", "[]"]


def test_module_and_script_agree() -> None:
    out = subprocess.run([sys.executable, "-m", "pyai_caching", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == f"pyai-caching {__version__}"
