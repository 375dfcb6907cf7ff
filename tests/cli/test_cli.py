"""`pyai-caching`: every command against the embedded store and a real Redis, in-process and as a subprocess."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import pytest
import redis
from _cli_support import Cli, fill, put_entry, run, run_module, table_rows, words

from pyai_caching import LocalStore, RedisStore, __version__
from pyai_caching.cli import ExitCode, parse_duration
from pyai_caching.spend.recorders import RedisSpendLedger

DEMO_HEADER = ["Call", "Cache", "Time", "Model requests", "Tokens (in / out)", "Cost", "Saved"]
GROUP_HEADER = ["Entries", "Size", "Cost"]
SPEND_HEADER = ["Calls", "Requests", "Hits", "Misses", "Hit rate", "Spent", "Saved"]


def digest(prefix: str) -> str:
    return (prefix + "0" * 64)[:64]


# --- demo --------------------------------------------------------------------------------------------------------


def test_demo_shows_a_miss_then_hits_with_costs(cli: Cli, tmp_path: Path) -> None:
    result = cli("demo", "--dir", str(tmp_path), "--latency", "0.05")

    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout, "cached_agent_run(agent, prompt, 'make_profile')")
    assert rows[0] == DEMO_HEADER
    # Times vary from run to run: every other cell is stable.
    stable = [[r[0], r[1], r[3], r[4], r[5], r[6]] for r in rows[1:]]
    assert stable == [
        ["1", "miss", "1", "1,250 / 310", "$0.0084", "$0"],
        ["2", "hit", "0", "-", "$0", "$0.0084"],
        ["3", "hit", "0", "-", "$0", "$0.0084"],
    ]
    assert "$0.0168 saved in all" in result.stdout
    out = words(result.stdout)
    assert "Every call returned the same: UserProfile(name='Ada Lovelace'" in out
    assert "Store: local:" in out
    assert "That store was temporary" not in out  # --dir keeps the entries


def test_demo_json_and_rerun_starts_with_a_miss_again(cli: Cli, tmp_path: Path) -> None:
    for _ in range(2):  # the demo empties its namespace first, so a second run misses again
        result = cli("demo", "--dir", str(tmp_path), "--latency", "0.01", "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.stdout)
        assert [c["cache"] for c in report["calls"]] == ["miss", "hit", "hit"]
        assert [c["model_requests"] for c in report["calls"]] == [1, 0, 0]
        assert report["calls"][0]["cost"] == "0.0084"
        assert report["saved"] == "0.0168"
        assert report["same_output"] is True
        assert report["temporary"] is False
        assert report["store"] == f"local:{tmp_path / 'pyai_caching.sqlite3'}"
        assert report["output"]["name"] == "Ada Lovelace"
        assert report["speedup"] > 1


def test_demo_on_a_fresh_machine_as_a_subprocess(tmp_path: Path) -> None:
    # No server, no key, no configuration: a configured but dead Redis is ignored, and nothing is left behind.
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "LLM_CACHE_REDIS_URL": "redis://127.0.0.1:1/0"}
    done = run_module("demo", "--latency", "0.05", env=env)

    assert done.returncode == 0, done.stderr
    rows = table_rows(done.stdout, "cached_agent_run(agent, prompt, 'make_profile')")
    assert [r[1] for r in rows] == ["Cache", "miss", "hit", "hit"]
    assert "That store was temporary" in words(done.stdout)
    assert list(home.iterdir()) == []


def test_demo_on_redis_records_spend(cli: Cli, redis_url: str) -> None:
    assert cli("demo", "--redis-url", redis_url, "--latency", "0.01").exit_code == 0

    result = cli("spend", "--redis-url", redis_url, "--namespace", "pyai_caching-demo")
    assert result.exit_code == 0, result.output
    rows = table_rows(result.stdout, "Spend by task")
    assert rows == [["Task", *SPEND_HEADER], ["make_profile", "3", "3", "2", "1", "67%", "$0.0084", "$0.0168"]]


# --- stats -------------------------------------------------------------------------------------------------------


def test_stats_tables_on_the_embedded_store(cli: Cli, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    run(fill(store, tasks={"make_profile": 2, "summarize": 1}))
    run(fill(store, namespace="tenant-b"))

    result = cli("stats", "--dir", str(tmp_path))

    assert result.exit_code == 0, result.output
    out = result.stdout
    summary = words(out)
    assert "Store local:" in summary  # the path itself is data: checked in --json below
    assert "Entries 8 (4 request-level, 4 run-level)" in summary
    assert "Cost $0.0024: what the stored responses cost to produce" in summary
    assert "Hits / misses kept in the Redis spend ledger only" in summary
    assert json.loads(cli("stats", "--dir", str(tmp_path), "--json").stdout)["store"] == (
        f"local:{tmp_path / 'pyai_caching.sqlite3'}"
    )

    def without_size(title: str) -> list[list[str]]:
        return [[r[0], r[1], r[3]] for r in table_rows(out, title)]

    assert without_size("By namespace") == [["Namespace", "Entries", "Cost"], ["default", "6", "$0.0018"],
                                            ["tenant-b", "2", "$0.0006"]]  # fmt: skip
    assert without_size("By model") == [["Model", "Entries", "Cost"], ["function:test-model", "8", "$0.0024"]]
    assert without_size("By task") == [["Task", "Entries", "Cost"], ["make_profile", "6", "$0.0018"],
                                       ["summarize", "2", "$0.0006"]]  # fmt: skip
    assert table_rows(out, "By task")[0] == ["Task", *GROUP_HEADER]

    only_b = json.loads(cli("stats", "--dir", str(tmp_path), "--namespace", "tenant-b", "--json").stdout)
    assert only_b["entries"] == 2
    assert [r["namespace"] for r in only_b["by_namespace"]] == ["tenant-b"]


def test_stats_json_on_redis_counts_unreadable_and_other_keys(
    cli: Cli, redis_url: str, redis_client: redis.Redis
) -> None:
    store = RedisStore(redis_url)
    run(fill(store, tasks={"a": 1, "b": 2}, repeat=2, expense_hook=RedisSpendLedger(store=store)))
    redis_client.set("other-app:key", b"theirs")
    redis_client.set(f"pyai_caching:default:r:{{{digest('bad')}}}", b"\x80 not json")
    redis_client.hset(f"pyai_caching:default:r:{{{digest('ba5e')}}}", "field", "a hash, not a string")
    redis_client.set(f"pyai_caching:default:r:{{{digest('ab')}}}:lock", b"token")

    result = cli("stats", "--redis-url", redis_url, "--json")

    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["store"] == RedisStore(redis_url).description
    assert (report["entries"], report["request_entries"], report["run_entries"]) == (6, 3, 3)
    assert (report["unreadable"], report["other_keys"]) == (2, 1)
    assert report["cost"] == "0.0018"
    assert report["oldest"] <= report["newest"]
    assert [(r["task"], r["entries"]) for r in report["by_task"]] == [("b", 4), ("a", 2)]
    # 6 calls: each prompt missed once (1 request) and then hit the run entry (1 request served).
    assert (report["counters"]["hits"], report["counters"]["misses"]) == (3, 3)

    table = words(cli("stats", "--redis-url", redis_url).stdout)
    assert "Unreadable 2" in table
    assert "Other keys 1 (locks, ledgers: not entries)" in table
    assert "Hits / misses 3 / 3, 50% hits (spend ledger, all time; spent $0.0018, saved $0.0018)" in table


def test_stats_on_a_folder_without_a_cache_creates_nothing(cli: Cli, tmp_path: Path) -> None:
    folder = tmp_path / "nothing-here"
    result = cli("stats", "--dir", str(folder))
    assert result.exit_code == 0, result.output
    assert "(no cache file yet)" in words(result.stdout)
    report = cli("stats", "--dir", str(folder), "--json")
    assert report.exit_code == 0, report.output
    assert json.loads(report.stdout)["entries"] == 0
    assert not folder.exists()


def test_stats_reads_the_environment_like_the_library(cli: Cli, tmp_path: Path, redis_url: str) -> None:
    run(fill(LocalStore(tmp_path)))
    from_dir_env = json.loads(cli("stats", "--json", env={"LLM_CACHE_DIR": str(tmp_path)}).stdout)
    assert from_dir_env["entries"] == 2
    # LLM_CACHE_REDIS_URL wins over LLM_CACHE_DIR, as in the library.
    from_url_env = json.loads(
        cli("stats", "--json", env={"LLM_CACHE_DIR": str(tmp_path), "LLM_CACHE_REDIS_URL": redis_url}).stdout
    )
    assert from_url_env["entries"] == 0
    assert from_url_env["store"].startswith("redis://")


def test_progress_on_a_terminal_does_not_touch_stdout(cli: Cli, tmp_path: Path) -> None:
    run(fill(LocalStore(tmp_path), tasks={"t": 3}))
    plain = cli("stats", "--dir", str(tmp_path), "--json")
    on_terminal = cli("stats", "--dir", str(tmp_path), "--json", env={"TTY_COMPATIBLE": "1", "FORCE_COLOR": "1"})
    assert on_terminal.exit_code == 0
    assert json.loads(on_terminal.stdout)["entries"] == json.loads(plain.stdout)["entries"] == 6
    tables = cli("stats", "--dir", str(tmp_path), env={"TTY_COMPATIBLE": "1"})
    assert tables.exit_code == 0
    assert table_rows(tables.stdout, "By task")[1][:2] == ["t", "6"]


# --- inspect -----------------------------------------------------------------------------------------------------


def test_inspect_shows_the_request_and_the_response(cli: Cli, tmp_path: Path) -> None:
    run(fill(LocalStore(tmp_path), tasks={"make_profile": 1, "summarize": 1}))
    listing = json.loads(cli("inspect", "--last", "10", "--dir", str(tmp_path), "--json").stdout)
    assert len(listing) == 4
    created = [e["entry"]["meta"]["created_at"] for e in listing]
    assert created == sorted(created, reverse=True)
    response_key = next(
        e["key"] for e in listing if e["entry"]["kind"] == "response" and e["entry"]["meta"]["task"] == "summarize"
    )

    result = cli("inspect", response_key, "--dir", str(tmp_path))

    assert result.exit_code == 0, result.output
    out = result.stdout
    for expected in (
        f"response {response_key.split('{')[1][:12]}",
        "kind: request-level (one model response)",
        "namespace: default",
        "task: summarize",
        "model: function:test-model",
        "cost: $0.0006",
        "signed: no",
        "Request",
        "model: function:test-model",
        "output tools: final_result(name, age)",
        "[user] summarize prompt 0",
        "Response",
        '[tool-call final_result] {"age": 36, "name": "Ada"}',
        "usage: 100 in / 20 out",
    ):
        assert expected in out, expected

    by_prefix = cli("inspect", response_key.split("{")[1][:10], "--dir", str(tmp_path), "--json")
    assert [e["key"] for e in json.loads(by_prefix.stdout)] == [response_key]

    run_entries = json.loads(cli("inspect", "--task", "make_profile", "--dir", str(tmp_path), "--json").stdout)
    assert {e["entry"]["meta"]["task"] for e in run_entries} == {"make_profile"}
    run_key = next(e["key"] for e in run_entries if e["entry"]["kind"] == "run")
    shown = cli("inspect", run_key, "--dir", str(tmp_path)).stdout
    assert "kind: run-level (a whole run)" in shown
    assert "Run messages" in shown
    assert "[user] make_profile prompt 0" in shown
    assert re.search(r'Final answer \(raw[^│]*│\n│ {"age": 36, "name": "Ada"}', shown)


def test_inspect_shortens_long_messages_unless_full(cli: Cli, tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    run(fill(store, tasks={"x" * 10: 1}))
    long_prompt = "word " * 400
    from _agents import Counter, make_agent

    from pyai_caching import cached_agent_run

    run(cached_agent_run(make_agent(Counter()), long_prompt, "long", store=store))
    short = cli("inspect", "--task", "long", "--last", "1", "--dir", str(tmp_path)).stdout
    assert "more characters; --full shows all" in short
    full = cli("inspect", "--task", "long", "--last", "1", "--full", "--dir", str(tmp_path)).stdout
    assert "more characters" not in full


@pytest.mark.parametrize("store_kind", ["local", "redis"])
def test_inspect_not_found_and_ambiguous(
    cli: Cli, tmp_path: Path, request: pytest.FixtureRequest, store_kind: str
) -> None:
    if store_kind == "redis":
        url = request.getfixturevalue("redis_url")
        store, where = RedisStore(url), ["--redis-url", url]
    else:
        store, where = LocalStore(tmp_path), ["--dir", str(tmp_path)]
    run(put_entry(store, namespace="default", task="t", age_days=0, digest=digest("abcd1")))
    run(put_entry(store, namespace="default", task="t", age_days=0, digest=digest("abcd2")))

    ambiguous = cli("inspect", "abcd", *where)
    assert ambiguous.exit_code == ExitCode.ERROR
    assert "2 entries have a digest starting with abcd; give more characters" in ambiguous.stderr

    missing_key = f"pyai_caching:default:r:{{{digest('ffff')}}}"
    for target in ("ffff", missing_key):
        result = cli("inspect", target, *where)
        assert result.exit_code == ExitCode.ERROR
        assert result.stderr.startswith("pyai-caching: error: no entry")
        assert result.stderr.count("\n") == 1

    found = cli("inspect", "abcd1", *where, "--json")
    assert [e["entry"]["meta"]["task"] for e in json.loads(found.stdout)] == ["t"]


# --- clear -------------------------------------------------------------------------------------------------------


def test_clear_on_redis_deletes_only_this_librarys_entries(cli: Cli, redis_url: str, redis_client: redis.Redis) -> None:
    store = RedisStore(redis_url)
    run(fill(store, tasks={"a": 2}, expense_hook=RedisSpendLedger(store=store)))
    run(fill(store, namespace="other-ns"))
    foreign = {b"other-app:key", b"pyai_cachingX", b"pyai_caching", b"cache:pyai_caching:x"}
    for key in foreign:
        redis_client.set(key, b"theirs")
    redis_client.set(f"pyai_caching:default:r:{{{digest('bad')}}}", b"corrupt")
    ledger_keys = set(redis_client.keys("pyai_caching_ledger:*"))
    assert ledger_keys

    result = cli("clear", "--yes", "--redis-url", redis_url)

    assert result.exit_code == 0, result.output
    assert result.stdout == f"Deleted 7 entries from {store.description}.\n"  # the unreadable one too
    assert set(redis_client.keys("*")) == foreign | ledger_keys
    assert all(redis_client.get(k) == b"theirs" for k in foreign)


def test_clear_asks_first(cli: Cli, tmp_path: Path) -> None:
    run(fill(LocalStore(tmp_path)))

    declined = cli("clear", "--dir", str(tmp_path), input="n\n")
    assert declined.exit_code == ExitCode.ERROR
    assert f"Delete 2 entries from local:{tmp_path / 'pyai_caching.sqlite3'}? [y/N]" in declined.stderr
    assert "nothing deleted (not confirmed); pass --yes to delete without asking" in declined.stderr
    no_answer = cli("clear", "--dir", str(tmp_path), input="")
    assert no_answer.exit_code == ExitCode.ERROR
    assert json.loads(cli("stats", "--dir", str(tmp_path), "--json").stdout)["entries"] == 2

    confirmed = cli("clear", "--dir", str(tmp_path), input="y\n")
    assert confirmed.exit_code == 0, confirmed.output
    assert "Deleted 2 entries" in confirmed.stdout
    assert json.loads(cli("stats", "--dir", str(tmp_path), "--json").stdout)["entries"] == 0

    nothing = cli("clear", "--dir", str(tmp_path), "--json")
    assert nothing.exit_code == 0
    assert json.loads(nothing.stdout)["deleted"] == 0


@pytest.mark.parametrize("store_kind", ["local", "redis"])
def test_clear_filters_by_namespace_task_and_age(
    cli: Cli, tmp_path: Path, request: pytest.FixtureRequest, store_kind: str
) -> None:
    if store_kind == "redis":
        url = request.getfixturevalue("redis_url")
        store, where = RedisStore(url), ["--redis-url", url]
    else:
        store, where = LocalStore(tmp_path), ["--dir", str(tmp_path)]
    keys = {
        (ns, task, age): run(put_entry(store, namespace=ns, task=task, age_days=age, digest=digest(f"{i:x}")))
        for i, (ns, task, age) in enumerate(
            [("default", "t1", 10), ("default", "t1", 0), ("default", "t2", 10), ("ns2", "t1", 10), ("ns2", "t2", 0)]
        )
    }

    def remaining() -> set[tuple[str, str, int]]:
        listing = json.loads(cli("inspect", "--last", "100", *where, "--json").stdout)
        return {k for k, key in keys.items() if key in {e["key"] for e in listing}}

    old = cli("clear", "--older-than", "7d", "--namespace", "default", "--yes", *where, "--json")
    assert json.loads(old.stdout) == {"store": store.description, "matched": 2, "deleted": 2}
    assert remaining() == {("default", "t1", 0), ("ns2", "t1", 10), ("ns2", "t2", 0)}

    by_task = cli("clear", "--task", "t1", "--yes", *where)
    assert "Deleted 2 entries" in by_task.stdout
    assert remaining() == {("ns2", "t2", 0)}

    by_namespace = cli("clear", "-n", "ns2", "-y", *where)
    assert "Deleted 1 entry from" in by_namespace.stdout
    assert remaining() == set()


# --- spend -------------------------------------------------------------------------------------------------------


def test_spend_per_task_model_and_day(cli: Cli, redis_url: str) -> None:
    store = RedisStore(redis_url)
    ledger = RedisSpendLedger(store=store)
    run(fill(store, tasks={"extract": 2, "classify": 1}, repeat=3, expense_hook=ledger))

    result = cli("spend", "--redis-url", redis_url)

    assert result.exit_code == 0, result.output
    assert table_rows(result.stdout, "Spend by task") == [
        ["Task", *SPEND_HEADER],
        ["extract", "6", "6", "4", "2", "67%", "$0.0012", "$0.0024"],
        ["classify", "3", "3", "2", "1", "67%", "$0.0006", "$0.0012"],
        ["Total", "9", "9", "6", "3", "67%", "$0.0018", "$0.0036"],
    ]
    assert table_rows(result.stdout, "Spend by model") == [
        ["Model", *SPEND_HEADER],
        ["function:test-model", "9", "9", "6", "3", "67%", "$0.0018", "$0.0036"],
    ]

    by_day = json.loads(cli("spend", "--by", "day", "--since", "7d", "--redis-url", redis_url, "--json").stdout)
    assert len(by_day["by_day"]) == 1
    assert by_day["total"]["cost"] == "0.0018"
    assert by_day["total"]["saved"] == "0.0036"
    assert (by_day["total"]["hits"], by_day["total"]["misses"]) == (6, 3)
    assert "by_task" not in by_day

    one_task = json.loads(cli("spend", "-t", "classify", "--redis-url", redis_url, "--json").stdout)
    assert [r["task"] for r in one_task["rows"]] == ["classify"]
    all_time = json.loads(cli("spend", "--all-time", "--redis-url", redis_url, "--json").stdout)
    assert all_time["since"] is None
    assert all_time["total"]["calls"] == 9

    empty = cli("spend", "--since", "2020-01-01", "--until", "2020-01-31", "--redis-url", redis_url)
    assert empty.exit_code == 0
    assert "No spend recorded" in empty.stdout


def test_spend_shows_each_budgets_use(cli: Cli, redis_url: str) -> None:
    from pydantic_ai import Agent
    from pydantic_ai.messages import ModelResponse, TextPart
    from pydantic_ai.models.function import FunctionModel
    from pydantic_ai.usage import RequestUsage

    from pyai_caching import Budget, BudgetExceededError, MemoryStore, ModelCosts, cached_agent_run

    agent = Agent(
        FunctionModel(
            lambda messages, info: ModelResponse(
                parts=[TextPart("ok")], usage=RequestUsage(input_tokens=1_000, output_tokens=100)
            ),
            model_name="priced",
        )
    )
    usd = Budget("per-namespace", usd="0.005", period="total", tenant="namespace", redis_url=redis_url)
    tokens = Budget("all-tokens", tokens=100_000, period="total", redis_url=redis_url)

    async def calls() -> None:
        for namespace, prompt in [("acme", "a"), ("acme", "b"), ("acme", "c"), ("globex", "a")]:
            with contextlib.suppress(BudgetExceededError):
                await cached_agent_run(
                    agent, prompt, "t", store=MemoryStore(), namespace=namespace,
                    custom_costs={"priced": ModelCosts(2, 10)}, budget=[usd, tokens],
                )  # fmt: skip

    run(calls())
    result = cli("spend", "--redis-url", redis_url)
    assert result.exit_code == 0, result.output
    assert "No spend recorded" in result.stdout  # no ledger: the budgets are shown all the same
    assert table_rows(result.stdout, "Budgets, current periods") == [
        ["Budget / tenant", "Period", "Spent", "Limit", "Used", "Held", "Denied", "Resets (UTC)"],
        ["all-tokens", "total", "3,300 tokens", "100,000 tokens", "3%", "0 tokens", "0", "never"],
        ["per-namespace / acme", "total", "$0.006", "$0.005", "120%", "$0", "1", "never"],
        ["per-namespace / globex", "total", "$0.003", "$0.005", "60%", "$0", "0", "never"],
    ]
    data = json.loads(cli("spend", "--redis-url", redis_url, "--json").stdout)
    acme = next(b for b in data["budgets"] if b["tenant"] == "acme")
    assert acme == {
        "budget": "per-namespace", "tenant": "acme", "unit": "usd", "period": "total", "period_start": None,
        "resets_at": None, "limit": "0.005", "spent": "0.006", "reserved": "0", "remaining": "0", "in_flight": 0,
        "admitted": 2, "denied": 1,
    }  # fmt: skip


def test_spend_needs_redis(cli: Cli, tmp_path: Path) -> None:
    for args in (["--dir", str(tmp_path)], []):
        result = cli("spend", *args)
        assert result.exit_code == ExitCode.USAGE
        assert "the spend ledger lives in Redis; pass --redis-url or set LLM_CACHE_REDIS_URL" in result.stderr


# --- errors, exit codes, entry points ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["stats", "--redis-url", "redis://:hunter2pw@127.0.0.1:1/0"], ExitCode.UNREACHABLE, "cannot reach Redis at"),
        (["clear", "--yes", "--redis-url", "redis://127.0.0.1:1/0"], ExitCode.UNREACHABLE, "start the server"),
        (["spend", "--redis-url", "redis://127.0.0.1:1/0"], ExitCode.UNREACHABLE, "cannot reach Redis at"),
        (["stats", "--redis-url", "http://example.com"], ExitCode.USAGE, "unsupported scheme 'http'"),
        (["stats", "--redis-url", "redis://x", "--dir", "."], ExitCode.USAGE, "pass either --redis-url or --dir"),
        (["clear", "--older-than", "7 days"], ExitCode.USAGE, "--older-than must be a duration such as"),
        (["spend", "--since", "last week"], ExitCode.USAGE, "--since must be a duration back from now"),
        (["spend", "--until", "soon"], ExitCode.USAGE, "--until must be a date"),
        (["inspect"], ExitCode.USAGE, "give an entry KEY (or digest prefix), --task T or --last N"),
        (["inspect", "not-hex"], ExitCode.USAGE, "KEY must be an entry key"),
        (["inspect", "pyai_caching:default:lock"], ExitCode.USAGE, "is not an entry key"),
        (["demo", "--redis-url", "redis://x", "--dir", "."], ExitCode.USAGE, "pass either --redis-url or --dir"),
    ],
)
def test_errors_are_one_line_with_an_exit_code(cli: Cli, args: list[str], code: ExitCode, message: str) -> None:
    result = cli(*args)
    assert result.exit_code == code, result.output
    assert result.stderr.startswith("pyai-caching: error: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1
    assert "Traceback" not in result.output
    assert "hunter2pw" not in result.output
    assert result.stdout == ""

    as_json = cli(*args, "--json")
    assert as_json.exit_code == code
    error = json.loads(as_json.stderr)
    assert error["exit_code"] == code
    assert message in error["error"]


def test_a_corrupt_database_file_is_moved_aside_with_a_warning(
    cli: Cli, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "pyai_caching.sqlite3").write_bytes(b"this is not a database" * 100)
    result = cli("stats", "--dir", str(tmp_path), "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["entries"] == 0
    assert "was corrupt" in caplog.text
    assert [p.name for p in tmp_path.iterdir() if ".corrupt-" in p.name]  # kept, not deleted


def test_usage_errors_exit_2(cli: Cli) -> None:
    assert cli("stats", "--no-such-option").exit_code == ExitCode.USAGE
    assert cli("no-such-command").exit_code == ExitCode.USAGE
    assert cli("spend", "--by", "week").exit_code == ExitCode.USAGE


def test_help_and_version(cli: Cli) -> None:
    help_text = cli("--help").stdout
    for command in ("demo", "stats", "spend", "inspect", "clear"):
        assert command in help_text
    assert "Exit codes: 0 ok, 1 failed, 2 bad usage, 3 store unreachable" in help_text
    assert cli("--version").stdout == f"pyai-caching {__version__}\n"


def test_subprocess_against_redis(redis_url: str, redis_client: redis.Redis) -> None:
    run(fill(RedisStore(redis_url), tasks={"t": 2}))
    redis_client.set("theirs", b"1")

    stats = run_module("stats", "--redis-url", redis_url, "--json")
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["entries"] == 4

    cleared = run_module("clear", "--yes", "--redis-url", redis_url, env={"LLM_CACHE_REDIS_URL": "redis://127.0.0.1:1"})
    assert cleared.returncode == 0, cleared.stderr
    assert "Deleted 4 entries" in cleared.stdout
    assert redis_client.keys("*") == [b"theirs"]

    down = run_module("stats", env={"LLM_CACHE_REDIS_URL": "redis://127.0.0.1:1/0"})
    assert down.returncode == ExitCode.UNREACHABLE
    assert down.stderr.startswith("pyai-caching: error: cannot reach Redis at redis://127.0.0.1:1/0")
    assert "Traceback" not in down.stderr


def test_parse_duration() -> None:
    assert [parse_duration(t, "--x") for t in ("90s", "15m", "12h", "7d", "2w", "1.5h")] == [
        90,
        900,
        43200,
        604800,
        1209600,
        5400,
    ]
