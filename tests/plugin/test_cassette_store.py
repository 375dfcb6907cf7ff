"""`CassetteStore` on its own: real agents, a `ResponseCache` bound to a cassette file, no plugin."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelMessage, ModelResponse, ToolCallPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from pyai_caching import CacheMissError, ResponseCache, cached_agent_run
from pyai_caching._util.scrub import scrub_text
from pyai_caching.exceptions import CacheError, ConfigurationError
from pyai_caching.stores import CassetteStore, Store


class Profile(BaseModel):
    name: str
    age: int


class StandIn:
    """A model function that answers a profile and counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        self.calls += 1
        return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {"name": "Ada", "age": 36})])


def make_agent(stand_in: StandIn, **kwargs: Any) -> Agent[None, Profile]:
    return Agent(FunctionModel(stand_in, model_name="stand-in"), output_type=Profile, **kwargs)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_CACHE_DIR", str(tmp_path / "local-cache"))
    monkeypatch.delenv("LLM_CACHE_REDIS_URL", raising=False)
    monkeypatch.delenv("LLM_CACHE_SECRET", raising=False)


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


async def test_records_a_readable_cassette_and_replays_it(tmp_path: Path) -> None:
    path = tmp_path / "cassettes" / "test_x" / "test_profile.json"
    stand_in = StandIn()
    agent = make_agent(stand_in, instructions="Make profiles.")

    store = CassetteStore(path)
    assert isinstance(store, Store)
    out = await agent.run("Make a profile for Ada", capabilities=[ResponseCache(store=store)])
    assert out.output == Profile(name="Ada", age=36)
    assert stand_in.calls == 1

    text = path.read_text(encoding="utf-8")
    doc = json.loads(text)
    assert text == json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert doc["format"] == "pyai_caching-cassette"
    assert doc["version"] == 1
    [entry] = doc["entries"]
    assert entry["key"].startswith("pyai_caching:default:r:{")
    model = entry["request"]["header"]["model"]
    assert (model["system"], model["name"], model["base_url"]) == ("function", "stand-in", None)
    assert model["class"] == ["pydantic_ai.models.function.FunctionModel"]
    assert len(model["profile"]) == 32  # a fingerprint of the model's profile, the same in every process
    assert entry["request"]["header"]["parameters"]["instructions"] == ["Make profiles."]
    user = [p for m in entry["request"]["messages"] for p in m["parts"] if p["part_kind"] == "user-prompt"]
    assert user == [{"part_kind": "user-prompt", "content": "Make a profile for Ada"}]
    assert entry["response"]["parts"][0]["args"] == {"name": "Ada", "age": 36}
    assert not list(path.parent.glob("*.tmp")), "the temporary file must be renamed over the cassette"

    replay = ResponseCache(store=CassetteStore(path), mode="read_only")
    again = await agent.run("Make a profile for Ada", capabilities=[replay])
    assert again.output == Profile(name="Ada", age=36)
    assert stand_in.calls == 1


