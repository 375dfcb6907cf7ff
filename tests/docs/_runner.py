"""Run the docs' examples, each in a process of its own, without paying for the imports of each.

`python _runner.py < jobs.json` imports pydantic-ai and every module of pyai_caching once, then forks one child per
job (at most `--parallel` at a time). A child is a fresh interpreter for what the example can see: no logging
configured, no tracer provider set, zeroed metrics, its own folder, environment and `sys.argv`, stdout and stderr
of its own. It runs the script as `__main__` (or a doctest file, as `python -m doctest` does) and exits, running
its `atexit` handlers. Prints `{"exit codes": [...]}` when every child has exited.

A terminal session (a job with `commands`) runs its commands one after the other, each `pyai-caching ...` (or
`python -m pyai_caching ...`) in a child of its own that calls the `pyai-caching` console script's entry point,
with stdout and stderr both written to the transcript after the command's `$ ` line, as `bash` would with `2>&1`.
The few shell forms the docs use are understood: `export NAME=VALUE`, `echo $?`, `$NAME` in arguments, and a
trailing `> /dev/null`; anything else is an error.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.metadata
import io
import json
import os
import pkgutil
import runpy
import shlex
import sys
import traceback
from collections.abc import Callable
from typing import Any

PRELOADED = ["pydantic", "pydantic_ai", "pydantic_ai.models.function", "pydantic_ai.models.test", "pyai_caching"]


def _redirect(stdout: str, stderr: str, append: bool = False) -> None:
    """Point fds 1 and 2 (and `sys.stdout`, `sys.stderr`) at these files."""
    mode = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (0 if append else os.O_TRUNC)  # children of a session append
    for fd, path in ((1, stdout), (2, stderr)):
        target = os.open(path, mode, 0o600)
        os.dup2(target, fd)
        os.close(target)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), encoding="utf-8", line_buffering=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), encoding="utf-8", line_buffering=True)


def _status(run: Callable[[], object]) -> int:
    """Run as a program's `main` would be run: its exit status."""
    try:
        run()
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 1)
    except BaseException:
        traceback.print_exc()
        return 1
    return 0


def _script(job: dict[str, Any]) -> int:
    sys.argv = [job["script"], *job["args"]]
    sys.path[0] = job["cwd"]
    if job["doctest"]:
        return _status(lambda: sys.exit(1 if doctest.testfile(job["script"], module_relative=False).failed else 0))
    return _status(lambda: runpy.run_path(job["script"], run_name="__main__"))


def _command(words: list[str], transcript: str) -> int:
    """Run one `pyai-caching` command in a child; its exit status."""
    quiet = words[-2:] == [">", "/dev/null"]
    if quiet:
        words = words[:-2]
    if words[:3] == ["python", "-m", "pyai_caching"]:
        words = ["pyai-caching", *words[3:]]
    if not words or words[0] != "pyai-caching" or ">" in words:
        raise ValueError(f"a checked session runs pyai-caching commands only, not {shlex.join(words)!r}")
    [entry] = importlib.metadata.entry_points(group="console_scripts", name="pyai-caching")
    sys.stdout.flush()
    pid = os.fork()
    if pid == 0:
        _redirect(os.devnull if quiet else transcript, transcript, append=True)
        sys.argv = words
        os._exit(_flushed(_status(entry.load())))
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _flushed(status: int) -> int:
    sys.stdout.flush()
    sys.stderr.flush()
    return status


def _session(job: dict[str, Any]) -> int:
    """Run the commands of a terminal session; the transcript is the job's stdout."""
    status = 0
    for command in job["commands"]:
        print(f"$ {command}", flush=True)
        words = shlex.split(command)
        if words == ["echo", "$?"]:
            print(status, flush=True)
            status = 0
        elif words[0] == "export" and len(words) == 2 and "=" in words[1]:
            name, value = words[1].split("=", 1)
            os.environ[name] = os.path.expandvars(value)
            status = 0
        else:
            status = _command([os.path.expandvars(word) for word in words], job["stdout"])
    return 0


def _child(job: dict[str, Any]) -> None:
    """Run one job in this (forked) process, and exit with its status."""
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    _redirect(job["stdout"], job["stderr"])
    sys.exit(_session(job) if "commands" in job else _script(job))


def main() -> None:
    parallel = int(sys.argv[sys.argv.index("--parallel") + 1]) if "--parallel" in sys.argv else 2
    for name in PRELOADED:
        importlib.import_module(name)
    import pyai_caching

    for module in pkgutil.walk_packages(pyai_caching.__path__, "pyai_caching."):
        if module.name != "pyai_caching.__main__":
            importlib.import_module(module.name)
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
