"""The plugin's settings: command-line and ini options, and the `llm_cassette` marker's arguments."""

from __future__ import annotations

from typing import Any, Final

import pytest

from pyai_caching.testing.record_modes import RecordMode

__all__ = ["MARKER", "MARKER_HELP", "add_options", "marker_options"]

MARKER: Final = "llm_cassette"
"""The marker's name (also the name of the fixture it activates)."""

MARKER_HELP: Final = (
    f"{MARKER}(name=None, record_mode=None): record the test's LLM responses into a cassette and replay them "
    "(name: cassette file name instead of the test name; record_mode: 'once', 'new_episodes', 'none', 'all')"
)
"""The marker's line in `pytest --markers`."""


def add_options(parser: pytest.Parser) -> None:
    """`--llm-record-mode`, `--llm-prune` and the ini option `llm_placeholder_keys`."""
    group = parser.getgroup("pyai_caching", "record and replay LLM responses (pyai_caching)")
    group.addoption(
        "--llm-record-mode",
        action="store",
        dest="llm_record_mode",
        default=None,
        choices=[m.value for m in RecordMode],
        help=(
            "how tests with an LLM cassette use it: 'none' (default: replay only, a miss fails), 'once' (record "
            "tests that have no cassette yet), 'new_episodes' (record what is not in the cassette), 'all' "
            "(re-record everything). Overrides the llm_record_mode fixture and the llm_cassette marker."
        ),
    )
    parser.addini(
        "llm_placeholder_keys",
        type="bool",
        default=True,
        help=(
            "replaying (no --llm-record-mode, or 'none'): set placeholder API keys for the providers whose key "
            "variables are unset, so that agents built from a model name can be collected (default: true)"
        ),
    )
    group.addoption(
        "--llm-prune",
        action="store_true",
        dest="llm_prune",
        default=False,
        help=(
            "at the end of the run, remove the recorded entries no test used from the cassettes of the tests "
            "that ran (only cassettes whose tests all passed)"
        ),
    )


def marker_options(node: Any) -> tuple[str | None, Any]:
    """The `llm_cassette` marker's cassette file name (`None`: the default) and `record_mode=` (`None`: not given).

    A marker with other arguments, or a name that is not a plain file name, is a `ConfigurationError`.
    """
    marker = node.get_closest_marker(MARKER)
    if marker is None:
        return None, None
    from pyai_caching.exceptions import ConfigurationError

    kwargs = dict(marker.kwargs)
    unknown = set(kwargs) - {"name", "record_mode"}
    if unknown or len(marker.args) > 1 or (marker.args and "name" in kwargs):
        raise ConfigurationError(
            f"@pytest.mark.llm_cassette takes an optional name and record_mode= (got args {marker.args!r}, "
            f"keywords {sorted(kwargs)!r})"
        )
    name = marker.args[0] if marker.args else kwargs.get("name")
    if name is not None:
        if not isinstance(name, str) or not name.strip() or "/" in name or "\\" in name or name in (".", ".."):
            raise ConfigurationError(
                f"@pytest.mark.llm_cassette name must be a file name (no folders), got {name!r}; "
                "redefine the llm_cassette_dir fixture to change the folder"
            )
        name = name if name.endswith(".json") else f"{name}.json"
    return name, kwargs.get("record_mode")
