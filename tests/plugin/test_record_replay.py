"""The pytest plugin, driven through inner pytest sessions (`pytester`, in-process).

Every scenario records with a `FunctionModel` standing in for the real model, then replays with the stand-in
replaced by one that fails (`STAND_IN=fail`), so a passing replay proves the responses came from the cassette.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _project import make_project


@pytest.fixture(autouse=True)
def _environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_CACHE_DIR", str(tmp_path / "local-cache"))
    for name in ("LLM_CACHE_REDIS_URL", "LLM_CACHE_SECRET", "STAND_IN", "PROMPT", "TEMPERATURE", "TOOL_SCHEMA"):
        monkeypatch.delenv(name, raising=False)


def run(pytester: pytest.Pytester, *args: str, fail: bool = False, **env: str) -> pytest.RunResult:
    """One inner session; `fail=True` makes the stand-in model raise if it is called."""
    with pytest.MonkeyPatch.context() as mp:
        if fail:
            mp.setenv("STAND_IN", "fail")
        for name, value in env.items():
            mp.setenv(name, value)
        return pytester.runpytest_inprocess(*args)


def cassette(pytester: pytest.Pytester, name: str, module: str = "test_agents") -> Path:
    return pytester.path / "cassettes" / module / f"{name}.json"


def entries(path: Path) -> list[dict[str, Any]]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return list(doc["entries"])


def prompts(path: Path) -> list[str]:
    return [
        p["content"]
        for e in entries(path)
        for m in e["request"]["messages"]
        for p in m["parts"]
        if p["part_kind"] == "user-prompt"
    ]


def test_the_plugin_is_registered_through_its_entry_point(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    result = pytester.runpytest_inprocess("--help")
    result.stdout.fnmatch_lines(
        ["*record and replay LLM responses (pyai_caching)*", "*--llm-record-mode=*", "*--llm-prune*"]
    )


def test_record_once_then_replay_without_the_model(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    run(pytester, "--llm-record-mode=once").assert_outcomes(passed=3)

    folder = pytester.path / "cassettes" / "test_agents"
    assert sorted(p.name for p in folder.iterdir()) == ["test_profile.json", "test_stream.json", "test_tools.json"]
    for path in folder.iterdir():
        text = path.read_text(encoding="utf-8")
        assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    [profile] = entries(cassette(pytester, "test_profile"))
    assert profile["request"]["header"]["settings"] == {"temperature": 0.0}
    assert profile["response"]["parts"][0]["args"] == {"name": "Ada", "age": 36}
    assert len(entries(cassette(pytester, "test_tools"))) == 2, "one entry per model request"
    [stream] = entries(cassette(pytester, "test_stream"))
    assert [p["content"] for p in stream["response"]["parts"]] == ["Hello, Ada"]
    assert [e[1:] for e in stream["stream"]["events"][1:]] == [[0, ", "], [0, "Ada"]], "the deltas are recorded"

    replay = run(pytester, fail=True)
    replay.assert_outcomes(passed=3)
    assert "pyai_caching: LLM cassettes" not in replay.stdout.str(), "nothing unused, nothing to report"

    cassette(pytester, "test_profile").unlink()
    missing = run(pytester, fail=True)
    missing.assert_outcomes(passed=2, failed=1)
    missing.stdout.fnmatch_lines(["*CacheMissError*"])


def test_none_is_the_default_and_says_how_to_record(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    result = run(pytester, "-k", "test_profile")
    result.assert_outcomes(failed=1, deselected=2)
    out = result.stdout.str()
    assert "CacheMissError" in out
    assert "the stand-in model was called" not in out
    assert "does not exist: nothing was recorded for this test yet" in out
    assert (
        "To record it (with the model's API key set): pytest test_agents.py::test_profile --llm-record-mode=once" in out
    )
    assert not (pytester.path / "cassettes").exists()


def test_once_does_not_record_into_an_existing_cassette(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    run(pytester, "--llm-record-mode=once", "-k", "test_profile").assert_outcomes(passed=1, deselected=2)
    before = cassette(pytester, "test_profile").read_bytes()

    changed = run(pytester, "--llm-record-mode=once", "-k", "test_profile", PROMPT="Make a profile for Grace")
    changed.assert_outcomes(failed=1, deselected=2)
    assert "CacheMissError" in changed.stdout.str()
    assert cassette(pytester, "test_profile").read_bytes() == before


def test_new_episodes_records_what_is_new_and_prune_drops_what_is_stale(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    run(pytester, "--llm-record-mode=once", "-k", "test_profile").assert_outcomes(passed=1, deselected=2)
    grace = "Make a profile for Grace"

    added = run(pytester, "--llm-record-mode=new_episodes", "-k", "test_profile", PROMPT=grace)
    added.assert_outcomes(passed=1, deselected=2)
    path = cassette(pytester, "test_profile")
    assert prompts(path) == ["Make a profile for Ada", "Make a profile for Grace"], "old entries keep their place"
    added.stdout.fnmatch_lines(
        [
            "*pyai_caching: LLM cassettes*",
            "cassettes/test_agents/test_profile.json: 1 of 2 recorded entries unused",
            "1 cassette with unused entries: run with --llm-prune to remove them*",
        ]
    )

    run(pytester, "-k", "test_profile", fail=True, PROMPT=grace).assert_outcomes(passed=1, deselected=2)
    pruned = run(pytester, "--llm-prune", "-k", "test_profile", fail=True, PROMPT=grace)
    pruned.assert_outcomes(passed=1, deselected=2)
    pruned.stdout.fnmatch_lines(["cassettes/test_agents/test_profile.json: pruned 1 unused entry (1 left)"])
    assert prompts(path) == ["Make a profile for Grace"]
    run(pytester, "-k", "test_profile", fail=True).assert_outcomes(failed=1, deselected=2)


def test_all_calls_the_model_again_and_rerecords(pytester: pytest.Pytester) -> None:
    make_project(pytester)
    run(pytester, "--llm-record-mode=once").assert_outcomes(passed=3)
    first = entries(cassette(pytester, "test_profile"))[0]["meta"]["created_at"]

    forced = run(pytester, "--llm-record-mode=all", fail=True)
    forced.assert_outcomes(failed=3)
    assert "the stand-in model was called" in forced.stdout.str()

    run(pytester, "--llm-record-mode=all").assert_outcomes(passed=3)
    [entry] = entries(cassette(pytester, "test_profile"))
    assert entry["meta"]["created_at"] > first


def test_prune_spares_cassettes_of_tests_that_did_not_pass(pytester: pytest.Pytester) -> None:
    tests = """
