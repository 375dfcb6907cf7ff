"""What one huge stored answer costs a reader: `python benchmarks/entry_size.py` (`--mb 100`).

A valid entry whose answer is `--mb` megabytes is stored (by a process with no size limit), in Redis and in the
embedded `LocalStore`. Then fresh processes make the same `cached_agent_run` call, once with no limit
(`max_entry_bytes=None`: the whole entry is downloaded and decoded, as before the limit existed) and once with the
default limit (8 MiB: the size is checked on the server, nothing is downloaded, the call is a miss and the model
answers). Each reader reports its peak RSS (`ru_maxrss`) and, on Redis, the bytes the server sent it.

Starts its own `redis-server` on a free loopback port (never the system Redis) and uses a temporary folder.
Prints one Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
if str(_HERE.parent) not in sys.path:  # a fresh clone: import the package from the source tree
    sys.path.insert(1, str(_HERE.parent))

PROMPT = "tell me everything"


async def _child(options: dict[str, Any]) -> dict[str, Any]:
    import redis
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelMessage, ModelResponse, TextPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    from pyai_caching import cached_agent_run
    from pyai_caching.stores import LocalStore, RedisStore, Store

    calls = 0

    def model(messages: list[ModelMessage], info: AgentInfo) -> ModelResponse:
        nonlocal calls
        calls += 1
        size = options["mb"] * 1_000_000 if options["role"] == "writer" else 10
        return ModelResponse(parts=[TextPart("x" * size)])

    limit = None if options["role"] == "writer" or options["limit"] == "none" else 8 * 1024 * 1024
    if options["store"] == "redis":
        store: Store = RedisStore(options["url"], max_entry_bytes=limit, socket_timeout=30, connect_timeout=5)
        raw = redis.Redis.from_url(options["url"])
        sent_before = int(raw.info("stats")["total_net_output_bytes"])
    else:
        store = LocalStore(options["dir"], max_entry_bytes=limit)
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    answer = await cached_agent_run(Agent(FunctionModel(model, model_name="huge")), PROMPT, "big", store=store)
    report: dict[str, Any] = {
        "model_called": calls > 0,
        "answer_chars": len(answer),
        "rss_before_mb": rss_before / 1024,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if options["store"] == "redis":
        report["sent_bytes"] = int(raw.info("stats")["total_net_output_bytes"]) - sent_before
        raw.close()
    await store.close()
    return report


def _run(options: dict[str, Any]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_CACHE_")}
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(options)], capture_output=True, text=True, env=env
    )
    if done.returncode != 0:
        raise SystemExit(f"a child process failed:\n{done.stderr[-2000:]}")
    report: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=100, help="size of the stored answer, in megabytes")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(_child(json.loads(args.child)))))
        return

    sys.path.insert(0, str(_HERE))
    from _server import RedisServer

    print(f"a stored answer of {args.mb} MB; each reader is a fresh process", file=sys.stderr)
    print("| store | reader's max_entry_bytes | served from the cache | model called | peak RSS | bytes Redis sent |")
    print("|---|---|---|---|---|---|")
    with RedisServer() as server, tempfile.TemporaryDirectory(prefix="pyai_caching-bench-") as folder:
        for store in ("redis", "local"):
            base = {"store": store, "url": server.url, "dir": folder, "mb": args.mb}
            _run({**base, "role": "writer", "limit": "none"})
            for limit in ("none", "default"):
                found = _run({**base, "role": "reader", "limit": limit})
                sent = f"{found['sent_bytes']:,}" if "sent_bytes" in found else "-"
                shown = "None (no limit)" if limit == "none" else "8 MiB (default)"
                print(
                    f"| {store} | {shown} | {'no' if found['model_called'] else 'yes'} | "
                    f"{'yes' if found['model_called'] else 'no'} | {found['peak_rss_mb']:.0f} MB | {sent} |",
                    flush=True,
                )


if __name__ == "__main__":
    main()
