"""Helpers for the CLI tests: run `pyai-caching` in-process (Typer's `CliRunner`) or as a subprocess, fill stores
with real entries, and read Rich tables back as rows of cells."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from _agents import Counter, make_agent
from pydantic import BaseModel
from pydantic_ai.messages import ModelResponse, ToolCallPart
from pydantic_ai.usage import RequestUsage
from typer.testing import CliRunner, Result

from pyai_caching import ModelCosts, cached_agent_run
from pyai_caching.cli import app
from pyai_caching.engine.entries import EntryMeta, ResponseEntry, encode_entry
from pyai_caching.engine.keys import entry_key
from pyai_caching.stores import Store

ROOT = Path(__file__).resolve().parents[2]

WIDTH = "120"
"""Terminal width for Rich in the tests, so that tables never wrap."""

PRICES = {"test-model": ModelCosts(3, 15)}
"""Custom prices for the test model: 100 input + 20 output tokens cost $0.0006."""


class Person(BaseModel):
    name: str
    age: int


@dataclass
class Cli:
    """Runs `pyai-caching` in this process, with a fixed width and no inherited store configuration."""

    runner: CliRunner

    def __call__(self, *args: str, input: str | None = None, env: dict[str, str | None] | None = None) -> Result:
        environment: dict[str, str | None] = {
            "COLUMNS": WIDTH,
            "LLM_CACHE_REDIS_URL": None,
            "LLM_CACHE_DIR": None,
            "NO_COLOR": "1",
        }
        environment.update(env or {})
        return self.runner.invoke(app, list(args), input=input, env=environment, catch_exceptions=False)


def run_module(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """`python -m pyai_caching ...` in a subprocess (a fresh interpreter, as a user would run it)."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("LLM_CACHE_")}
    environment.update({"COLUMNS": WIDTH, "NO_COLOR": "1", **(env or {})})
    return subprocess.run(
        [sys.executable, "-m", "pyai_caching", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        cwd=ROOT,
        check=False,
    )


async def fill(
    store: Store, *, namespace: str = "default", tasks: dict[str, int] | None = None, repeat: int = 1, **kwargs: Any
) -> Counter:
    """Real entries: `tasks` maps a task name to how many distinct prompts to run through `cached_agent_run`
    (each `repeat` times: the first call of a prompt misses, the others hit). A prompt of a static agent leaves
    two entries: its request-level entry and its run-level entry."""
    counter = Counter()
    agent = make_agent(counter, output_type=Person)
    kwargs.setdefault("explain_misses", False)  # these tests count entries and other keys, not the miss log
    for task, prompts in (tasks or {"make_profile": 1}).items():
        for i in range(prompts):
            for _ in range(repeat):
                await cached_agent_run(
                    agent, f"{task} prompt {i}", task, store=store, namespace=namespace, custom_costs=PRICES, **kwargs
                )
    return counter


async def put_entry(store: Store, *, namespace: str, task: str, age_days: float, digest: str) -> str:
    """Write one request-level entry directly, created `age_days` ago; return its key."""
    meta = EntryMeta(
        namespace=namespace,
        model="test:old-model",
        task=task,
        cost=Decimal("0.001"),
        created_at=time.time() - age_days * 86400,
    )
    response = ModelResponse(parts=[ToolCallPart("final_result", {"name": "Old", "age": 1})])
    response.usage = RequestUsage(input_tokens=10, output_tokens=5)
    entry = ResponseEntry(meta=meta, request={"header": {}, "messages": []}, response=response)
    key = entry_key(namespace, "r", digest)
    await store.set(key, encode_entry(entry), ttl=None)
    return key


def run(coro: Any) -> Any:
    """Run a coroutine from a synchronous test (the CLI runs its own event loops, so these tests are sync)."""
    return asyncio.run(coro)


def squeezed(text: str) -> str:
    """`text` without whitespace and box-drawing characters: a value folded onto several lines reads whole again
    (compare a squeezed expectation with squeezed output; it depends on no terminal width or path length)."""
    return re.sub(r"[\s\u2500-\u257f]", "", text)


def words(output: str) -> str:
    """The text as a reader takes it in: single spaces wherever Rich wrapped a line or padded a cell.

    Rich wraps at the terminal width, so where a line breaks depends on what else is on it (a temporary path is
    40 characters on one machine and 250 on another). Assert phrases on `words(out)`, and data on `--json`.
    """
    return " ".join(re.sub(r"\x1b\[[0-9;]*m", "", output).split())


def table_rows(output: str, title: str) -> list[list[str]]:
    """The rows of the Rich table printed under `title` (header first), as lists of stripped cell texts."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", output).splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(title))
    rows: list[list[str]] = []
    for line in lines[start + 1 :]:
        if line.startswith(("┏", "┡", "├")):
            continue
        if line.startswith(("└", "┗")) or not line.strip():
            break
        if line.startswith(("┃", "│")):
            rows.append([cell.strip() for cell in line.strip("┃│ ").replace("┃", "│").split("│")])
    return rows
