"""Under load, identical calls still pay once: busy processes must not turn into a storm of model calls.

Several worker processes (`storm_worker.py`) each start many concurrent `cached_agent_run` calls over a few
distinct prompts against one real `redis-server`, all at once, each after some CPU work, so that their event
loops come back to read Redis replies later than the Redis timeouts (a busy service: the replies arrive on time
and are read late).
Exactly one model call per distinct prompt, across every process, is right; every other call waits for the entry.
A second pass over the same prompts must be all hits. The figures of each round are printed (run with `-s`).

The full scenario of issue 13 (8 processes x 200 calls, 20 runs) is `benchmarks/load_storm.py`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from _redis_servers import RedisServer

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("storm_worker.py")
PROCESSES = 4
CALLS = 100
PROMPTS = 25
ROUNDS = 4
CPU = 0.01
"""Seconds of CPU work before each call: a burst of 100 holds the event loop for 1 s (socket_timeout is 0.5 s)."""


@pytest.fixture
def workers(redis_server_factory: Callable[..., RedisServer]) -> Iterator[list[subprocess.Popen[str]]]:
    server = redis_server_factory()
    options = {
        "url": server.url(),
        "calls": CALLS,
        "prompts": PROMPTS,
        "model_sleep": 0.3,
        "cpu": CPU,
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_CACHE_")}
    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    started = [
        subprocess.Popen(
            [sys.executable, str(WORKER), json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for _ in range(PROCESSES)
    ]
    try:
        for worker in started:
            assert worker.stdout is not None
            assert worker.stdout.readline().strip() == "ready", "a worker failed to start (see its stderr)"
        yield started
    finally:
        for worker in started:
            if worker.poll() is None and worker.stdin is not None:
                worker.stdin.write("quit\n")
                worker.stdin.close()
        for worker in started:
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
            if worker.stdout is not None:
                worker.stdout.close()


def run_pass(workers: list[subprocess.Popen[str]], namespace: str) -> dict[str, list[str] | int]:
    """Start one pass in every worker at once; sum what they report."""
    for worker in workers:
        assert worker.stdin is not None
        worker.stdin.write(f"{namespace}\n")
        worker.stdin.flush()
    totals: dict[str, list[str] | int] = {"model_calls": 0, "errors": [], "wrong": [], "cache_errors": 0}
    for worker in workers:
        assert worker.stdout is not None
        line = worker.stdout.readline()
        assert line, "a worker died (see its stderr)"
        report = json.loads(line)
        for name, value in report.items():
            totals[name] = totals[name] + value  # type: ignore[operator]
    return totals


def test_busy_processes_call_the_model_once_per_prompt(workers: list[subprocess.Popen[str]]) -> None:
    results = []
    for round_ in range(ROUNDS):
        namespace = f"storm-{uuid.uuid4().hex[:8]}"
        cold = run_pass(workers, namespace)
        warm = run_pass(workers, namespace)
        results.append((cold, warm))
        print(
            f"\nround {round_ + 1}: {PROCESSES} processes x {CALLS} calls over {PROMPTS} prompts, {CPU * 1000:.0f} ms "
            f"of CPU work before each: model calls {cold['model_calls']} then {warm['model_calls']}, errors "
            f"{len(cold['errors']) + len(warm['errors'])}, wrong answers {len(cold['wrong']) + len(warm['wrong'])}, "  # type: ignore[arg-type]
            f"cache errors {cold['cache_errors']} + {warm['cache_errors']}"
        )
    for cold, warm in results:
        assert cold["errors"] == warm["errors"] == []
        assert cold["wrong"] == warm["wrong"] == []
        assert cold["model_calls"] == PROMPTS  # one per distinct prompt, across every process
        assert warm["model_calls"] == 0
