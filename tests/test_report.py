"""`tokentop report` and `tokentop summary` over transcripts written by real demo agent processes.

Two agents work in real git repositories made here (one commits, one does not), one in a plain
directory, one in a directory that does not exist; the report must label each and price the
commits exactly.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from tokentop.cli import main
from tokentop.commands.report import parse_since
from tokentop.engine.engine import Engine
from tokentop.history.store import Store
from tokentop.sources.claude_code import ClaudeCodeSource

AGENTS = (  # kind, behavior, project dir name ("" = a path that does not exist), seed
    ("claude", "steady", "webshop", 1),
    ("claude", "loop", "notes", 2),
    ("codex", "steady", "ml-pipeline", 3),
    ("codex", "overbudget", "", 4),
)


def git(repo: Path, *args: str, when: float | None = None) -> str:
    env = dict(os.environ)
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{int(when)} +0000"
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def make_repo(path: Path) -> None:
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "dev@example.com")
    (path / "README").write_text("hello\n")
    git(path, "add", "README")
    git(path, "commit", "-q", "-m", "initial", when=time.time() - 7200)  # before the session


class Fleet:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.claude, self.codex = root / "claude", root / "codex"
        self.db = root / "tokentop.db"
        self.repos = {"webshop": root / "webshop", "ml-pipeline": root / "ml-pipeline"}
        self.commit_sha = ""

    def args(self, *extra: str) -> list[str]:
        dirs = ["--claude-dir", str(self.claude), "--codex-dir", str(self.codex)]
        return [*extra, *dirs, "--db", str(self.db)]


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    root = tmp_path_factory.mktemp("fleet")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GIT_CONFIG_GLOBAL", str(root / "no-gitconfig"))
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        mp.setenv("XDG_CONFIG_HOME", str(root / "config"))  # no user config.toml
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))  # the engine's state cache
        for var in ("GIT_AUTHOR_NAME", "GIT_COMMITTER_NAME"):
            mp.setenv(var, "Dev")
        for var in ("GIT_AUTHOR_EMAIL", "GIT_COMMITTER_EMAIL"):
            mp.setenv(var, "dev@example.com")
        f = Fleet(root)
        for repo in f.repos.values():
            make_repo(repo)
        (root / "notes").mkdir()
        run_agents(f)
        (f.repos["webshop"] / "shop.py").write_text("def checkout():\n    return 42\n")
        git(f.repos["webshop"], "add", "shop.py")
        git(f.repos["webshop"], "commit", "-q", "-m", "checkout")  # now: in the window + slack
        f.commit_sha = git(f.repos["webshop"], "rev-parse", "HEAD")
        yield f


def run_agents(f: Fleet) -> None:
    children = []
    for kind, behavior, project, seed in AGENTS:
        cwd = str(f.root / project) if project else "/nonexistent/cli-tools"
        root = f.claude if kind == "claude" else f.codex
        argv = [sys.executable, "-m", "tokentop.demo.agent", "--kind", kind,
                "--behavior", behavior, "--root", str(root), "--cwd", cwd,
                "--interval", "0.005", "--seed", str(seed), "--max-turns", "8"]  # fmt: skip
        children.append(subprocess.Popen(argv))
    assert [c.wait(timeout=60) for c in children] == [0, 0, 0, 0]


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(argv)
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


def test_md_report_scans_an_empty_store_and_labels_every_session(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    md = run_cli(fleet.args("report", "--format", "md"), capsys)
    (fleet.root / "report.md").write_text(md)
    assert md.startswith("# tokentop report — all recorded sessions, by session")
    assert "**4 sessions**" in md
    assert md.count("\n## ") == 4  # one section per session
    webshop = md[md.index("## webshop") :].split("\n## ")[0]
    assert "· leverage" in webshop and "1 commit," in webshop and "/commit" in webshop
    assert "### Top token consumers (estimate" in webshop
    notes = md[md.index("## notes") :].split("\n## ")[0]
    assert "· pending" in notes and "not a git repository; files were changed" in notes
    # the looping agent: the scan judged it as of its last line, no app was watching
    assert "# Detector events and actions" in notes
    assert "**loop** (policy: warn): looping: the same Bash call" in notes
    assert "**loop**" not in webshop
    pipeline = md[md.index("## ml-pipeline") :].split("\n## ")[0]
    assert "no commits in the session's window; files were changed but not" in pipeline
    assert "directory not found: /nonexistent/cli-tools" in md


def test_json_report_prices_the_commit_exactly(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(run_cli(fleet.args("report", "--format", "json"), capsys))
    rows = {r["project"]: r for r in doc["rows"]}
    shop = rows["webshop"]
    assert (shop["commits"], shop["surviving"], shop["labels"]) == (1, 1, {"leverage": 1})
    assert shop["usd_per_commit"] == shop["cost_usd"] > 0
    assert rows["ml-pipeline"]["commits"] == 0
    assert doc["total"]["sessions"] == 4
    assert doc["total"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in doc["rows"]))


def test_groupings_add_up(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    total = json.loads(run_cli(fleet.args("report", "--format", "json"), capsys))["total"]
    for by in ("day", "project", "agent", "model"):
        doc = json.loads(run_cli(fleet.args("report", "--format", "json", "--by", by), capsys))
        assert sum(r["tokens"] for r in doc["rows"]) == total["tokens"], by
        assert sum(r["cost_usd"] for r in doc["rows"]) == pytest.approx(total["cost_usd"]), by
        costs = [r["cost_usd"] for r in doc["rows"]]
        if by != "day":  # not a period: the most expensive first
            assert costs == sorted(costs, reverse=True) and len(set(costs)) > 1, (by, costs)
    agents = json.loads(run_cli(fleet.args("report", "--format", "json", "--by", "agent"), capsys))
    assert {r["group"]: r["sessions"] for r in agents["rows"]} == {"claude": 2, "codex": 2}


def test_csv_and_table(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    rows = list(
        csv.DictReader(io.StringIO(run_cli(fleet.args("report", "--format", "csv"), capsys)))
    )
    assert len(rows) == 4 and {r["labels"] for r in rows} == {"leverage:1", "pending:1"}
    table = run_cli(fleet.args("report", "--by", "project"), capsys).splitlines()
    assert table[0].split()[:3] == ["PROJECT", "SESSIONS", "ACTIVE"]
    assert table[-2].startswith("total") and len(table) == 7
    assert table[-1].startswith("cheapest: the same tokens on the cheapest model")


def test_since_filters_and_a_future_date_is_empty(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        run_cli(fleet.args("report", "--since", "2999-01-01"), capsys) == "no recorded sessions\n"
    )
    doc = json.loads(run_cli(fleet.args("report", "--since", "1d", "--format", "json"), capsys))
    assert doc["total"]["sessions"] == 4


def test_summary_of_one_session_as_markdown(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(run_cli(fleet.args("report", "--format", "json"), capsys))
    shop = next(r for r in doc["rows"] if r["project"] == "webshop")
    sid = shop["group"].split(":", 1)[1]
    md = run_cli(fleet.args("summary", sid[:10]), capsys)
    assert md.startswith(f"# webshop · claude `{sid[:8]}` · leverage")
    assert f"`{fleet.commit_sha[:10]}` checkout (+2 −0, 1 file)" in md
    assert "- **Tools:** 8 calls" in md


def test_unknown_session_is_a_clear_error(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(fleet.args("summary", "no-such-session", "--no-scan")) == 2
    assert "no recorded session matches 'no-such-session'" in capsys.readouterr().err


def test_survival_is_rechecked_after_a_reset(
    fleet: Fleet, capsys: pytest.CaptureFixture[str]
) -> None:
    """Right after a report checked survival, a reset is seen by the next report."""
    json.loads(run_cli(fleet.args("report", "--format", "json"), capsys))
    repo = fleet.repos["webshop"]
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    try:
        doc = json.loads(run_cli(fleet.args("report", "--format", "json"), capsys))
        shop = next(r for r in doc["rows"] if r["project"] == "webshop")
        assert (shop["commits"], shop["surviving"], shop["usd_per_surviving_commit"]) == (
            1,
            0,
            None,
        )
    finally:
        git(repo, "reset", "-q", "--hard", fleet.commit_sha)
    doc = json.loads(run_cli(fleet.args("report", "--format", "json"), capsys))
    assert next(r for r in doc["rows"] if r["project"] == "webshop")["surviving"] == 1


def test_bad_arguments(fleet: Fleet, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(fleet.args("report", "--since", "last tuesday"))
    assert "not a date" in capsys.readouterr().err
    junk = fleet.root / "junk.db"
    junk.write_bytes(b"not a database" * 200)
    assert main(["report", "--db", str(junk), "--no-scan"]) == 2
    assert "junk.db" in capsys.readouterr().err


def test_parse_since() -> None:
    now = 1_763_640_000.0
    assert parse_since("7d", now) == now - 7 * 86400
    assert parse_since("90m", now) == now - 5400
    assert parse_since("2025-01-02T03:04:05+00:00", now) == 1735787045.0
    assert parse_since("today", now) <= now < parse_since("today", now) + 86400
    assert parse_since("yesterday", now) == parse_since("today", now) - 86400


def test_report_lists_a_session_written_after_the_previous_report(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fixtures = Path(__file__).parent / "fixtures" / "claude" / "ccusage-fixture" / "projects"
    root = tmp_path / "claude"
    alpha = root / "projects" / "project-alpha"
    shutil.copytree(fixtures / "project-alpha", alpha)
    argv = ["report", "--format", "json", "--claude-dir", str(root), "--db", str(tmp_path / "t.db")]

    def sessions(*extra: str) -> int:
        return int(json.loads(run_cli([*argv, *extra], capsys))["total"]["sessions"])

    assert sessions() == 1
    assert sessions("--no-scan") == 1
    shutil.copytree(fixtures / "project-beta", root / "projects" / "project-beta")
    assert sessions("--no-scan") == 1  # --no-scan shows the store as it is
    assert sessions() == 2  # as the README says: every report first scans the transcripts


def test_default_store_takes_in_the_action_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokentop.processes.control import ActionResult, default_action_log

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    log = default_action_log()
    assert log.is_relative_to(tmp_path)
    log.parent.mkdir(parents=True)
    kill = ActionResult(
        "kill", True, (4242,), "killed pid 4242", "loop: same call 5 times", "policy:loop",
        1_767_960_000.0, 4242, "claude:session-alpha",
    )  # fmt: skip
    log.write_bytes(msgspec.json.encode(kill) + b"\n")
    fixtures = Path(__file__).parent / "fixtures" / "claude" / "ccusage-fixture"
    md = run_cli(["summary", "session-alpha", "--claude-dir", str(fixtures)], capsys)
    assert "**kill** by policy:loop (ok): loop: same call 5 times" in md
    assert (tmp_path / "data" / "tokentop" / "tokentop.db").exists()


def test_report_resumes_from_the_engines_own_state_cache(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """One on-disk format for engine state: `report` keeps the cache every front-end keeps,
    so after it a fresh engine (or the next report) reads only what was appended since."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    root, cache = tmp_path / "c", tmp_path / "cache"
    gen = Path(__file__).with_name("gen_claude_corpus.py")
    argv = [sys.executable, str(gen), str(root), "--sessions", "3", "--turns", "10", "--seed", "5"]
    subprocess.run(argv, check=True, capture_output=True)
    report = ["report", "--format", "json", "--claude-dir", str(root), "--db",
              str(tmp_path / "t.db"), "--cache-dir", str(cache)]  # fmt: skip

    def resumed() -> tuple[int, int]:
        engine = Engine([ClaudeCodeSource(config_dirs=[root])], lambda *_: 0.0, cache_dir=cache)
        engine.load_cache()
        assert engine.cache_note == ""
        engine.scan()
        return engine.bytes_read, sum(s.tokens.total for s in engine.snapshot().sessions)

    first = json.loads(run_cli(report, capsys))["total"]["tokens"]
    assert [p.suffix for p in sorted(cache.iterdir())] == [".dedupe", ".msgpack"]
    assert resumed() == (0, first)
    transcript = sorted(root.rglob("*.jsonl"))[0]
    line = transcript.read_bytes().splitlines(keepends=True)[1]
    fresh = line.replace(b'"id":"msg_', b'"id":"msg_again_', 1)
    assert fresh != line
    with transcript.open("ab") as fh:
        fh.write(fresh)  # a new response: the next report counts it
    second = json.loads(run_cli(report, capsys))["total"]["tokens"]
    assert second > first
    assert resumed() == (0, second)


