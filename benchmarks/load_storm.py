"""Model-call storms under CPU load: `python benchmarks/load_storm.py` (`--runs 20`, `--processes 8`, ...).

The scenario of issue 13: `processes` worker processes each start `calls` concurrent `cached_agent_run` calls
over `prompts` distinct prompts (the model takes `model_sleep` seconds), all against one Redis, all at the same
moment. The machine is busy (every process runs hundreds of pydantic-ai runs at once on a few cores), so event
loops lag by hundreds of milliseconds: nothing here is about a slow server.

Each run uses a fresh namespace and has two phases:

* **cold**: nothing is cached. Exactly one model call per distinct prompt is right (`prompts` in all, across
  every process); every other call waits for the entry (in its process, or across processes on the fill lock).
* **warm**: the same calls again: every one must be a hit (0 model calls).

Starts its own `redis-server` on a free loopback port (never the system Redis). Prints one Markdown table: model
calls, errors (exceptions callers saw), wrong answers, cache errors counted by the library (failed or skipped store
operations), call latency of the cold phase and hit latency of the warm phase (p50 / p99, milliseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # a fresh clone: import the package from the source tree
    sys.path.insert(1, str(_HERE.parent))


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the worker process -----------------------------------------------------------------------------------------


async def _worker(options: dict[str, Any]) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelMessage, ModelRequest, ModelResponse, TextPart, UserPromptPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from pyai_caching import cached_agent_run
    from pyai_caching.observability import metrics

    calls = 0

    async def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal calls
        calls += 1
        await asyncio.sleep(options["model_sleep"])
        prompt = next(
            p.content
            for m in messages
            if isinstance(m, ModelRequest)
            for p in m.parts
            if isinstance(p, UserPromptPart) and isinstance(p.content, str)
        )
        return ModelResponse(parts=[TextPart(f"answer to {prompt}")])

    agent = Agent(FunctionModel(model, model_name="storm-model"), instructions="Answer briefly.")
    url, prompts, n = options["url"], options["prompts"], options["calls"]

    async def one(i: int, namespace: str) -> tuple[float, str | None]:
        prompt = f"question {i % prompts}"
        started = time.perf_counter()
        try:
            answer = await cached_agent_run(agent, prompt, "storm", redis_url=url, namespace=namespace, retry=False)
        except Exception as error:
            return time.perf_counter() - started, f"{type(error).__name__}: {error}"[:200]
        elapsed = time.perf_counter() - started
        return elapsed, None if answer == f"answer to {prompt}" else f"wrong answer {answer!r}"

    # Warm up (imports, schemas, the connection pool, the fast-path template) on a namespace of its own.
    await asyncio.gather(*(one(i, f"warmup-{os.getpid()}") for i in range(2)))
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() == "quit":
            return
        phase, namespace = line.split()
        calls_before, errors_before = calls, metrics.snapshot().total.errors
        results = await asyncio.gather(*(one(i, namespace) for i in range(n)))
        snap = metrics.snapshot()
        report = {
            "phase": phase,
            "model_calls": calls - calls_before,
            "latencies": [r[0] for r in results],
            "errors": [r[1] for r in results if r[1] is not None and not r[1].startswith("wrong")],
            "wrong": [r[1] for r in results if r[1] is not None and r[1].startswith("wrong")],
            "cache_errors": snap.total.errors - errors_before,
            "error_kinds": dict(snap.errors_by_kind),
        }
        print(json.dumps(report), flush=True)


# -- the driver -------------------------------------------------------------------------------------------------


@dataclass
class Phase:
    model_calls: int
    errors: list[str]
    wrong: list[str]
    cache_errors: int
    latencies: list[float]
    kinds: dict[str, int]


def _phase(workers: list[subprocess.Popen[str]], phase: str, namespace: str) -> Phase:
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write(f"{phase} {namespace}\n")
        worker.stdin.flush()
    reports = []
    for worker in workers:
        assert worker.stdout is not None
        reports.append(json.loads(worker.stdout.readline()))
    kinds: dict[str, int] = {}
    for r in reports:
        for kind, count in r["error_kinds"].items():
            kinds[kind] = max(kinds.get(kind, 0), count)
    return Phase(
        model_calls=sum(r["model_calls"] for r in reports),
        errors=[e for r in reports for e in r["errors"]],
        wrong=[w for r in reports for w in r["wrong"]],
        cache_errors=sum(r["cache_errors"] for r in reports),
        latencies=[x for r in reports for x in r["latencies"]],
        kinds=kinds,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--calls", type=int, default=200, help="concurrent calls per process")
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--model-sleep", type=float, default=0.3)
    parser.add_argument("--redis-url", help="use this Redis instead of starting a throwaway one (a database you own)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        asyncio.run(_worker(json.loads(args.worker)))
        return

    sys.path.insert(0, str(_HERE))
    from _server import RedisServer

    with RedisServer() as server:
        url = args.redis_url or server.url
        options = {"url": url, "prompts": args.prompts, "calls": args.calls, "model_sleep": args.model_sleep}
        env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_CACHE_")}
        command = [sys.executable, __file__, "--worker", json.dumps(options)]
        workers = [
            subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
            for _ in range(args.processes)
        ]
        try:
            for worker in workers:
                assert worker.stdout is not None
                if worker.stdout.readline().strip() != "ready":
                    raise SystemExit("a worker failed to start")
            print(
                f"{args.processes} processes x {args.calls} concurrent calls over {args.prompts} prompts, model "
                f"{args.model_sleep} s, {os.cpu_count()} cores; expected per run: {args.prompts} model calls cold, "
                "0 warm",
                file=sys.stderr,
            )
            print("| run | model calls (cold) | model calls (warm) | errors | wrong | cache errors | "
                  "cold call p50 / p99 ms | warm hit p50 / p99 ms | wall s |")  # fmt: skip
            print("|---|---|---|---|---|---|---|---|---|")
            failures = 0
            all_hits: list[float] = []
            for run in range(1, args.runs + 1):
                namespace = f"storm-{os.getpid()}-{run}"
                started = time.monotonic()
                cold = _phase(workers, "cold", namespace)
                warm = _phase(workers, "warm", namespace)
                wall = time.monotonic() - started
                all_hits += warm.latencies
                errors = len(cold.errors) + len(warm.errors)
                wrong = len(cold.wrong) + len(warm.wrong)
                ok = cold.model_calls == args.prompts and warm.model_calls == 0 and errors == 0 and wrong == 0
                failures += not ok
                print(
                    f"| {run} | {cold.model_calls} | {warm.model_calls} | {errors} | {wrong} | "
                    f"{cold.cache_errors + warm.cache_errors} | "
                    f"{_percentile(cold.latencies, 0.5) * 1000:.0f} / {_percentile(cold.latencies, 0.99) * 1000:.0f} | "
                    f"{_percentile(warm.latencies, 0.5) * 1000:.0f} / {_percentile(warm.latencies, 0.99) * 1000:.0f} | "
                    f"{wall:.1f} |",
                    flush=True,
                )
                for text in (cold.errors + warm.errors + cold.wrong + warm.wrong)[:3]:
                    print(f"    {text}", file=sys.stderr)
                if cold.kinds or warm.kinds:
                    print(f"    cache error kinds so far: {warm.kinds or cold.kinds}", file=sys.stderr)
            print(
                f"\n{args.runs - failures} of {args.runs} runs exact ({args.prompts} model calls cold, 0 warm, "
                f"0 errors, 0 wrong); warm hit p99 over all runs: {_percentile(all_hits, 0.99) * 1000:.0f} ms"
            )
        finally:
            for worker in workers:
                if worker.stdin is not None and worker.poll() is None:
                    worker.stdin.write("quit\n")
                    worker.stdin.close()
            for worker in workers:
                try:
                    worker.wait(10)
                except subprocess.TimeoutExpired:
                    worker.kill()
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