async def test_run_level_entries_stay_out_of_the_cassette(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    stand_in = StandIn()
    agent = make_agent(stand_in)
    store = CassetteStore(path)
    for _ in range(2):
        assert await cached_agent_run(agent, "Ada", "profile", store=store) == Profile(name="Ada", age=36)
    keys = [e["key"] for e in load(path)["entries"]]
    assert len(keys) == 1
    assert ":r:" in keys[0]
    assert await store.get(keys[0].replace(":r:", ":run:")) is None
    await store.set("pyai_caching:default:run:{abc}", b'{"kind": "run"}', ttl=None)
    assert [e["key"] for e in load(path)["entries"]] == keys


async def test_read_only_miss_explains_the_difference(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    stand_in = StandIn()
    agent = make_agent(stand_in, model_settings={"temperature": 0.0})
    await agent.run("Make a profile for Ada", capabilities=[ResponseCache(store=CassetteStore(path))])

    replay = ResponseCache(store=CassetteStore(path, miss_hint="To record it: do X"), mode="read_only")
    with pytest.raises(CacheMissError) as info:
        await agent.run("Make a profile for Grace", capabilities=[replay], model_settings={"temperature": 0.5})
    message = str(info.value)
    assert stand_in.calls == 1
    assert "No request recorded in cassette" in message
    assert "setting 'temperature': 0.0 -> 0.5" in message
    assert "(user-prompt) content: 'Make a profile for Ada' -> 'Make a profile for Grace'" in message
    assert '-          "content": "Make a profile for Ada",' in message
    assert '+          "content": "Make a profile for Grace",' in message
    assert message.rstrip().endswith("To record it: do X")


async def test_miss_on_a_missing_cassette_says_so(tmp_path: Path) -> None:
    replay = ResponseCache(store=CassetteStore(tmp_path / "none.json"), mode="read_only")
    with pytest.raises(CacheMissError, match="does not exist: nothing was recorded"):
        await make_agent(StandIn()).run("Ada", capabilities=[replay])
    assert not (tmp_path / "none.json").exists()


async def test_secrets_are_scrubbed_but_the_key_is_not(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    secret = "sk-proj-" + "A1b2C3d4" * 5
    prompt = f"My key is {secret} and my mail is ada@example.com; Authorization: Bearer abcdefghijkl123"
    settings: Any = {"extra_body": {"api_key": secret, "user": "u1"}, "temperature": 0.0}

    def scrub(entry: dict[str, Any]) -> dict[str, Any]:
        return json.loads(json.dumps(entry).replace("ada@example.com", "<email>"))  # type: ignore[no-any-return]

    agent = make_agent(StandIn(), model_settings=settings)
    await agent.run(prompt, capabilities=[ResponseCache(store=CassetteStore(path, scrub=scrub))])
    text = path.read_text(encoding="utf-8")
    assert secret not in text
    assert "abcdefghijkl123" not in text
    assert "ada@example.com" not in text
    assert "<email>" in text
    assert '"api_key": "<scrubbed>"' in text
    assert '"user": "u1"' in text

    replayed = StandIn()  # the same model (its function is part of the key), which must not be called
    replay = ResponseCache(store=CassetteStore(path), mode="read_only")
    out = await make_agent(replayed, model_settings=settings).run(prompt, capabilities=[replay])
    assert out.output == Profile(name="Ada", age=36)
    assert replayed.calls == 0


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("key sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123", "abcdefghijklmnop"),
        ("AKIAIOSFODNN7EXAMPLE is aws", "AKIAIOSFODNN7EXAMPLE"),
        ("token ghp_" + "a" * 36, "ghp_aaaa"),
        ("Authorization: Basic dXNlcjpwYXNz", "dXNlcjpwYXNz"),
        ("redis://user:hunter2@host:6379/0", "hunter2"),
        ("password=correct-horse-battery", "correct-horse"),
        ("OPENAI_API_KEY = 'abc123def456'", "abc123def456"),
        ("x eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "dozjg"),
        ("AIza" + "B" * 35, "BBBBBBBB"),
    ],
)
def test_well_known_secret_shapes_are_scrubbed(text: str, gone: str) -> None:
    assert gone not in scrub_text(text)


@pytest.mark.parametrize(
    "text",
    ["max_tokens: 1000", "a basic understanding of tokens", "the secret of a good soup is time", "sk-short"],
)
def test_ordinary_text_is_kept(text: str) -> None:
    assert scrub_text(text) == text


async def test_a_scrub_hook_that_breaks_the_entry_is_refused(tmp_path: Path) -> None:
    store = CassetteStore(tmp_path / "c.json", scrub=lambda entry: {"oops": True})
    cache = ResponseCache(store=store, on_cache_error="raise")
    with pytest.raises(CacheError, match="scrub hook returned an entry that is no longer valid"):
        await make_agent(StandIn()).run("Ada", capabilities=[cache])
    assert not (tmp_path / "c.json").exists()


@pytest.mark.parametrize("folder", ["short", "deep-folder-" * 20], ids=["short path", "240-character folder"])
async def test_corrupt_cassette_is_a_loud_error(tmp_path: Path, folder: str) -> None:
    # However long the path, the error keeps what failed (its start) and the hint that fixes it (its end).
    path = tmp_path / folder / "c.json"
    path.parent.mkdir()
    path.write_text("<<<<<<< HEAD\n", encoding="utf-8")
    cache = ResponseCache(store=CassetteStore(path), mode="read_only", on_cache_error="raise")
    with pytest.raises(CacheError, match=r"CacheError: cassette .*c\.json is not valid JSON .*merge conflict") as error:
        await make_agent(StandIn()).run("Ada", capabilities=[cache])
    assert str(error.value).endswith("or delete it and record the test again")


async def test_signed_entries_are_refused(tmp_path: Path) -> None:
    cache = ResponseCache(store=CassetteStore(tmp_path / "c.json"), secret="s" * 32, on_cache_error="raise")
    with pytest.raises(CacheError, match="keeps unsigned entries"):
        await make_agent(StandIn()).run("Ada", capabilities=[cache])


def test_bad_arguments_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="path must be a file path"):
        CassetteStore(42)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="scrub must be a callable"):
        CassetteStore(tmp_path / "c.json", scrub="emails")  # type: ignore[arg-type]


def _record_in_another_process(path: str, prompt: str) -> None:
    import asyncio

    stand_in = StandIn()
    agent = make_agent(stand_in)
    asyncio.run(agent.run(prompt, capabilities=[ResponseCache(store=CassetteStore(path))]))


@pytest.mark.slow
def test_two_processes_recording_into_one_cassette_keep_both_entries(tmp_path: Path) -> None:
    path = tmp_path / "shared.json"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_record_in_another_process, args=(str(path), f"prompt {i}")) for i in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    prompts = sorted(
        p["content"]
        for e in load(path)["entries"]
        for m in e["request"]["messages"]
        for p in m["parts"]
        if p["part_kind"] == "user-prompt"
    )
    assert prompts == [f"prompt {i}" for i in range(3)]


async def test_delete_clear_and_scan(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    store = CassetteStore(path)
    agent = make_agent(StandIn())
    for prompt in ("a", "b"):
        await agent.run(prompt, capabilities=[ResponseCache(store=store, namespace="ns1")])
    await agent.run("c", capabilities=[ResponseCache(store=store, namespace="ns2")])
    keys = [k async for k in store.scan("pyai_caching:ns1:")]
    assert len(keys) == 2
    assert await store.delete(keys[0]) is True
    assert await store.delete(keys[0]) is False
    assert await store.clear("pyai_caching:ns2:") == 1
    assert store.recorded_keys() == [keys[1]]
    assert store.remove([keys[1]]) == 1
    assert not path.exists(), "a cassette left empty is deleted"
