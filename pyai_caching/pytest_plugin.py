"""The pytest plugin's public names (the plugin itself is `pyai_caching.testing.plugin`, loaded by the `pytest11`
entry point)."""

from pyai_caching.testing.plugin import Cassette, RecordMode

__all__ = ["Cassette", "RecordMode"]