import os
from agents import make_profile

async def test_profile(llm_cassette):
    await make_profile()
    assert os.environ.get("BREAK") != "1"
"""
    make_project(pytester, tests)
    run(pytester, "--llm-record-mode=once").assert_outcomes(passed=1)
    run(pytester, "--llm-record-mode=new_episodes", PROMPT="Grace").assert_outcomes(passed=1)
    path = cassette(pytester, "test_profile")
    assert len(entries(path)) == 2

    failing = run(pytester, "--llm-prune", fail=True, PROMPT="Grace", BREAK="1")
    failing.assert_outcomes(failed=1)
    assert "pruned" not in failing.stdout.str()
    assert "unused" not in failing.stdout.str()
    assert len(entries(path)) == 2


MODES = """
import os
import pytest

@pytest.mark.llm_cassette(record_mode="new_episodes")
def test_marked(llm_cassette):
    expected = os.environ["EXPECT"].split(",")
    assert [llm_cassette.record_mode.value, llm_cassette.cache_mode.value] == expected

def test_plain(llm_cassette):
    assert llm_cassette.record_mode.value == os.environ.get("EXPECT_PLAIN", "none")
"""

SUITE_FIXTURE = """
import pytest

@pytest.fixture(scope="session")
def llm_record_mode():
    return "all"
"""


def test_record_mode_precedence_cli_then_fixture_then_marker(pytester: pytest.Pytester) -> None:
    make_project(pytester, MODES)
    run(pytester, EXPECT="new_episodes,read_write").assert_outcomes(passed=2)
    run(pytester, "--llm-record-mode=once", EXPECT="once,read_write", EXPECT_PLAIN="once").assert_outcomes(passed=2)

    pytester.makeconftest(SUITE_FIXTURE)
    run(pytester, EXPECT="all,refresh", EXPECT_PLAIN="all").assert_outcomes(passed=2)
    run(pytester, "--llm-record-mode=none", EXPECT="none,read_only").assert_outcomes(passed=2)


def test_invalid_record_modes_list_the_valid_ones(pytester: pytest.Pytester) -> None:
    make_project(pytester, MODES)
    cli = pytester.runpytest_inprocess("--llm-record-mode=sometimes")
    assert cli.ret == pytest.ExitCode.USAGE_ERROR
    cli.stderr.fnmatch_lines(
        ["*--llm-record-mode: invalid choice: 'sometimes' (choose from *once*new_episodes*none*all*"]
    )

    pytester.makepyfile(
        test_agents="""
import pytest

@pytest.mark.llm_cassette(record_mode="always")
def test_marked():
    pass
