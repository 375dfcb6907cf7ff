"""The `pyai-caching` Typer app without its commands: its name, help and epilog, `--version`, and `main`.

The commands are registered on `app` by `pyai_caching.cli` (see its docstring).
"""

from __future__ import annotations

from typing import Annotated

import typer

from pyai_caching._version import __version__

__all__ = ["app", "main"]

app = typer.Typer(
    name="pyai-caching",
    help="See what the pyai_caching cache holds, saves and costs. Start with [bold]pyai-caching demo[/bold].",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=(
        "Store: --redis-url, else --dir, else $LLM_CACHE_REDIS_URL, else the embedded store ($LLM_CACHE_DIR or "
        "the user cache folder). Exit codes: 0 ok, 1 failed, 2 bad usage, 3 store unreachable, 130 interrupted."
    ),
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"pyai-caching {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    """See what the pyai_caching cache holds, saves and costs. Start with `pyai-caching demo`."""


def main() -> None:
    """The `pyai-caching` console script."""
    app(prog_name="pyai-caching")
