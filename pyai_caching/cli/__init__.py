"""`pyai-caching`: see what the cache holds, saves and costs.

```
pyai-caching demo                      # a miss, then a hit, on a throwaway embedded store
pyai-caching stats                     # entries, size, by namespace / model / task
pyai-caching spend --since 7d          # spend and savings per task and model, from the spend ledger
pyai-caching inspect --last 3          # the stored requests and responses
pyai-caching explain --last 5          # why recent requests missed: the nearest entry and what differed
pyai-caching clear --older-than 30d    # delete entries (asks first)
```

Also `python -m pyai_caching ...`. The store is `--redis-url`, else `--dir` (the embedded store in that folder),
else `LLM_CACHE_REDIS_URL`, else the embedded store in `LLM_CACHE_DIR` or the user cache folder: the same choice
the library makes. Every command takes `--json` for scripts.

Exit codes: 0 success; 1 the command failed (no such entry, deletion not confirmed, unexpected error);
2 bad usage or configuration (unknown option, bad URL, bad duration); 3 the store cannot be reached (Redis down,
wrong password, unreadable database file); 130 interrupted (Ctrl-C).

## Layout

- `root`: the Typer app (name, help, `--version`) and `main`. The script `pyai-caching` starts in
  `pyai_caching._cli_entry`, which answers `--version` without importing this package.
- `common`: exit codes; `CliError` and `fail`; `execute`, which runs a command's async work and turns every failure
  into one line and an exit code; the options every command shares (`--redis-url`, `--dir`, `--namespace`,
  `--task`, `--json`); opening the store; parsing durations and dates.
- `render`: sizes, money and times as text; `safe` (data escaped for the terminal); `print_json`; the spinner of a
  long scan; `fitted_table` (tables that never cut the name of a row).
- `browse`: reading, filtering and deleting entries without the agents that wrote them. `ledger`: reading the Redis
  spend ledger.
- One module per command, named after it: `stats`, `spend`, `inspect`, `explain`, `clear`, `demo` (its agent is
  in `demo_run`, imported only when the demo runs).

The CLI is the top layer: it may import the public surface, the engine, the stores, `spend`, `explain` and
`_util`. Nothing else in the package imports `pyai_caching.cli`.

## Adding a command

1. Write `pyai_caching/cli/<name>.py` with a function `<name>(...)`: its parameters are the command's arguments
   and options (reuse `RedisUrlOption`, `DirOption`, `NamespaceOption`, `TaskOption` and `JsonOption` from
   `common`), its docstring is the command's help. Open the store with `store_or_exit`, run the async work with
   `execute` (raise `CliError` for a failure the user can fix), and print with `render`: `print_json` for `--json`,
   `safe` around every piece of data shown in the terminal.
2. Register it here: import the module with the others below and add `<name>.<name>` to `COMMANDS` (whose order
   is the order of `pyai-caching --help`).
3. Test it in `tests/cli/`, through `pyai-caching` itself (the `cli` fixture).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from pyai_caching.cli import clear, demo, explain, inspect_cmd, spend, stats
from pyai_caching.cli.common import ExitCode, parse_duration, parse_since
from pyai_caching.cli.root import app, main
from pyai_caching.cli.spend import By

__all__ = ["COMMANDS", "By", "ExitCode", "app", "main", "parse_duration", "parse_since"]

COMMANDS: Final[tuple[Callable[..., Any], ...]] = (
    stats.stats,
    spend.spend,
    inspect_cmd.inspect,
    explain.explain,
    clear.clear,
    demo.demo,
)
"""The commands of `pyai-caching`, in the order its help lists them (each is named after its function)."""

for _command in COMMANDS:
    app.command()(_command)
