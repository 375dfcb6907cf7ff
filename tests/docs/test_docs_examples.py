"""The docs cannot drift from the code: every block marked `<!-- check -->` runs and prints what the page shows.

See `_blocks.py` for the convention. Also: every Python block of the docs at least parses (top-level `await`
allowed, as in a notebook) and imports only names that exist, and every relative link of README.md points to a
file of the repository.
"""

from __future__ import annotations

import ast
import copy
import importlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from _blocks import DOCS_REDIS, ROOT, Block, Example, blocks, examples, normalized, python_blocks
from _redis_servers import RedisServer

EXAMPLES = examples()
PYTHON_BLOCKS = python_blocks()
EXAMPLE_PROJECT = ROOT / "examples" / "recorded_tests"


class Outcome(NamedTuple):
    folder: Path
    returncode: int
    stdout: str
    stderr: str


class Run(NamedTuple):
    example: Example
    folder: Path
    redis_url: str | None
    """The throwaway server's database standing in for the docs' `redis://127.0.0.1:47863/0`."""


def _environment(run: Run) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith(("LLM_CACHE_", "REDIS_URL"))}
    env["LLM_CACHE_DIR"] = str(run.folder / "cache")
    if run.redis_url is not None:
        env["REDIS_URL"] = run.redis_url
    return env


def _redis_address(run: Run) -> tuple[str, str]:
    """The throwaway server's `host:port` and `host:port/db`."""
    assert run.redis_url is not None
    address = run.redis_url.removeprefix("redis://")
    return address.rsplit("/", 1)[0], address


def _job(run: Run, folder: Path) -> dict[str, Any]:
    """What `_runner.py` runs for an example."""
    env = _environment(run)
    job: dict[str, Any] = {
        "cwd": str(folder),
        "env": env,
        "stdout": str(run.folder / "stdout.txt"),
        "stderr": str(run.folder / "stderr.txt"),
    }
    if run.example.console:
        commands = [line[2:] for line in run.example.block.code.split("\n") if line.startswith("$ ")]
        if run.redis_url is not None:
            host_port, host_port_db = _redis_address(run)
            commands = [c.replace(f"{DOCS_REDIS}/0", host_port_db).replace(DOCS_REDIS, host_port) for c in commands]
        env.pop("REDIS_URL", None)
        env.update(COLUMNS=str(run.example.columns), TERM="dumb")
        return job | {"commands": commands}
    doctest = run.example.block.code.lstrip().startswith(">>>")
    script = run.folder / ("example.txt" if doctest else "example.py")
    script.write_text(run.example.block.code, encoding="utf-8")
    args = [run.redis_url] if run.redis_url is not None else []
    return job | {"script": str(script), "doctest": doctest, "args": args}


def run_examples(runs: list[Run]) -> list[Outcome]:
    """Run the examples (see `_runner.py`), and show the throwaway Redis as the docs' one."""
    # Terminal sessions run in a short folder, whatever $TMPDIR is: paths are part of what the commands print,
    # and a long one would wrap.
    short = Path(tempfile.mkdtemp(prefix="pyai-docs-", dir="/tmp"))
    try:
        jobs = [_job(run, short / str(i) if run.example.console else run.folder) for i, run in enumerate(runs)]
        for job in jobs:
            Path(job["cwd"]).mkdir(exist_ok=True)
        runner = subprocess.run(
            [sys.executable, str(Path(__file__).with_name("_runner.py")), "--parallel", "3"],
            input=json.dumps(jobs),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    finally:
        shutil.rmtree(short, ignore_errors=True)
    assert runner.returncode == 0, f"the example runner failed:\n{runner.stdout}\n{runner.stderr}"
    codes = json.loads(runner.stdout.strip().split("\n")[-1])["exit codes"]
    outcomes = []
    for run, code in zip(runs, codes, strict=True):
        stdout = (run.folder / "stdout.txt").read_text(encoding="utf-8")
        stderr = (run.folder / "stderr.txt").read_text(encoding="utf-8")
        if run.redis_url is not None:
            server, database = _redis_address(run)
            shown = [t.replace(database, f"{DOCS_REDIS}/0").replace(server, DOCS_REDIS) for t in (stdout, stderr)]
            stdout, stderr = shown
        outcomes.append(Outcome(run.folder, code, stdout, stderr))
    return outcomes


@pytest.fixture(scope="module")
def outcomes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    """Every example run once. Those that need Redis each get a database of the session's throwaway server."""
    selected = [
        item.callspec.params["example"]
        for item in request.session.items
        if isinstance(item, pytest.Function) and hasattr(item, "callspec") and "example" in item.callspec.params
    ]  # only the examples of the tests that run (`-k`)
    assert sum(e.redis for e in selected) <= 16, "examples that need Redis get a database each: 16 at most"
    server: RedisServer | None = request.getfixturevalue("redis_server") if any(e.redis for e in selected) else None
    databases = iter(range(16))
    runs: list[Run] = []
    for example in selected:
        redis_url = None
        if example.redis:
            assert server is not None
            db = next(databases)
            with server.client(db=db) as client:
                client.flushdb()
            redis_url = server.url(db=db)
        runs.append(Run(example, tmp_path_factory.mktemp("example"), redis_url))
    return dict(zip([e.name for e in selected], run_examples(runs), strict=True))


def test_the_docs_have_checked_examples() -> None:
    """A parser that silently finds nothing would make every check below pass."""
    assert len(EXAMPLES) >= 15
    pages = {example.block.path.name for example in EXAMPLES}
    assert {"README.md", "getting-started.md", "spend.md", "observability.md", "semantic.md", "cli.md"} <= pages


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.name for e in EXAMPLES])
def test_example_prints_what_the_docs_show(example: Example, outcomes: dict[str, Outcome]) -> None:
    result = outcomes[example.name]
    where = f"{example.name} (the block ran in {result.folder})"
    assert result.returncode == 0, f"{where} failed:\n{result.stdout}\n{result.stderr}"
    if example.stdout is not None:
        assert normalized(result.stdout, example.vary) == normalized(example.stdout, example.vary), where
    assert normalized(result.stderr, example.vary) == normalized(example.stderr, example.vary), where