"""
    )
    marker = run(pytester)
    marker.assert_outcomes(errors=1)
    marker.stdout.fnmatch_lines(
        [
            "*ConfigurationError: @pytest.mark.llm_cassette(record_mode=...) must be one of 'once', 'new_episodes', "
            "'none', 'all', got 'always'"
        ]
    )

    pytester.makeconftest(SUITE_FIXTURE.replace('"all"', '"replay"'))
    fixture = run(pytester)
    fixture.assert_outcomes(errors=1)
    fixture.stdout.fnmatch_lines(["*the llm_record_mode fixture must be one of 'once', *, got 'replay'"])


@pytest.mark.parametrize(
    ("test", "change", "expected"),
    [
        (
            "test_profile",
            {"PROMPT": "Make a profile for Grace"},
            "*message 1, part 1 (user-prompt) content: 'Make a profile for Ada' -> 'Make a profile for Grace'",
        ),
        ("test_profile", {"TEMPERATURE": "0.7"}, "*setting 'temperature': 0.0 -> 0.7"),
        (
            "test_tools",
            {"TOOL_SCHEMA": "v2"},
            "*tool 'weather' parameters_json_schema.properties.days: added in this request *",
        ),
    ],
    ids=["prompt", "setting", "tool-schema"],
)
def test_a_replay_miss_shows_what_changed(
    pytester: pytest.Pytester, test: str, change: dict[str, str], expected: str
) -> None:
    make_project(pytester)
    run(pytester, "--llm-record-mode=once", "-k", test).assert_outcomes(passed=1, deselected=2)

    result = run(pytester, "-k", test, fail=True, **change)
    result.assert_outcomes(failed=1, deselected=2)
    result.stdout.fnmatch_lines(
        [
            "*CacheMissError: no cached response for this request*was not called.",
            f"*No request recorded in cassette cassettes/test_agents/{test}.json matches it (* recorded). The "
            "nearest one (entries*, *% alike) differs in:",
            expected,
            "*Diff of the canonical requests (- recorded, + this request):",
            "*--- recorded",
            "*+++ this request",
        ]
    )
    result.stdout.fnmatch_lines(
        [f"*To record what changed: pytest test_agents.py::{test} --llm-record-mode=new_episodes --llm-prune *"]
    )


SCRUBBING_CONFTEST = """
import pytest

@pytest.fixture(scope="session")
def llm_cassette_scrubber():
    def scrub(entry):
        for message in entry["request"]["messages"]:
            for part in message["parts"]:
                if isinstance(part.get("content"), str):
                    part["content"] = part["content"].replace("ada@example.com", "<email>")
    return scrub
"""

SCRUBBING_TESTS = """
from agents import Profile, profile_agent
from pyai_caching import cached_agent_run

SECRET = "sk-proj-" + "Zq9" * 12

async def test_scrubbed(llm_cassette):
    out = await cached_agent_run(
        profile_agent,
        f"Profile for ada@example.com, my key is {SECRET}",
        task_name="scrub",
        model_settings={
            "temperature": 0.0,
            "extra_headers": {"Authorization": "Bearer " + SECRET},
            "extra_body": {"api_key": SECRET, "user_tier": "gold"},
        },
    )
    assert out == Profile(name="Ada", age=36)
"""


def test_secrets_and_user_fields_never_reach_the_cassette(pytester: pytest.Pytester) -> None:
    make_project(pytester, SCRUBBING_TESTS)
    pytester.makeconftest(SCRUBBING_CONFTEST)
    run(pytester, "--llm-record-mode=once").assert_outcomes(passed=1)

    text = cassette(pytester, "test_scrubbed").read_text(encoding="utf-8")
    assert "Zq9Zq9" not in text
    assert "ada@example.com" not in text
    assert "Profile for <email>, my key is <scrubbed>" in text
    assert '"api_key": "<scrubbed>"' in text
    assert '"user_tier": "gold"' in text
    assert "Authorization" not in text, "extra_headers never reach the canonical request"

    run(pytester, fail=True).assert_outcomes(passed=1)


CLOSE_RUN_SYNC_LOOP = """

@pytest.fixture
def close_run_sync_loop():
    # Agent.run_sync creates an event loop and leaves it open; close it so it is not garbage-collected later.
    import asyncio
    yield
    loop = asyncio.get_event_loop_policy().get_event_loop()
    loop.close()
    asyncio.set_event_loop(None)
"""

PLAIN_AGENT_TESTS = """
import pytest
from pydantic_ai import Agent

from agents import PROMPT, Profile, model, profile_agent
from pyai_caching import cached_agent_run_sync


@pytest.mark.asyncio
async def test_run_capability(llm_cassette):
    agent = Agent(model, output_type=Profile)
    out = await agent.run(PROMPT, capabilities=[llm_cassette.capability()])
    assert out.output == Profile(name="Ada", age=36)


