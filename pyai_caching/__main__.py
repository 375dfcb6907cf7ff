"""`python -m pyai_caching`: the `pyai-caching` command line (see `pyai_caching.cli`)."""

from __future__ import annotations

from pyai_caching._cli_entry import main

if __name__ == "__main__":
    main()
