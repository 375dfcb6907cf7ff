"""The package stays a house a newcomer can live in: small modules (the layers and cycles are `lint-imports`' job)."""

from __future__ import annotations

from pathlib import Path

import pyai_caching

PACKAGE = Path(pyai_caching.__file__).parent
MAX_LINES = 500


def test_no_module_is_over_500_lines() -> None:
    sizes = {path.relative_to(PACKAGE).as_posix(): len(path.read_text().splitlines()) for path in PACKAGE.rglob("*.py")}
    assert len(sizes) > 50, "the package was not found where expected"
    too_big = {name: lines for name, lines in sizes.items() if lines > MAX_LINES}
    assert not too_big, f"split these modules (CONTRIBUTING.md, 'The map'): {too_big}"