def _parse(block: Block) -> ast.Module:
    code = block.code
    if code.lstrip().startswith(">>>"):
        code = "\n".join(line[4:] for line in code.split("\n") if line.startswith((">>> ", "... ")))
    tree = compile(code, str(block.path), "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    assert isinstance(tree, ast.Module)
    return tree


@pytest.mark.parametrize("block", PYTHON_BLOCKS, ids=[f"{b.path.relative_to(ROOT)}:{b.line}" for b in PYTHON_BLOCKS])
def test_python_block_parses_and_imports_existing_names(block: Block) -> None:
    """Blocks that cannot run here (a real model, a Redis at a made-up host) still name only what exists."""
    for node in ast.walk(_parse(block)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "pyai_caching":
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert alias.name == "*" or hasattr(module, alias.name) or _is_module(f"{node.module}.{alias.name}"), (
                    f"{block.path.relative_to(ROOT)}:{block.line}: {node.module} has no {alias.name}"
                )
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "pyai_caching":
                    importlib.import_module(alias.name)


def _is_module(name: str) -> bool:
    """Whether `from package import name` imports a submodule."""
    try:
        importlib.import_module(name)
    except ModuleNotFoundError:
        return False
    return True


_LINK = re.compile(r"\]\((?P<target>[^)\s]+)\)")


def test_readme_relative_links_point_to_files() -> None:
    readme = ROOT / "README.md"
    targets = [m.group("target") for m in _LINK.finditer(readme.read_text(encoding="utf-8"))]
    relative = [t for t in targets if not re.match(r"^[a-z]+:", t) and not t.startswith("#")]
    assert relative, "README.md links into the docs"
    missing = [t for t in relative if not (ROOT / t.split("#")[0]).exists()]
    assert not missing, f"README.md links to files that do not exist: {missing}"
    for target in relative:
        path, _, anchor = target.partition("#")
        if anchor and path.endswith(".md"):
            headings = [b for b in blocks(ROOT / path) if isinstance(b, str)]
            slugs = {_slug(h.lstrip("#").strip()) for h in headings}
            assert anchor in slugs, f"README.md links to {target}, but {path} has no heading with that anchor"


def _slug(heading: str) -> str:
    """The anchor GitHub and MkDocs give a heading (they agree on the headings of these docs)."""
    text = re.sub(r"[^\w\- ]", "", heading.lower().replace("`", ""))
    return text.strip().replace(" ", "-")


def _definitions(tree: ast.Module) -> dict[str, str]:
    """Top-level classes, functions and assignments, without docstrings and annotations of return values."""
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            node = copy.deepcopy(node)
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                node.body = body[1:] or [ast.Pass()]
            if not isinstance(node, ast.ClassDef):
                node.returns = None
            found[node.name] = ast.dump(node)
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            found[node.targets[0].id] = ast.dump(node)
    return found


PROJECT_BLOCKS = [b for b in PYTHON_BLOCKS if b.code.startswith(("# profiles.py", "# tests/test_profiles.py"))]


@pytest.mark.parametrize("block", PROJECT_BLOCKS, ids=[f"{b.path.relative_to(ROOT)}:{b.line}" for b in PROJECT_BLOCKS])
def test_recorded_tests_quick_start_is_the_example_project(block: Block) -> None:
    """The recorded-tests quick start cannot run here (it records with a real key); the example project it shows
    can, with the cassettes it ships, and tests/plugin/test_example.py runs it. So its code must be the project's."""
    name = block.code.split("\n", 1)[0].removeprefix("# ").split(":")[0]
    shown = _definitions(_parse(block))
    actual = _definitions(ast.parse((EXAMPLE_PROJECT / name).read_text(encoding="utf-8")))
    assert shown, block.code
    for definition, dump in shown.items():
        assert actual.get(definition) == dump, (
            f"{block.path.relative_to(ROOT)}:{block.line}: {definition} differs from {name}"
        )


def test_the_acl_rule_shown_is_the_one_the_deployment_tests_prove() -> None:
    """tests/deployments proves MINIMAL_ACL is enough and that each part is needed; the docs must show that rule."""
    source = (ROOT / "tests" / "deployments" / "_deployments.py").read_text(encoding="utf-8")
    [assignment] = [
        node
        for node in ast.parse(source).body
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == "MINIMAL_ACL"
    ]
    assert assignment.value is not None
    proven = list(ast.literal_eval(assignment.value))
    shown = [
        line.split()
        for path in (ROOT / "docs" / "guide" / "deployments.md", ROOT / "docs" / "guide" / "stores.md")
        for line in path.read_text(encoding="utf-8").split("\n")
        if line.startswith("ACL SETUSER cache on >s3cret ")
    ]
    assert len(shown) == 2
    for tokens in shown:
        assert tokens[5:] == proven
