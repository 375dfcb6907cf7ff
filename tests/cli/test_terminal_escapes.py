"""Data never drives the terminal: control sequences in prompts, task names, model names, keys and paths are shown
escaped (`\\x1b`) in tables, panels, errors and `--json`, and `--json` still round-trips the exact strings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from _agents import Counter
from _cli_support import Cli, fill, run, squeezed
from _planted import RAW_CONTROLS, TERMINAL_ATTACKS
from pydantic_ai import Agent
from typer.testing import Result

from pyai_caching import LocalStore, RedisStore, Store, cached_agent_run
from pyai_caching._util.escape import escape_text
from pyai_caching.spend.recorders import RedisSpendLedger

ATTACKS = list(TERMINAL_ATTACKS.values())
HOSTILE_MODEL = "model\x1b]0;retitled\x07\x9b2J"


def clean(result: Result) -> str:
    """stdout of a successful command, with no raw control character anywhere in its output."""
    assert result.exit_code == 0, result.output
    leaked = sorted({c for c in result.output if c in RAW_CONTROLS})
    assert not leaked, f"raw control characters {leaked!r} reached the terminal"
    return result.stdout


async def fill_hostile(store: Store, **kwargs: Any) -> None:
    """Entries whose tasks and prompts hold every attack, and one from a model whose name holds some."""
    await fill(store, tasks=dict.fromkeys(ATTACKS, 1), **kwargs)
    agent = Agent(Counter().model(HOSTILE_MODEL))
    await cached_agent_run(agent, "hello", "model-name", store=store, **kwargs)


@pytest.fixture
def hostile_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "cache\x1b]0;folder\x07\x9b"
    run(fill_hostile(LocalStore(folder)))
    return folder


def test_stats_and_inspect_tables_escape_every_control_character(cli: Cli, hostile_dir: Path) -> None:
    where = ["--dir", str(hostile_dir)]
    stats = clean(cli("stats", *where, env={"COLUMNS": "200"}))
    for attack in ATTACKS:
        assert escape_text(attack) in stats, attack
    assert escape_text(f"function:{HOSTILE_MODEL}") in stats
    assert squeezed(escape_text(str(hostile_dir))) in squeezed(stats)  # a long temporary path is folded

    panels = clean(cli("inspect", "--last", "100", *where, env={"COLUMNS": "200"}))
    for attack in ATTACKS:
        assert f"[user] {escape_text(attack)} prompt 0" in panels, attack
    clean(cli("inspect", "--last", "100", "--full", *where))


def test_json_output_escapes_and_round_trips(cli: Cli, hostile_dir: Path) -> None:
    where = ["--dir", str(hostile_dir)]
    stats_text = clean(cli("stats", *where, "--json"))
    stats = json.loads(stats_text)
    assert {row["task"] for row in stats["by_task"]} == {*ATTACKS, "model-name"}
    assert f"function:{HOSTILE_MODEL}" in {row["model"] for row in stats["by_model"]}
    assert stats["store"].endswith("cache\x1b]0;folder\x07\x9b/pyai_caching.sqlite3")
    assert "\\u001b]0;pwned\\u0007" in stats_text  # what `cat` shows: escapes, not a new window title
    assert "\\u009b31mred" in stats_text

    entries = json.loads(clean(cli("inspect", "--last", "100", *where, "--json")))
    prompts = {
        part["content"]
        for entry in entries
        for message in (entry["entry"].get("request", {}).get("messages") or entry["entry"].get("new_messages"))
        for part in message["parts"]
        if part["part_kind"] == "user-prompt"
    }
    assert {f"{attack} prompt 0" for attack in ATTACKS} <= prompts


def test_confirmation_and_errors_are_escaped(cli: Cli, hostile_dir: Path) -> None:
    where = ["--dir", str(hostile_dir)]
    declined = cli("clear", "--task", ATTACKS[0], *where, input="n\n")
    assert declined.exit_code == 1
    assert not {c for c in declined.output if c in RAW_CONTROLS}
    assert escape_text(str(hostile_dir)) in declined.stderr  # a prompt: one line, never folded

    for args in (
        ["inspect", "pyai_caching:\x1b[2J:r:{" + "0" * 64 + "}", *where],
        ["inspect", "\x1b]0;x\x07"],
        ["stats", "--redis-url", "redis://\x1b[2J\x9bhost:1/0"],
        ["stats", "--redis-url", "\x1b]0;title\x07"],
    ):
        for extra in ([], ["--json"]):
            result = cli(*args, *extra)
            assert result.exit_code != 0
            assert not {c for c in result.output if c in RAW_CONTROLS}, args
            assert "\\x1b" in result.stderr or "\\u001b" in result.stderr


def test_spend_escapes_ledger_names(cli: Cli, redis_url: str) -> None:
    store = RedisStore(redis_url)
    run(fill_hostile(store, expense_hook=RedisSpendLedger(store=store)))

    table = clean(cli("spend", "--redis-url", redis_url, "--by", "task", "--by", "model", env={"COLUMNS": "200"}))
    for attack in ATTACKS:
        assert escape_text(attack) in table, attack
    assert escape_text(f"function:{HOSTILE_MODEL}") in table

    report = json.loads(clean(cli("spend", "--redis-url", redis_url, "--json")))
    assert {row["task"] for row in report["by_task"]} == {*ATTACKS, "model-name"}
    missing = clean(cli("spend", "--redis-url", redis_url, "-t", "\x1b[2Jnone"))
    assert "\\x1b[2Jnone" in missing
