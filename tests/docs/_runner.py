"""Run the docs' examples, each in a process of its own, without paying for the imports of each.

`python _runner.py < jobs.json` imports pydantic-ai and pyai_caching once, then forks one child per job (at most
`--parallel` at a time). A child is a fresh interpreter for what the example can see: no logging configured, no
tracer provider set, zeroed metrics, its own folder, environment and `sys.argv`, stdout and stderr of its own. It
runs the script as `__main__` (or a doctest file, as `python -m doctest` does) and exits, running its `atexit`
handlers. Prints `{"exit codes": [...]}` when every child has exited.
"""

from __future__ import annotations

import doctest
import importlib
import io
import json
import os
import runpy
import sys
import traceback
from typing import Any

PRELOADED = ["pydantic", "pydantic_ai", "pydantic_ai.models.function", "pydantic_ai.models.test", "pyai_caching"]


def _child(job: dict[str, Any]) -> None:
    """Run one job in this (forked) process, and exit with its status."""
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    for fd, path in ((1, job["stdout"]), (2, job["stderr"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), encoding="utf-8", line_buffering=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), encoding="utf-8", line_buffering=True)
    sys.argv = [job["script"], *job["args"]]
    sys.path[0] = job["cwd"]
    status = 0
    try:
        if job["doctest"]:
            failed, _ = doctest.testfile(job["script"], module_relative=False)
            status = 1 if failed else 0
        else:
            runpy.run_path(job["script"], run_name="__main__")
    except SystemExit as exit_:
        status = exit_.code if isinstance(exit_.code, int) else 1
    except BaseException:
        traceback.print_exc()
        status = 1
    sys.exit(status)


def main() -> None:
    parallel = int(sys.argv[sys.argv.index("--parallel") + 1]) if "--parallel" in sys.argv else 2
    for name in PRELOADED:
        importlib.import_module(name)
    import pyai_caching

    for name in pyai_caching.__all__:
        getattr(pyai_caching, name)
    jobs: list[dict[str, Any]] = json.load(sys.stdin)
    sys.stdout.flush()
    sys.stderr.flush()
    codes: list[int | None] = [None] * len(jobs)
    running: dict[int, int] = {}

    def reap() -> None:
        pid, status = os.wait()
        codes[running.pop(pid)] = os.waitstatus_to_exitcode(status)

    for index, job in enumerate(jobs):
        while len(running) >= parallel:
            reap()
        pid = os.fork()
        if pid == 0:
            _child(job)
        running[pid] = index
    while running:
        reap()
    print(json.dumps({"exit codes": codes}))


if __name__ == "__main__":
    main()
