"""What the `llm_cassette` fixture does for one test: where its cassette is, which mode it runs in, the `Cassette`
it returns, what is switched on while the test runs, and what it did with the cassette by the end."""

from __future__ import annotations

import contextlib
import hashlib
import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import pytest

from pyai_caching.testing.options import marker_options
from pyai_caching.testing.record_modes import RecordMode, resolve_record_mode
from pyai_caching.testing.usage import REPORTS, STATE, CassetteUsage

if TYPE_CHECKING:
    from pyai_caching._util.scrub import Scrubber
    from pyai_caching.capability import ResponseCache
    from pyai_caching.testing.cassette import CassetteStore
    from pyai_caching.types import CacheMode

__all__ = ["Cassette", "active", "new_cassette", "usage_of"]

_UNSAFE_NAME_CHARS: Final = re.compile(r"[^A-Za-z0-9_.\-\[\]=,+@]")
_MAX_NAME: Final = 120


@dataclass(kw_only=True)
class Cassette:
    """The cassette of one test, as the `llm_cassette` fixture returns it (active until the test ends)."""

    path: Path
    """The cassette file: `cassettes/<test module>/<test name>.json` next to the test file by default."""
    record_mode: RecordMode
    """The record mode in effect for this test."""
    cache_mode: CacheMode
    """What the record mode means for this cassette: `read_only`, `read_write` or `refresh`."""
    existed: bool
    """Whether the cassette file existed when the test run started (decides what `once` does)."""
    store: CassetteStore
    """The store every cache call of the test reads and writes."""
    nodeid: str
    """The pytest node id of the test."""

    def capability(
        self, *, namespace: str | None = None, task_name: str | None = None, replay_pace: float | None = None
    ) -> ResponseCache:
        """A `ResponseCache` bound to this cassette, for a plain `Agent` that has no cache of its own.

        `agent.run(prompt, capabilities=[llm_cassette.capability()])` or
        `Agent(model, capabilities=[llm_cassette.capability()])` (build the agent inside the test).
        A streamed run replays the deltas recorded in the cassette: as fast as possible, or with `replay_pace`
        times their recorded timing (see `ResponseCache.replay_pace`), for tests of a user interface.
        """
        from pyai_caching.capability import ResponseCache

        return ResponseCache(
            store=self.store,
            mode=self.cache_mode,
            ttl=None,
            namespace=namespace,
            task_name=task_name,
            on_cache_error="raise",
            replay_pace=replay_pace,
        )


def new_cassette(
    request: pytest.FixtureRequest, suite_mode: Any, directory: Path, scrubber: Scrubber | None
) -> Cassette:
    """The cassette of the test of `request`: its file in `directory`, and its mode (see `resolve_record_mode`;
    `suite_mode` is the `llm_record_mode` fixture's value)."""
    from pyai_caching.testing.cassette import CassetteStore

    name, marker_mode = marker_options(request.node)
    record_mode = resolve_record_mode(request.config.getoption("llm_record_mode"), suite_mode, marker_mode)
    path = Path(directory) / (name or _default_name(request.node.nodeid))
    existed = _existed_before(path, request.config.stash[STATE].started)
    cache_mode = record_mode.cache_mode(cassette_exists=existed)
    nodeid = request.node.nodeid
    store = CassetteStore(path, scrub=scrubber, miss_hint=_rerecord_hint(nodeid, path.is_file()))
    return Cassette(
        path=path,
        record_mode=record_mode,
        cache_mode=cache_mode,
        existed=existed,
        store=store,
        nodeid=nodeid,
    )


@contextlib.contextmanager
def active(cassette: Cassette) -> Iterator[None]:
    """While the test runs: every cache call of the process uses the cassette in its mode, and a replaying test
    (`read_only`) also turns pydantic-ai's `ALLOW_MODEL_REQUESTS` off."""
    from pyai_caching.engine import overrides
    from pyai_caching.types import CacheMode

    with contextlib.ExitStack() as stack:
        if cassette.cache_mode is CacheMode.READ_ONLY:
            from pydantic_ai.models import override_allow_model_requests

            stack.enter_context(override_allow_model_requests(False))
        stack.enter_context(overrides.activated(cassette.store, cassette.cache_mode))
        yield


def usage_of(cassette: Cassette, node: pytest.Item) -> CassetteUsage:
    """What the test (which has ended) did with its cassette, and whether it passed."""
    from pyai_caching.exceptions import CacheError

    try:
        recorded = cassette.store.recorded_keys()
    except CacheError:  # an unreadable cassette already failed the test
        recorded = []
    call = node.stash.get(REPORTS, {}).get("call")
    return CassetteUsage(
        recorded=recorded,
        used=set(cassette.store.used_keys),
        tests=[cassette.nodeid],
        all_passed=call is not None and call.passed,
    )


def _existed_before(path: Path, started: float) -> bool:
    """Whether `path` existed before the run started (a cassette recorded during this run does not count)."""
    try:
        return path.stat().st_mtime < started
    except FileNotFoundError:
        return False


def _default_name(nodeid: str) -> str:
    """`test_name.json` (`TestClass.test_name[param].json` for classes and parameters), safe as a file name."""
    _, _, rest = nodeid.partition("::")
    name = _UNSAFE_NAME_CHARS.sub("_", (rest or nodeid).replace("::", "."))
    if len(name) > _MAX_NAME:
        name = f"{name[: _MAX_NAME - 17]}-{hashlib.sha256(name.encode()).hexdigest()[:16]}"
    return f"{name}.json"


def _rerecord_hint(nodeid: str, existed: bool) -> str:
    target = shlex.quote(nodeid)
    if not existed:
        return f"To record it (with the model's API key set): pytest {target} --llm-record-mode=once"
    return (
        f"To record what changed: pytest {target} --llm-record-mode=new_episodes --llm-prune "
        f"(--llm-prune drops the entries no longer used), or --llm-record-mode=all to record the whole test again."
    )
