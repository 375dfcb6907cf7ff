"""`pyai-caching inspect`: show stored entries, the request (messages, tools, settings) and the response, as panels
or as JSON. A planted or corrupt entry may hold anything anywhere: every field is read defensively and shown
escaped."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Annotated, Any, Final

import typer
from rich.console import Group
from rich.panel import Panel
from rich.text import Text

from pyai_caching._util.escape import escape_text
from pyai_caching.cli.browse import EntryInfo, Selection, parse_entry, parse_key, read_entries, read_value
from pyai_caching.cli.common import (
    CliError,
    DirOption,
    ExitCode,
    JsonOption,
    NamespaceOption,
    RedisUrlOption,
    TaskOption,
    execute,
    fail,
    missing_file,
    prefix_or_exit,
    store_or_exit,
)
from pyai_caching.cli.render import make_console, print_json, safe, scan_progress, size_text, usd, when
from pyai_caching.engine.keys import KEY_PREFIX
from pyai_caching.stores import Store

__all__ = ["entry_panel", "inspect"]

_HEX_RE: Final = re.compile(r"^[0-9a-fA-F]{4,64}$")
"""A digest prefix given as KEY: 4 to 64 hex characters."""


def inspect(
    key: Annotated[
        str | None,
        typer.Argument(help="An entry key, or the first hex characters (4 or more) of its digest.", show_default=False),
    ] = None,
    task: TaskOption = None,
    last: Annotated[
        int | None, typer.Option("--last", "-l", min=1, help="The N most recent entries.", show_default=False)
    ] = None,
    namespace: NamespaceOption = None,
    full: Annotated[bool, typer.Option("--full", help="Do not shorten long messages.")] = False,
    redis_url: RedisUrlOption = None,
    directory: DirOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show stored entries: the request (messages, tools, settings) and the response."""
    _check_arguments(key, task, last, as_json)
    prefix = prefix_or_exit(namespace, as_json)
    store = store_or_exit(redis_url, directory, as_json)
    if key is None and last is None:
        last = 10

    async def work() -> list[EntryInfo]:
        selection = Selection(
            prefix=prefix,
            task=task,
            digest_prefix=key.lower() if key is not None and not key.startswith(KEY_PREFIX) else None,
        )
        return await _find_entries(store, key, selection, last, as_json)

    entries = execute(as_json, store, work)
    if as_json:
        print_json([_entry_json(e) for e in entries])
    else:
        _print_entries(entries, full)


def _check_arguments(key: str | None, task: str | None, last: int | None, as_json: bool) -> None:
    if key is None and task is None and last is None:
        fail("give an entry KEY (or digest prefix), --task T or --last N", ExitCode.USAGE, as_json)
    if key is not None and not key.startswith(KEY_PREFIX) and not _HEX_RE.match(key):
        fail(
            f"KEY must be an entry key (pyai_caching:...) or 4 to 64 hex characters of its digest, got {key!r}",
            ExitCode.USAGE,
            as_json,
        )


def _print_entries(entries: list[EntryInfo], full: bool) -> None:
    console = make_console()
    if not entries:
        console.print("No matching entries.", soft_wrap=True)
        return
    now = datetime.now().timestamp()
    for info in entries:
        if not info.readable:
            body = Group(safe(info.key), safe(f"unreadable: {info.error}"))
            console.print(Panel(body, title=_panel_title(info), title_align="left"))
        else:
            console.print(entry_panel(info, now, full))


def _entry_json(info: EntryInfo) -> dict[str, Any]:
    return {
        "key": info.key,
        "size_bytes": info.size,
        "signed": info.signed,
        "error": info.error,
        "entry": info.document,
    }


async def _find_entries(
    store: Store, key: str | None, selection: Selection, last: int | None, as_json: bool
) -> list[EntryInfo]:
    if key is not None and key.startswith(KEY_PREFIX):
        parts = parse_key(key)
        if parts is None:
            raise CliError(f"{key!r} is not an entry key (pyai_caching:<namespace>:r|run:{{<digest>}})", ExitCode.USAGE)
        raw = None if missing_file(store) else await read_value(store, key)
        if raw is None:
            raise CliError(f"no entry {key} in {store.description}")
        return [parse_entry(key, parts, raw, keep_document=True)]
    if missing_file(store):
        found = []
    else:
        with scan_progress(not as_json, "Searching") as progress:
            found = [info async for info in read_entries(store, selection, progress=progress)]
    if key is not None:
        if not found:
            raise CliError(f"no entry whose digest starts with {key} in {store.description}")
        if len(found) > 1:
            raise CliError(f"{len(found)} entries have a digest starting with {key}; give more characters")
    found.sort(key=lambda i: i.created_at or 0.0, reverse=True)
    chosen = found[:last] if last is not None else found
    # Read the chosen ones again, whole (the scan kept only their meta).
    out = []
    for info in chosen:
        value = await read_value(store, info.key)
        if value is not None:
            out.append(parse_entry(info.key, info.parts, value, keep_document=True))
    return out


# --- rendering ---------------------------------------------------------------------------------------------------

_SNIPPET: Final = 600


def _clip(text: str, full: bool) -> str:
    if full or len(text) <= _SNIPPET:
        return text
    return f"{text[:_SNIPPET]}… ({len(text) - _SNIPPET:,} more characters; --full shows all)"


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)


