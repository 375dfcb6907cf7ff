"""`pyai-caching explain`: misses of real agents, read back by the command (in process and as a subprocess)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from _agents import Counter
from _cli_support import Cli, run, run_module, words
from pydantic_ai import Agent, Tool
from pydantic_ai.models.function import FunctionModel

from pyai_caching import LocalStore, RedisStore, cached_agent_run
from pyai_caching.cli import ExitCode
from pyai_caching.stores import Store


def _agent(counter: Counter, **kwargs: Any) -> Agent[None, str]:
    return Agent(FunctionModel(counter, model_name="explain-model"), **kwargs)


async def _calls(store: Store, *calls: tuple[Agent[None, str], str, str]) -> None:
    """The calls, in order (run with `run`: the miss log is written when its event loop ends)."""
    for agent, prompt, task in calls:
        await cached_agent_run(agent, prompt, task, store=store)


def test_a_timestamped_prompt(cli: Cli, tmp_path: Path) -> None:
    agent = _agent(Counter(payload="ok"), instructions="Summarize.")
    store = LocalStore(tmp_path)
    run(_calls(store, (agent, "Report of 2026-03-01 09:15:02", "report")))
    run(_calls(store, (agent, "Report of 2026-03-02 09:15:07", "report")))

    result = cli("explain", "--dir", str(tmp_path), "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["recorded"] == 2
    latest, first = doc["misses"]
    assert (latest["verdict"], first["verdict"]) == ("volatile_token", "no_other_entry")
    assert latest["differences"][0]["volatile"] == ["timestamp"]

    text = words(cli("explain", "--dir", str(tmp_path), "--last", "1").stdout)
    assert "1 most recent of 2 recorded misses in every namespace" in text
    assert "task report model function:explain-model" in text
    assert "The only difference is a timestamp in message 1, part 1 (user-prompt) content" in text
    assert "2026-03-02" not in text  # the prompt itself is never shown


def test_a_changed_tool_description_on_redis(cli: Cli, redis_url: str) -> None:
    counter = Counter(payload="ok")

    def forecast(city: str) -> str:
        return city

    before = _agent(counter, tools=[Tool(forecast, description="The forecast of a city.")])
    after = _agent(counter, tools=[Tool(forecast, description="Tomorrow's forecast of a city.")])
    other = _agent(counter)
    run(_calls(RedisStore(redis_url), (before, "Rain in Oslo?", "weather"), (other, "Hello", "greeting")))
    run(_calls(RedisStore(redis_url), (after, "Rain in Oslo?", "weather")))

    text = words(cli("explain", "--redis-url", redis_url, "--task", "weather").stdout)
    assert "2 most recent of 2 recorded misses in every namespace, task 'weather'" in text
    assert "Differs from the nearest entry in tool 'forecast' description (changed)." in text
    assert "- tool 'forecast' description: changed" in text

    doc = json.loads(cli("explain", "--redis-url", redis_url, "-n", "default", "--last", "1", "--json").stdout)
    assert (doc["namespace"], doc["recorded"], len(doc["misses"])) == ("default", 3, 1)
    assert doc["misses"][0]["differences"][0]["ingredient"] == "tool 'forecast' description"


def test_nothing_recorded(cli: Cli, tmp_path: Path) -> None:
    missing = tmp_path / "never-created"
    result = cli("explain", "--dir", str(missing))
    assert result.exit_code == 0, result.output
    assert "No miss recorded in every namespace." in words(result.stdout)
    assert not missing.exists()
    doc = json.loads(cli("explain", "--dir", str(missing), "--json", "-n", "tenant").stdout)
    assert (doc["namespace"], doc["recorded"], doc["misses"]) == ("tenant", 0, [])


def test_bad_options_and_an_unreachable_store(cli: Cli, tmp_path: Path) -> None:
    assert cli("explain", "--dir", str(tmp_path), "--last", "0").exit_code == ExitCode.USAGE
    bad = cli("explain", "--dir", str(tmp_path), "-n", "no spaces", "--json")
    assert bad.exit_code == ExitCode.USAGE
    assert "namespace 'no spaces' is not allowed" in json.loads(bad.stderr)["error"]
    down = cli("explain", "--redis-url", "redis://127.0.0.1:1/0")
    assert down.exit_code == ExitCode.UNREACHABLE


def test_as_a_subprocess(tmp_path: Path) -> None:
    agent = _agent(Counter(payload="ok"))
    store = LocalStore(tmp_path)
    run(_calls(store, (agent, "Ticket 3f2504e0-4f89-41d3-9a0c-0305e82c3301 is open", "tickets")))
    run(_calls(store, (agent, "Ticket 7d444840-9dc0-41d3-9a0c-0305e82c3301 is open", "tickets")))
    result = run_module("explain", "--dir", str(tmp_path), "--json")
    assert result.returncode == 0, result.stderr
    latest = json.loads(result.stdout)["misses"][0]
    assert (latest["verdict"], latest["differences"][0]["volatile"]) == ("volatile_token", ["uuid"])