def test_agent_capability_sync(llm_cassette, close_run_sync_loop):
    agent = Agent(model, capabilities=[llm_cassette.capability()])
    assert agent.run_sync(PROMPT).output == "Hello Ada"


def test_cached_agent_run_sync(llm_cassette):
    assert cached_agent_run_sync(profile_agent, PROMPT, "sync") == Profile(name="Ada", age=36)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_anyio(llm_cassette, anyio_backend):
    agent = Agent(model, output_type=Profile, capabilities=[llm_cassette.capability()])
    assert (await agent.run(PROMPT)).output == Profile(name="Ada", age=36)
"""


def test_plain_agents_sync_and_anyio_tests(pytester: pytest.Pytester) -> None:
    make_project(pytester, PLAIN_AGENT_TESTS + CLOSE_RUN_SYNC_LOOP)
    pytester.makeini(
        "[pytest]\nasyncio_mode = strict\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\naddopts = --strict-markers -p no:cacheprovider\n"
    )
    run(pytester, "--llm-record-mode=once").assert_outcomes(passed=4)
    for name in (
        "test_run_capability",
        "test_agent_capability_sync",
        "test_cached_agent_run_sync",
        "test_anyio[asyncio]",
    ):
        assert len(entries(cassette(pytester, name))) == 1, name
    run(pytester, fail=True).assert_outcomes(passed=4)


ALLOW_TESTS = """
import os

import pytest
from pydantic_ai import Agent, models
from pydantic_ai.messages import ModelResponse, TextPart


class RealishModel(models.Model):
    \"\"\"Behaves like a provider's model: refuses to run when ALLOW_MODEL_REQUESTS is False.\"\"\"

    async def request(self, messages, model_settings, model_request_parameters):
        models.check_allow_model_requests()
        return ModelResponse(parts=[TextPart("real answer")])

    @property
    def model_name(self):
        return "realish"

    @property
    def system(self):
        return "realish"


def test_uncached_call(llm_cassette, close_run_sync_loop):
    agent = Agent(RealishModel())  # no cache at all: the cassette cannot answer for it
    if os.environ.get("EXPECT") == "refused":
        with pytest.raises(RuntimeError, match="ALLOW_MODEL_REQUESTS is False"):
            agent.run_sync("hi")
    else:
        assert agent.run_sync("hi").output == "real answer"


def test_restored_after_the_test():
    assert models.ALLOW_MODEL_REQUESTS is True
"""


def test_replay_forbids_uncached_real_requests(pytester: pytest.Pytester) -> None:
    make_project(pytester, ALLOW_TESTS + CLOSE_RUN_SYNC_LOOP)
    run(pytester, EXPECT="refused").assert_outcomes(passed=2)
    run(pytester, "--llm-record-mode=new_episodes", EXPECT="allowed").assert_outcomes(passed=2)


NAMING_TESTS = """
import pytest

from agents import make_profile


class TestGroup:
    @pytest.mark.parametrize("who", ["Ada", "Grace Hopper"])
    async def test_named(self, llm_cassette, who):
        await make_profile(f"Profile for {who}")


@pytest.mark.llm_cassette("shared")
async def test_first():
    await make_profile("one")


@pytest.mark.llm_cassette(name="shared")
async def test_second():
    await make_profile("two")


async def test_unused_fixture(llm_cassette):
    pass
"""


def test_cassette_names_and_shared_cassettes(pytester: pytest.Pytester) -> None:
    make_project(pytester, NAMING_TESTS, name="test_naming")
    run(pytester, "--llm-record-mode=once").assert_outcomes(passed=5)
    folder = pytester.path / "cassettes" / "test_naming"
    assert sorted(p.name for p in folder.iterdir()) == [
        "TestGroup.test_named[Ada].json",
        "TestGroup.test_named[Grace_Hopper].json",
        "shared.json",
    ], "a test that makes no model request leaves no cassette"
    # Entries keep the order they were first recorded in, which is the order the two tests ran: random, when the
    # inner session follows the outer one's pytest-randomly seed.
    assert sorted(prompts(folder / "shared.json")) == ["one", "two"]

    result = run(pytester, "--llm-prune", fail=True)
    result.assert_outcomes(passed=5)
    assert "pruned" not in result.stdout.str(), "entries used by any test of the session are kept"


def test_tests_without_the_plugin_are_untouched(pytester: pytest.Pytester) -> None:
    make_project(pytester, "from agents import make_profile\n\nasync def test_direct():\n    await make_profile()\n")
    result = run(pytester)
    result.assert_outcomes(passed=1)
    assert not (pytester.path / "cassettes").exists()
    assert "LLM cassettes" not in result.stdout.str()
