"""Whole-run deps in the key: lossless, or a clear error (`pyai_caching.engine.deps_key`, and the public API)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel, Field, SecretStr

from pyai_caching import ConfigurationError, cached_agent_run
from pyai_caching.engine.deps_key import deps_material
from pyai_caching.stores import MemoryStore


class Creds(BaseModel):
    user: str
    token: SecretStr


class Hidden(BaseModel):
    name: str
    internal: str = Field(default="", exclude=True)


@dataclasses.dataclass
class Point:
    x: int
    y: Any = None


DIFFERENT: list[tuple[Any, Any]] = [
    (1, "1"),
    (1, 1.0),
    (True, 1),
    ({1: "a"}, {"1": "a"}),
    ([1, 2], (1, 2)),
    ({1, 2}, {1, 3}),
    ({1, 2}, frozenset({1, 2})),
    (Creds(user="u", token=SecretStr("alice")), Creds(user="u", token=SecretStr("bob"))),
    (Hidden(name="n", internal="x"), Hidden(name="n", internal="y")),
    (Point(1, 2), Point(1, "2")),
    (b"a", "a"),
    (None, "None"),
    (0.1 + 0.2, 0.3),
]


@pytest.mark.parametrize(("a", "b"), DIFFERENT, ids=[repr(pair)[:40] for pair in DIFFERENT])
def test_different_deps_never_share_key_material(a: Any, b: Any) -> None:
    assert deps_material(a) != deps_material(b)


def test_equal_deps_built_afresh_share_key_material() -> None:
    assert deps_material({"a": [1, {2, 3}], "b": Point(1)}) == deps_material({"b": Point(1), "a": [1, {3, 2}]})


def test_a_secret_enters_only_as_a_digest() -> None:
    assert "alice-secret" not in deps_material(Creds(user="u", token=SecretStr("alice-secret")))


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text() | st.binary(max_size=4),
    lambda children: (
        st.lists(children, max_size=3)
        | st.tuples(children, children)
        | st.dictionaries(st.integers() | st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=8,
)


def _same(a: Any, b: Any) -> bool:
    """Equal with the same types all the way down (what a tool can tell apart)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return (
            a.keys() == b.keys()
            and all(type(k) is type(next(j for j in b if j == k)) for k in a)
            and all(_same(a[k], b[k]) for k in a)
        )
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, float):
        return a.hex() == b.hex()
    return bool(a == b)


@given(JSONISH, JSONISH)
def test_equal_material_means_equal_values(a: Any, b: Any) -> None:
    if deps_material(a) == deps_material(b):
        assert _same(a, b)


class Opaque:
    pass


async def test_unkeyable_deps_name_deps_and_the_remedy() -> None:
    from _agents import Counter, make_agent

    agent = make_agent(Counter(payload="x"))
    with pytest.raises(ConfigurationError, match=r"deps cannot be part of the key.*deps_key="):
        await cached_agent_run(agent, "q", "t", store=MemoryStore(), cache_whole_run=True, deps=Opaque())
    answer = await cached_agent_run(
        agent, "q", "t", store=MemoryStore(), cache_whole_run=True, deps=Opaque(), deps_key=lambda d: "tenant-1"
    )
    assert answer == "x"


async def test_deps_key_needs_whole_run_mode() -> None:
    from _agents import Counter, make_agent

    with pytest.raises(ConfigurationError, match="deps_key only applies with cache_whole_run=True"):
        await cached_agent_run(make_agent(Counter()), "q", "t", store=MemoryStore(), deps_key=str)


@pytest.mark.parametrize("version", ["", "  ", 3, b"v1"])
async def test_cache_version_must_be_a_non_empty_string(version: Any) -> None:
    from _agents import Counter, make_agent

    with pytest.raises(ConfigurationError, match="cache_version must be a non-empty string"):
        await cached_agent_run(make_agent(Counter()), "q", "t", store=MemoryStore(), cache_version=version)


async def test_an_unknown_keyword_is_reported_as_ours_with_the_closest_match() -> None:
    from _agents import Counter, make_agent

    with pytest.raises(ConfigurationError) as raised:
        await cached_agent_run(make_agent(Counter()), "q", "t", store=MemoryStore(), cache_whole_runs=True)
    message = str(raised.value)
    assert message.startswith("cached_agent_run() got an unexpected keyword argument 'cache_whole_runs'")
    assert "Did you mean 'cache_whole_run'?" in message
    with pytest.raises(ConfigurationError, match="Did you mean 'model_settings'"):
        await cached_agent_run(make_agent(Counter()), "q", "t", store=MemoryStore(), model_setting={})