def test_a_bulk_report_leaves_consumers_to_the_summary_that_shows_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`report` records summaries without top consumers (they cost a second read of every
    transcript); `summary` computes them from the session's files and stores them."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    root, db = tmp_path / "c", tmp_path / "t.db"
    gen = Path(__file__).with_name("gen_claude_corpus.py")
    argv = [sys.executable, str(gen), str(root), "--sessions", "3", "--turns", "10", "--seed", "5"]
    subprocess.run(argv, check=True, capture_output=True)
    where = ["--claude-dir", str(root), "--db", str(db), "--cache-dir", str(tmp_path / "cache")]
    run_cli(["report", "--format", "json", "--no-git", *where], capsys)
    with Store(db) as store:
        recorded = store.summaries()[0]
    assert len(recorded) == 3 and all(s.consumers is None for s in recorded)
    sid = recorded[0].session_id
    md = run_cli(["summary", sid, "--no-scan", "--no-git", *where], capsys)
    assert "# Top token consumers (estimate" in md
    with Store(db) as store:
        stored = {s.session_id: s for s in store.summaries()[0]}
    assert stored[sid].consumers is not None and stored[sid].consumers.tools
    assert all(s.consumers is None for k, s in stored.items() if k != sid)


def test_a_summary_records_the_budget_set_for_its_session(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`b` in the app keeps a session's budget in the store; the summary `report` and
    `summary` record shows that budget and its share, as the app did (not "none set")."""
    from claude_lines import response, write_transcript
    from tokentop.config import Budget
    from tokentop.model import SessionKey

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    sid = "5a5a5a5a-1111-4222-8333-444455556666"
    claude = tmp_path / "claude"
    path = claude / "projects" / "-w-shop" / f"{sid}.jsonl"
    write_transcript(path, sid, "/w/shop", [response(sid, "/w/shop", 20_000) for _ in range(3)])
    db = tmp_path / "t.db"
    with Store(db) as store:
        store.set_budget(SessionKey("claude", sid), Budget(usd=1.0, tokens=10_000), "app")
    args = ["--claude-dir", str(claude), "--db", str(db), "--no-git"]
    assert main(["summary", sid[:8], *args]) == 0
    md = capsys.readouterr().out
    assert "- **Budget:** $1.00 / 10.0k tokens — 600% used" in md, md
