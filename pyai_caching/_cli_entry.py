"""The `pyai-caching` script's entry point: answers `--version` before the command line app (Typer, Rich and the
library) is imported, so that it is instant; everything else goes to `pyai_caching.cli`."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from pyai_caching._version import __version__

        print(f"pyai-caching {__version__}")
        return
    from pyai_caching.cli import main as cli_main

    cli_main()
