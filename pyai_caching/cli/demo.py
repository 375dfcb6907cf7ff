"""`pyai-caching demo`: an agent called three times through the cache (a miss, then hits), with no server and no
API key, and what each call cost and saved.

The agent and its simulated model are in `demo_run`, imported when the command runs (it loads pydantic-ai).
"""

from __future__ import annotations

import functools
import tempfile
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from pyai_caching._util.escape import escape_text
from pyai_caching.cli.common import ExitCode, JsonOption, execute, fail, store_or_exit
from pyai_caching.cli.render import make_console, print_json, usd
from pyai_caching.engine.registry import CACHE_DIR_ENV, REDIS_URL_ENV

if TYPE_CHECKING:
    from pyai_caching.cli.demo_run import DemoResult

__all__ = ["demo"]


def demo(
    latency: Annotated[
        float, typer.Option("--latency", min=0.0, max=60.0, help="Seconds the simulated model takes to answer.")
    ] = 0.8,
    redis_url: Annotated[
        str | None,
        typer.Option(
            "--redis-url",
            help=f"Run the demo on this Redis. Default: a temporary embedded store (${REDIS_URL_ENV} is not read).",
            show_default=False,
        ),
    ] = None,
    directory: Annotated[
        str | None,
        typer.Option(
            "--dir",
            help=f"Keep the demo's entries in the embedded store in this folder. Default: a temporary folder, "
            f"deleted at the end (${CACHE_DIR_ENV} is not read).",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Run an agent three times through the cache (a miss, then hits): no server, no API key.

    Uses a temporary embedded store unless --dir or --redis-url is given (the environment variables are not read,
    so the demo never writes into your real cache unless you ask). It writes to the namespace
    `pyai_caching-demo` only, and empties it first.
    """
    from pyai_caching.cli.demo_run import run_demo

    if redis_url is not None and directory is not None:
        fail("pass either --redis-url or --dir, not both", ExitCode.USAGE, as_json)
    temporary = redis_url is None and directory is None
    with tempfile.TemporaryDirectory(prefix="pyai_caching-demo-") as scratch:
        store = store_or_exit(redis_url, None if redis_url is not None else directory or scratch, as_json)
        result = execute(as_json, store, lambda: run_demo(store, latency=latency))
    if as_json:
        print_json(_demo_json(result, temporary))
    else:
        _print_demo(result, temporary)


def _demo_json(result: DemoResult, temporary: bool) -> dict[str, Any]:
    return {
        "store": result.store,
        "temporary": temporary,
        "calls": [c.to_dict() for c in result.calls],
        "speedup": result.speedup,
        "saved": None if result.saved is None else str(result.saved),
        "same_output": result.same_output,
        "output": result.output.model_dump(mode="json"),
    }


def _duration_text(seconds: float) -> str:
    return f"{seconds:.2f} s" if seconds >= 1 else f"{seconds * 1000:.1f} ms"


def _calls_table(result: DemoResult) -> Table:
    table = Table(title="cached_agent_run(agent, prompt, 'make_profile')", title_justify="left")
    table.add_column("Call", justify="right")
    table.add_column("Cache")
    table.add_column("Time", justify="right")
    table.add_column("Model requests", justify="right")
    table.add_column("Tokens (in / out)", justify="right")
    table.add_column("Cost", justify="right")
    table.add_column("Saved", justify="right")
    for call in result.calls:
        table.add_row(
            str(call.number),
            Text("hit", style="bold green") if call.hit else Text("miss", style="yellow"),
            _duration_text(call.seconds),
            str(call.requests),
            f"{call.input_tokens:,} / {call.output_tokens:,}" if call.requests else "-",
            usd(call.cost),
            usd(call.saved),
        )
    return table


def _print_demo(result: DemoResult, temporary: bool) -> None:
    console = make_console()
    console.print(_calls_table(result))
    say = functools.partial(console.print, soft_wrap=True)
    miss, hits = result.calls[0], result.calls[1:]
    if hits and all(call.hit for call in hits):
        last = hits[-1]
        say(
            f"A hit took {_duration_text(last.seconds)} instead of {_duration_text(miss.seconds)} "
            f"({result.speedup:,.0f}x faster) and saved a model request ({miss.input_tokens + miss.output_tokens:,} "
            f"tokens, {usd(hits[0].saved)}): {usd(result.saved)} saved in all."
        )
        if len(hits) > 1 and hits[0].seconds > 5 * last.seconds:
            say(
                f"The first hit ({_duration_text(hits[0].seconds)}) went through pydantic-ai's agent run, once per "
                "agent and process; later hits are answered before the run starts."
            )
    else:
        say("A repeated call was not a hit: the store failed (see the warning above).")
    same = "the same" if result.same_output else "DIFFERENT outputs"
    say(Text(f"Every call returned {same}: {result.output!r}"))
    say(Text(f"Store: {escape_text(result.store)}"))
    if temporary:
        say(
            "That store was temporary. Keep the entries with --dir DIR, then look at them with "
            "`pyai-caching stats --dir DIR` and `pyai-caching inspect --last 2 --dir DIR`."
        )
