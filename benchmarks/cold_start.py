"""The first call of a fresh process: a cache hit against a plain `agent.run`, side by side.

```bash
python benchmarks/cold_start.py            # 15 fresh processes of each kind, interleaved
python benchmarks/cold_start.py --runs 31
```

Scripts, CLIs, serverless functions and every test process that replays cassettes pay the first call of a
process. Each measurement is a new Python process that imports the agent's module, then times its first call only
(imports are timed separately): a plain `agent.run` with a model that answers instantly, and `cached_agent_run`
answered from the embedded `LocalStore` that an earlier process filled. The processes of both kinds take turns, so
load on the machine hits both alike, and the table shows medians. It also times `pyai-caching --version` and
`import pyai_caching`. Goal: the first call, as a hit, at most 1.5x a plain first call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_AGENT = """
from pydantic import BaseModel
from pydantic_ai import Agent
from pydantic_ai.messages import ModelResponse, ToolCallPart
from pydantic_ai.models.function import FunctionModel


class Profile(BaseModel):
    name: str
    age: int


def answer(messages, info):
    return ModelResponse(parts=[ToolCallPart(info.output_tools[0].name, {"name": "Ada", "age": 36})])


agent = Agent(FunctionModel(answer, model_name="cold-start"), output_type=Profile, instructions="Profiles.")
"""

_CALL = """
import asyncio, sys, time
started = time.perf_counter()
from cold_agent import agent
from pyai_caching import cached_agent_run
imported = time.perf_counter()

async def main():
    t = time.perf_counter()
    if sys.argv[1] == "plain":
        await agent.run("Ada")
    else:
        await cached_agent_run(agent, "Ada", "cold_start")
    return time.perf_counter() - t

first = asyncio.run(main())
print(f"{first * 1e3:.3f} {(imported - started) * 1e3:.3f}")
"""


def _python(folder: Path, *args: str) -> tuple[float, float]:
    env = {**os.environ, "PYTHONPATH": f"{folder}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    env["LLM_CACHE_DIR"] = str(folder / "cache")
    env.pop("LLM_CACHE_REDIS_URL", None)
    env.pop("LLM_CACHE_SECRET", None)
    out = subprocess.run([sys.executable, str(folder / "call.py"), *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        raise SystemExit(f"benchmark process failed:\n{out.stderr}")
    first, imported = out.stdout.split()
    return float(first), float(imported)


def _wall(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, capture_output=True, check=True)
    return (time.perf_counter() - started) * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=15, help="fresh processes of each kind (default 15)")
    runs = parser.parse_args(argv).runs
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        (folder / "cold_agent.py").write_text(_AGENT)
        (folder / "call.py").write_text(_CALL)
        _python(folder, "cached")  # the miss that fills the store
        _python(folder, "cached")  # and a first hit, so every measured process finds the same store
        plain, cached, imports = [], [], []
        for i in range(runs):
            plain.append(_python(folder, "plain")[0])
            first, imported = _python(folder, "cached")
            cached.append(first)
            imports.append(imported)
            print(f"  {i + 1}/{runs}", file=sys.stderr)
        script = Path(sys.executable).with_name("pyai-caching")
        version = [_wall([str(script), "--version"]) for _ in range(5)] if script.exists() else []
        bare = [_wall([sys.executable, "-c", "import pyai_caching"]) for _ in range(5)]
    p, c = statistics.median(plain), statistics.median(cached)
    rows = [
        ("first call, plain `agent.run`", f"{p:.1f} ms", "1x", ""),
        ("first call, `cached_agent_run`, a hit (LocalStore)", f"{c:.1f} ms", f"{c / p:.2f}x plain",
         "<= 1.5x plain" + (" (met)" if c <= 1.5 * p else " (**not met**)")),
        ("import of the agent module + `pyai_caching` (before the first call)", f"{statistics.median(imports):.0f} ms",
         "", ""),
        ("`python -c 'import pyai_caching'` (wall, whole process)", f"{statistics.median(bare):.0f} ms", "", ""),
    ]  # fmt: skip
    if version:
        v = statistics.median(version)
        rows.append(("`pyai-caching --version` (wall)", f"{v:.0f} ms", "", "<= 300 ms" + (" (met)" if v <= 300 else
                     " (**not met**)")))  # fmt: skip
    print(f"Medians of {runs} fresh processes of each kind, interleaved.\n")
    print("| figure | median | ratio | target |\n|---|---|---|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
