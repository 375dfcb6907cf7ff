"""Fenced code blocks of the Markdown docs, and which of them are checked by running them.

The convention (also described in CONTRIBUTING.md, "Docs"): an HTML comment `<!-- check -->` on the line before
a ```` ```python ```` block marks it runnable. The block runs as a script of its own, in a fresh process, in an
empty temporary folder, with `LLM_CACHE_DIR` pointing into it and no other `LLM_CACHE_*` variable. The next
fenced block without a language (or `text`), before the next heading or code block, is the output it must print
on stdout; stderr must then be empty, unless the marker says `stderr`, in which case the fenced block after the
output is what it must print on stderr. A block that starts with `>>>` is run as a doctest instead.

`<!-- check console -->` marks a plain block that is a terminal session: its `$ ` lines are run, one after the
other, by one `bash` in an empty folder (the package's scripts on `PATH`, stdout and stderr together), and what
they print must be the other lines of the block.

Options in the marker, separated by spaces:

- `redis`: a throwaway `redis-server` stands in for the docs' Redis, `redis://127.0.0.1:47863/0`. A script gets
  its URL as `sys.argv[1]` and as the `REDIS_URL` environment variable; in a terminal session, that address in a
  command is replaced by the server's. In what is printed, the server's address is shown as the docs' again.
- `stderr`: compare stderr with the block after the output block.
- `columns=N`: the terminal width a session's commands see (80 by default, as in a pipe).
- `vary='REGEX'` (any number of them): what matches varies from run to run (a time, a date, a temporary path, a
  random wait); it is replaced by `<...>` in the expected and the actual output before they are compared.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
DOCS_REDIS = "127.0.0.1:47863"
"""The address of the Redis the docs' examples show; a throwaway server stands in for it."""

_FENCE = re.compile(r"^(?P<indent> *)(?P<fence>`{3,})(?P<info>[^`]*)$")
_MARKER = re.compile(r"^\s*<!--\s*check(?P<options>(?:\s[^>]*)?)-->\s*$")
_HEADING = re.compile(r"^#{1,6} ")


@dataclass
class Block:
    """One fenced code block."""

    path: Path
    line: int
    """1-based line of the opening fence."""
    info: str
    """The language (`python`, `bash`, ...; empty for plain output)."""
    code: str
    marker: str | None = None
    """The options of the `<!-- check ... -->` comment right before the block, if there is one."""


@dataclass
class Example:
    """A runnable block, with the output it must print."""

    block: Block
    stdout: str | None
    stderr: str
    redis: bool = False
    vary: list[str] = field(default_factory=list)
    console: bool = False
    columns: int = 80

    @property
    def name(self) -> str:
        return f"{self.block.path.relative_to(ROOT)}:{self.block.line}"


def markdown_files() -> list[Path]:
    """Every Markdown page of the site, and the README."""
    return [*sorted(DOCS.rglob("*.md")), ROOT / "README.md"]


def blocks(path: Path) -> list[Block | str]:
    """The fenced blocks of a file, with the headings between them (as strings), in order."""
    items: list[Block | str] = []
    lines = path.read_text(encoding="utf-8").split("\n")
    i = 0
    marker: str | None = None
    while i < len(lines):
        line = lines[i]
        opening = _FENCE.match(line)
        if opening is None:
            found = _MARKER.match(line)
            if found is not None:
                marker = found.group("options").strip()
            elif _HEADING.match(line):
                items.append(line)
                marker = None
            i += 1
            continue
        indent, fence = len(opening.group("indent")), opening.group("fence")
        body: list[str] = []
        j = i + 1
        while j < len(lines) and not (lines[j].strip().startswith(fence) and lines[j].strip().strip("`") == ""):
            body.append(lines[j][indent:] if lines[j][:indent].strip() == "" else lines[j])
            j += 1
        code = "\n".join(body) + "\n"
        items.append(Block(path, i + 1, opening.group("info").strip(), code, marker))
        marker = None
        i = j + 1
    return items


def python_blocks() -> list[Block]:
    """Every Python block of the docs and the README."""
    return [b for path in markdown_files() for b in blocks(path) if isinstance(b, Block) and b.info == "python"]


def _is_output(item: Block | str) -> bool:
    return isinstance(item, Block) and item.info in ("", "text")


def examples() -> list[Example]:
    """Every block marked `<!-- check ... -->`, with its expected output."""
    found: list[Example] = []
    for path in markdown_files():
        items = blocks(path)
        for index, item in enumerate(items):
            if not isinstance(item, Block) or item.marker is None:
                continue
            options = shlex.split(item.marker)
            known = ("redis", "stderr", "console")
            unknown = [o for o in options if o not in known and not o.startswith(("vary=", "columns="))]
            if unknown:
                raise ValueError(f"{path}:{item.line}: unknown option(s) {unknown} in <!-- check -->")
            vary = [o.removeprefix("vary=") for o in options if o.startswith("vary=")]
            columns = [int(o.removeprefix("columns=")) for o in options if o.startswith("columns=")]
            if "console" in options:
                if item.info not in ("", "console") or not item.code.startswith("$ "):
                    raise ValueError(f"{path}:{item.line}: <!-- check console --> marks a block that is no session")
                found.append(Example(item, item.code, "", "redis" in options, vary, True, *columns))
                continue
            if item.info != "python":
                raise ValueError(f"{path}:{item.line}: <!-- check --> marks a {item.info or 'plain'} block")
            following = items[index + 1 : index + 3]
            if item.code.lstrip().startswith(">>>"):
                following = [Block(path, item.line, "", "")]  # a doctest shows its output itself, prints nothing
            stdout = following[0] if following and _is_output(following[0]) else None
            stderr = ""
            if "stderr" in options:
                if stdout is None or len(following) < 2 or not _is_output(following[1]):
                    raise ValueError(f"{path}:{item.line}: `stderr` needs an output block and a stderr block")
                stderr = following[1].code  # type: ignore[union-attr]
            found.append(
                Example(
                    block=item,
                    stdout=stdout.code if isinstance(stdout, Block) else None,
                    stderr=stderr,
                    redis="redis" in options,
                    vary=vary,
                )
            )
    return found


def normalized(text: str, vary: list[str]) -> str:
    """`text` without trailing blanks, with every match of a `vary` pattern replaced by `<...>`."""
    for pattern in vary:
        text = re.sub(pattern, "<...>", text)
    return "\n".join(line.rstrip() for line in text.strip("\n").split("\n"))
