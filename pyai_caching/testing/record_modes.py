"""Record modes (as in VCR), and which one a test runs in: the command line, then the suite, then the marker."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pyai_caching.types import CacheMode

__all__ = ["RecordMode", "resolve_record_mode"]


class RecordMode(StrEnum):
    """How a test uses its cassette (the VCR record modes)."""

    ONCE = "once"
    """Record when the test had no cassette when the run started; otherwise replay only (a miss fails)."""
    NEW_EPISODES = "new_episodes"
    """Replay what matches; call the model and record what does not."""
    NONE = "none"
    """Replay only: a miss fails with `CacheMissError` and no model is called (the default)."""
    ALL = "all"
    """Call the model for every request and record it again."""

    @classmethod
    def parse(cls, value: Any, *, source: str) -> RecordMode:
        """`value` as a `RecordMode`; anything else is a `ConfigurationError` naming `source` and the valid values."""
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            try:
                return cls(value)
            except ValueError:
                pass
        from pyai_caching.exceptions import ConfigurationError

        valid = ", ".join(repr(m.value) for m in cls)
        raise ConfigurationError(f"{source} must be one of {valid}, got {value!r}")

    def cache_mode(self, *, cassette_exists: bool) -> CacheMode:
        """The `CacheMode` this record mode means for a cassette that does (or does not) exist at test start."""
        from pyai_caching.types import CacheMode

        if self is RecordMode.ALL:
            return CacheMode.REFRESH
        if self is RecordMode.NEW_EPISODES or (self is RecordMode.ONCE and not cassette_exists):
            return CacheMode.READ_WRITE
        return CacheMode.READ_ONLY


def resolve_record_mode(cli: str | None, fixture: Any, marker: Any) -> RecordMode:
    """CLI > `llm_record_mode` fixture > marker > `none`."""
    if cli is not None:
        return RecordMode.parse(cli, source="--llm-record-mode")
    if fixture is not None:
        return RecordMode.parse(fixture, source="the llm_record_mode fixture")
    if marker is not None:
        return RecordMode.parse(marker, source="@pytest.mark.llm_cassette(record_mode=...)")
    return RecordMode.NONE