def _dict(value: Any) -> dict[str, Any]:
    """`value` if it is a JSON object, else `{}`: a planted entry may hold anything anywhere."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _line(label: str, body: str, full: bool, style: str = "cyan") -> Text:
    line = Text(label, style=style)
    line.append(escape_text(_clip(body, full), multiline=True))
    return line


def _part_line(part: Any, full: bool) -> Text:
    if not isinstance(part, dict):
        return _line("", _as_text(part), full)
    kind = _as_text(part.get("part_kind", "?"))
    label = {
        "system-prompt": "system",
        "user-prompt": "user",
        "text": "assistant",
        "thinking": "thinking",
    }.get(kind)
    if label is None:
        name = part.get("tool_name")
        label = f"{kind} {_as_text(name)}" if name else kind
    body = part.get("args") if kind in ("tool-call", "builtin-tool-call") else part.get("content")
    return _line(f"[{escape_text(label)}] ", _as_text(body), full)


def _messages_lines(messages: Any, full: bool) -> list[Text]:
    lines: list[Text] = []
    for message in _list(messages):
        if not isinstance(message, dict):
            continue
        instructions = message.get("instructions")
        if instructions:
            lines.append(_line("[instructions] ", _as_text(instructions), full))
        lines.extend(_part_line(part, full) for part in _list(message.get("parts")))
    return lines


def _tools_line(label: str, tools: Any) -> Text | None:
    names = []
    for tool in _list(tools):
        if isinstance(tool, dict):
            props = _dict(_dict(tool.get("parameters_json_schema")).get("properties"))
            names.append(f"{_as_text(tool.get('name'))}({', '.join(props)})")
    if not names:
        return None
    return _line(f"{label}: ", ", ".join(names), True, style="bold")


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else "?"


def _usage_text(usage: Any) -> str:
    if not isinstance(usage, dict):
        return "unknown"
    parts = [f"{_count(usage.get('input_tokens', 0))} in", f"{_count(usage.get('output_tokens', 0))} out"]
    parts.extend(
        f"{_count(usage[name])} {name.removesuffix('_tokens').replace('_', ' ')}"
        for name in ("cache_read_tokens", "cache_write_tokens")
        if usage.get(name)
    )
    return " / ".join(parts)


def _request_lines(doc: dict[str, Any], full: bool) -> list[Text]:
    request = _dict(doc.get("request"))
    header = _dict(request.get("header"))
    params = _dict(header.get("parameters"))
    lines = [Text("Request", style="bold underline")]
    model = _dict(header.get("model"))
    if model:
        lines.append(_line("model: ", f"{_as_text(model.get('system'))}:{_as_text(model.get('name'))}", full, ""))
    if header.get("settings"):
        lines.append(_line("settings: ", _as_text(header["settings"]), full, ""))
    for label, key in (("tools", "function_tools"), ("output tools", "output_tools")):
        line = _tools_line(label, params.get(key))
        if line is not None:
            lines.append(line)
    lines.extend(_messages_lines(request.get("messages"), full))
    response = _dict(doc.get("response"))
    lines.append(Text("Response", style="bold underline"))
    lines.extend(_messages_lines([response], full))
    lines.append(Text(f"usage: {_usage_text(response.get('usage'))}"))
    return lines


def _run_lines(doc: dict[str, Any], full: bool) -> list[Text]:
    return [
        Text("Run messages", style="bold underline"),
        *_messages_lines(doc.get("new_messages"), full),
        Text("Final answer (raw: validated by the caller's output type on each hit)", style="bold underline"),
        _line("", _as_text(_final_answer(doc.get("final"))), full, ""),
        Text(f"usage: {_usage_text(doc.get('usage'))}"),
    ]


def entry_panel(info: EntryInfo, now: float, full: bool) -> Panel:
    """A readable entry as a panel: its meta, then the request and response (or the run's messages and answer)."""
    doc = info.document or {}
    head = Text()
    kind = "run-level (a whole run)" if info.kind == "run" else "request-level (one model response)"
    for label, value in (
        ("key", info.key),
        ("kind", kind),
        ("namespace", info.namespace or info.parts.namespace),
        ("task", info.task or "(none)"),
        ("model", info.model or "unknown"),
        ("created", when(info.created_at, now)),
        ("cost", usd(info.cost)),
        ("size", size_text(info.size)),
        ("signed", "yes" if info.signed else "no"),
    ):
        head.append(f"{label}: ", style="bold")
        head.append(f"{escape_text(value)}\n")
    body: list[Any] = [head]
    if info.kind == "response":
        body.extend(_request_lines(doc, full))
    elif info.kind == "run":
        body.extend(_run_lines(doc, full))
    return Panel(Group(*body), title=_panel_title(info), title_align="left")


def _final_answer(final: Any) -> Any:
    """What the model answered last in a run entry: its text, or the arguments of its tool call(s)."""
    if not isinstance(final, dict):
        return final
    calls = final.get("tool_calls")
    if isinstance(calls, list) and calls:
        return calls[0].get("args") if len(calls) == 1 and isinstance(calls[0], dict) else calls
    return final.get("text")


def _panel_title(info: EntryInfo) -> Text:
    kind = {"response": "response", "run": "run"}.get(info.kind or "", "entry")
    return Text(f"{kind} {info.parts.digest[:12]}", style="bold")
