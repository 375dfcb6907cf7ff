"""Benchmark of the cache hit path: `python benchmarks/run.py` (or `--quick`).

Starts its own `redis-server` on a free loopback port (never the system Redis), runs every scenario once per
round, in turn, so that machine noise hits every figure alike, and prints one Markdown table of the medians over
the rounds, with the ratios the targets are stated in. See `benchmarks/README.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from statistics import median
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # a fresh clone: import the package from the source tree
    sys.path.insert(1, str(_HERE.parent))

import redis  # noqa: E402
from _scenarios import (  # noqa: E402
    PROMPT,
    TOOL_PROMPT,
    Agents,
    direct_run,
    history,
    key_time_us,
    loop_stall_us,
    make_agents,
    per_call_us,
    profile_hit,
    redis_get_floor,
    reference_loop_ms,
    throughput,
    tool_hit,
)
from _server import RedisServer  # noqa: E402

from pyai_caching import cached_agent_run  # noqa: E402


@dataclass(frozen=True)
class Config:
    """Batch sizes of one round."""

    rounds: int
    fast: int
    """Calls per round of the cheap scenarios (GET floor, hits)."""
    slow: int
    """Calls per round of the expensive ones (direct runs, tool-agent runs)."""
    keys: tuple[int, int, int]
    """Repetitions per round of the key computation for 10, 100 and 1,000 messages."""
    total: int = 1000
    """Calls in one throughput batch."""
    concurrency: int = 50
    """Calls in flight at once in the throughput batch."""


FULL = Config(rounds=7, fast=300, slow=60, keys=(400, 60, 8))
QUICK = Config(rounds=3, fast=100, slow=20, keys=(100, 20, 4))


def _machine() -> str:
    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}"


def _versions(server_version: str) -> str:
    return (
        f"Python {platform.python_version()}, pydantic-ai-slim {version('pydantic-ai-slim')}, "
        f"pydantic {version('pydantic')}, redis-py {version('redis')}, redis-server {server_version}"
    )


async def _entry_sizes(agents: Agents, url: str) -> dict[str, int]:
    """Stored sizes (bytes) of the entries a typical call and a call with a 100-message history write."""
    sizes: dict[str, int] = {}
    client = redis.asyncio.Redis.from_url(url)
    try:
        await cached_agent_run(agents.profile, PROMPT, "make_profile", redis_url=url, namespace="size-typical")
        await cached_agent_run(
            agents.profile, PROMPT, "make_profile", redis_url=url, namespace="size-h100", message_history=history(100)
        )
        for namespace in ("size-typical", "size-h100"):
            for kind in ("r", "run"):
                keys = [k async for k in client.scan_iter(match=f"pyai_caching:{namespace}:{kind}:*")]
                assert len(keys) == 1, f"expected one {kind} entry in {namespace}, found {len(keys)}"
                sizes[f"{namespace}:{kind}"] = int(await client.strlen(keys[0]))
    finally:
        await client.aclose()
    return sizes


async def _check_hits(agents: Agents, hit: Callable[[], Awaitable[Any]], agent: str) -> None:
    """Fail loudly if a scenario that should be a hit reaches the model."""
    before = agents.model_calls[agent]
    await hit()
    if agents.model_calls[agent] != before:
        raise SystemExit(f"benchmark setup error: a {agent} call that should be a hit reached the model")


async def _bench(url: str, config: Config) -> tuple[dict[str, float], dict[str, int]]:
    agents = make_agents()
    floor, floor_client = await redis_get_floor(url)

    hit_redis = profile_hit(agents.profile, redis_url=url)
    hit_redis_full = profile_hit(agents.profile, redis_url=url, full_result=True)
    hit_local = profile_hit(agents.profile)  # no URL: the embedded LocalStore in LLM_CACHE_DIR
    hit_tool = tool_hit(agents.tool, redis_url=url)
    hit_hooked = profile_hit(agents.hooked, redis_url=url)
    direct = direct_run(agents.profile, PROMPT)
    direct_hooked = direct_run(agents.hooked, PROMPT)
    direct_tool = direct_run(agents.tool, TOOL_PROMPT)

    for call, agent in (
        (hit_redis, "profile"),
        (hit_redis_full, "profile"),
        (hit_local, "profile"),
        (hit_tool, "tool"),
        (hit_hooked, "hooked"),
    ):
        await call()  # the miss that writes the entries (and, for a static agent, learns the run template)
        await _check_hits(agents, call, agent)
    tools_before = agents.tool_calls["lookup_user"]
    await hit_tool()
    if agents.tool_calls["lookup_user"] != tools_before + 1:
        raise SystemExit("benchmark setup error: a request-level hit of the tool agent must still run the tool")
    await direct_tool()  # captures the request parameters used by the key benchmark

    histories = {n: history(n) for n in (10, 100, 1000)}
    scenarios: dict[str, Callable[[], Awaitable[float]]] = {
        "floor": lambda: per_call_us(floor, config.fast),
        "hit_redis": lambda: per_call_us(hit_redis, config.fast),
        "hit_redis_full": lambda: per_call_us(hit_redis_full, config.fast),
        "hit_local": lambda: per_call_us(hit_local, config.fast),
        "direct": lambda: per_call_us(direct, config.slow),
        "throughput_redis": lambda: throughput(hit_redis, config.total, config.concurrency),
        "throughput_local": lambda: throughput(hit_local, config.total, config.concurrency),
        "hit_tool": lambda: per_call_us(hit_tool, config.slow),
        "direct_tool": lambda: per_call_us(direct_tool, config.slow),
        "hit_hooked": lambda: per_call_us(hit_hooked, config.slow),
        "direct_hooked": lambda: per_call_us(direct_hooked, config.slow),
        "stall_redis": lambda: loop_stall_us(hit_redis, config.fast),
        "stall_local": lambda: loop_stall_us(hit_local, config.fast),
    }
    scenarios["cpu_reference"] = lambda: _sync(reference_loop_ms)
    for n, reps in zip((10, 100, 1000), config.keys, strict=True):
        messages = histories[n]
        scenarios[f"key_{n}"] = lambda messages=messages, reps=reps: _sync(key_time_us, messages, agents, reps)

    figures: dict[str, list[float]] = {name: [] for name in scenarios}
    started = time.monotonic()
    for round_number in range(config.rounds):
        for name, scenario in scenarios.items():
            figures[name].append(await scenario())
        print(f"  round {round_number + 1}/{config.rounds} done ({time.monotonic() - started:.0f} s)", file=sys.stderr)

    sizes = await _entry_sizes(agents, url)
    await floor_client.aclose()
    return {name: median(values) for name, values in figures.items()}, sizes


async def _sync(function: Callable[..., float], *args: Any) -> float:
    return function(*args)


def _us(value: float) -> str:
    return f"{value:,.0f} us" if value >= 100 else f"{value:,.1f} us"


def _check(ok: bool) -> str:
    return "yes" if ok else "**no**"


def _table(m: dict[str, float], sizes: dict[str, int], config: Config) -> str:
    floor, direct = m["floor"], m["direct"]
    rows: list[tuple[str, str, str, str, str, str]] = []

    def row(number: str, figure: str, value: str, ratio: str = "", target: str = "", met: str = "") -> None:
        rows.append((number, figure, value, ratio, target, met))

    row("1", "raw redis-py asyncio `GET`, 2 KB value (the floor)", _us(floor), "1x floor")
    for key, label in (("hit_redis", "Redis"), ("hit_local", "LocalStore")):
        hit = m[key]
        ratio = f"{hit / floor:.1f}x floor, {hit / direct:.3f}x direct run"
        if key == "hit_redis":
            target, ok = "<= 3x floor, <= 0.15x direct run", hit <= 3 * floor and hit <= 0.15 * direct
        else:
            target, ok = "<= 0.15x direct run", hit <= 0.15 * direct
        row("2", f"full hit, `cached_agent_run`, tool-less agent, structured output, {label}", _us(hit), ratio, target,
            _check(ok))  # fmt: skip
    full = m["hit_redis_full"]
    row("2", "the same call with `full_result=True` (takes the graph, hits at request level), Redis", _us(full),
        f"{full / floor:.1f}x floor, {full / direct:.3f}x direct run")  # fmt: skip
    row("3", "direct `agent.run` of the same agent (no cache)", _us(direct), "1x direct run")
    concurrency = f"{config.total:,} hits, `asyncio.gather`, concurrency {config.concurrency}"
    rate = m["throughput_redis"]
    row("4", f"hit throughput, {concurrency}, Redis", f"{rate:,.0f} calls/s",
        f"{rate * m['hit_redis'] / 1e6:.2f}x sequential rate", ">= 3,000 calls/s", _check(rate >= 3000))  # fmt: skip
    rate_local = m["throughput_local"]
    row("4", f"hit throughput, {concurrency}, LocalStore", f"{rate_local:,.0f} calls/s",
        f"{rate_local * m['hit_local'] / 1e6:.2f}x sequential rate")  # fmt: skip
    row("5", "hit, tool-using agent, request level (tool runs, both requests hit), Redis", _us(m["hit_tool"]),
        f"{m['hit_tool'] / m['direct_tool']:.2f}x its direct run")  # fmt: skip
    row("5", "direct `agent.run` of the tool-using agent (no cache)", _us(m["direct_tool"]))
    hooked = m["hit_hooked"] / m["direct_hooked"]
    row("5", "hit, agent with capabilities (hook + history processor), request level, Redis", _us(m["hit_hooked"]),
        f"{hooked:.2f}x its direct run", "<= 1.15x its direct run", _check(hooked <= 1.15))  # fmt: skip
    row("5", "direct `agent.run` of the agent with capabilities (no cache)", _us(m["direct_hooked"]))
    for n in (10, 100, 1000):
        value = m[f"key_{n}"]
        target, met = (
            ("< 5 ms, linear", _check(value < 5000 and value / m["key_100"] < 10 * 1.5)) if n == 1000 else ("", "")
        )
        row("6", f"key: `canonical_request` + `request_digest`, {n:,} messages (CPU time)", _us(value),
            f"{value / n:.1f} us/message", target, met)  # fmt: skip
    row("7", "stored entry, typical response (request level, with its canonical request)",
        f"{sizes['size-typical:r']:,} B")  # fmt: skip
    row("7", "stored entry, typical run (run level)", f"{sizes['size-typical:run']:,} B")
    row("7", "stored entry, request with a 100-message history (request level)", f"{sizes['size-h100:r']:,} B")
    row("7", "stored entry, run after a 100-message history (run level: new messages only)",
        f"{sizes['size-h100:run']:,} B")  # fmt: skip
    for key, label, hit in (("stall_redis", "Redis", "hit_redis"), ("stall_local", "LocalStore", "hit_local")):
        stall = m[key]
        row("-", f"longest event-loop stall within one hit (median), {label}", _us(stall),
            f"{stall / m[hit]:.2f}x one hit", "< 1x one hit (I/O is awaited)", _check(stall < m[hit]))  # fmt: skip

    header = ("#", "figure", "median", "ratio", "target", "met")
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="3 short rounds instead of 7 (about a third of the time)")
    parser.add_argument("--rounds", type=int, default=None, help="override the number of rounds")
    args = parser.parse_args(argv)
    config = QUICK if args.quick else FULL
    if args.rounds is not None:
        if args.rounds < 1:
            parser.error("--rounds must be at least 1")
        config = Config(rounds=args.rounds, fast=config.fast, slow=config.slow, keys=config.keys)

    # The benchmark chooses its stores itself: no ambient Redis URL, signing secret or cache folder applies.
    for name in ("LLM_CACHE_REDIS_URL", "LLM_CACHE_SECRET"):
        os.environ.pop(name, None)
    with tempfile.TemporaryDirectory(prefix="pyai_caching-bench-local-") as local_dir, RedisServer() as server:
        os.environ["LLM_CACHE_DIR"] = local_dir
        with redis.Redis.from_url(server.url) as client:
            server_version = str(client.info("server")["redis_version"])
        print(f"pyai_caching benchmark: {config.rounds} rounds, redis-server on 127.0.0.1:{server.port}",
              file=sys.stderr)  # fmt: skip
        medians, sizes = asyncio.run(_bench(server.url, config))

    print()
    print(f"Machine: {_machine()}")
    print(f"Software: {_versions(server_version)}")
    print(
        f"Medians of {config.rounds} interleaved rounds{' (--quick)' if args.quick else ''}. CPU speed during the run: "
        f"a 1,000,000-iteration Python loop took {medians['cpu_reference']:.0f} ms of CPU time."
    )
    print()
    print(_table(medians, sizes, config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
