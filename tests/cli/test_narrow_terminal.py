"""At 80 columns and in a pipe, tables never cut the name of a row: value columns are left out first (and named),
and a name longer than the terminal is folded onto more lines, never shortened with `…`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import redis
from _agents import Counter
from _cli_support import PRICES, ROOT, Cli, fill, run, squeezed
from pydantic_ai import Agent

from pyai_caching import LocalStore, RedisStore, cached_agent_run
from pyai_caching.spend.recorders import RedisSpendLedger

NARROW = {"COLUMNS": "80"}
MODELS = ("a" * 36, "b" * 36)  # `function:aaaa…` and `function:bbbb…` are only told apart by their full names
TASKS = ("make_profile_for_the_customer_on_boarding_flow", "make_profile_for_the_customer_off_boarding_flow")


async def record(store: RedisStore) -> None:
    ledger = RedisSpendLedger(store=store)
    for model, task in zip(MODELS, TASKS, strict=True):
        agent = Agent(Counter().model(model))
        for _ in range(2):
            await cached_agent_run(agent, "hi", task, store=store, expense_hook=ledger, custom_costs=PRICES)


def test_spend_at_80_columns_shows_whole_task_and_model_names(cli: Cli, redis_url: str) -> None:
    run(record(RedisStore(redis_url)))

    out = cli("spend", "--redis-url", redis_url, env=NARROW).stdout

    for name in (*TASKS, *(f"function:{m}" for m in MODELS)):
        assert re.search(rf"│ {name} +│", out), name
    assert "…" not in out
    assert "Left out at this width:" in out
    assert all(len(line) <= 80 for line in out.splitlines())
    # The cost columns stay: they are what `spend` is for.
    assert "Spent" in out
    assert "Saved" in out


def test_stats_at_80_columns_folds_a_long_store_path(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path.joinpath(*["a-rather-long-folder-name"] * 6)
    assert len(str(folder)) > 150
    run(fill(LocalStore(folder), tasks={TASKS[0]: 1, TASKS[1]: 1}))

    out = cli("stats", "--dir", str(folder), env=NARROW).stdout

    assert "…" not in out
    assert squeezed(f"Store local:{folder / 'pyai_caching.sqlite3'}") in squeezed(out)
    for task in TASKS:
        assert re.search(rf"│ {task} +│", out), task
    missing = cli("stats", "--dir", str(folder / "nothing-here"), env=NARROW).stdout
    assert squeezed(f"{folder / 'nothing-here' / 'pyai_caching.sqlite3'} (no cache file yet)") in squeezed(missing)


def test_a_name_longer_than_the_terminal_is_folded_not_cut(cli: Cli, tmp_path: Path) -> None:
    task = "t" * 150
    run(fill(LocalStore(tmp_path), tasks={task: 1}))

    out = cli("stats", "--dir", str(tmp_path), env=NARROW).stdout

    assert "…" not in out
    table = out.split("By task")[1].splitlines()
    body = table[next(i for i, line in enumerate(table) if line.startswith("┡")) + 1 :]
    first_cells = [line.split("│")[1].strip() for line in body if line.startswith("│")]
    assert "".join(first_cells) == task


def test_piped_output_without_columns_keeps_names(redis_url: str, redis_client: redis.Redis) -> None:
    run(record(RedisStore(redis_url)))
    environment = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES") and "LLM_CACHE" not in k}
    done = subprocess.run(
        [sys.executable, "-m", "pyai_caching", "spend", "--by", "model", "--redis-url", redis_url],
        capture_output=True,
        text=True,
        env=environment,
        cwd=ROOT,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    for model in MODELS:
        assert f"function:{model}" in done.stdout
    assert "…" not in done.stdout
    as_json = json.loads(
        subprocess.run(
            [sys.executable, "-m", "pyai_caching", "spend", "--by", "model", "--redis-url", redis_url, "--json"],
            capture_output=True,
            text=True,
            env=environment,
            cwd=ROOT,
            timeout=60,
            check=True,
        ).stdout
    )
    assert {row["model"] for row in as_json["by_model"]} == {f"function:{m}" for m in MODELS}
