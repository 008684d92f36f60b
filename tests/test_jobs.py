"""`tokentop report --by job` over three weeks of three recurring jobs (tests/job_history.py).

The report scans the transcripts, records every run with git's answer, reads OpenClaw's cron
layout, and must get each job's runs, failures, costs and commits right; only the job made
worse in the third week is flagged, with its first third-week run as the first changed run.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from job_history import DAY, JobHistory
from tokentop.cli import main
from tokentop.history.jobs import JobRun, first_changed, week_over_week
from tokentop.history.report_rows import iso_week


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Iterator[JobHistory]:
    root = tmp_path_factory.mktemp("jobs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GIT_CONFIG_GLOBAL", str(root / "no-gitconfig"))
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        mp.setenv("XDG_CONFIG_HOME", str(root / "config"))
        mp.setenv("XDG_CACHE_HOME", str(root / "cache"))
        jobs = JobHistory(root, time.time())
        jobs.write()
        yield jobs


def report(history: JobHistory, capsys: pytest.CaptureFixture[str], *extra: str) -> str:
    assert main(["report", "--by", "job", *extra, *history.args()]) == 0
    return capsys.readouterr().out


def by_name(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    jobs: dict[str, dict[str, Any]] = {}
    for entry in doc["jobs"]:
        name = entry["job"]["job"]
        jobs[name.split(":")[0] if ":" in name else name] = entry
    return jobs


def test_runs_costs_commits_and_the_one_regression(
    history: JobHistory, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = json.loads(report(history, capsys, "--format", "json"))
    jobs = by_name(doc)
    assert set(jobs) == {"site", "research", "Nightly report"}
    for name, exp in history.expected.items():
        row, runs = jobs[name]["job"], jobs[name]["runs"]
        assert (row["runs"], row["failed"], row["commits"]) == (exp.runs, exp.failed, exp.commits)
        assert row["cost_usd"] == pytest.approx(sum(exp.costs), rel=1e-9)
        assert row["median_cost"] == pytest.approx(statistics.median(exp.costs), rel=1e-9)
        assert [r["cost_usd"] for r in runs] == pytest.approx(exp.costs, rel=1e-6, abs=1e-6)
        assert [r["session"] or "" for r in runs] == exp.sessions
    assert jobs["Nightly report"]["job"]["source"] == "openclaw-cron"
    assert jobs["site"]["job"]["source"] == jobs["research"]["job"]["source"] == "prompt"
    statuses = [r["status"] for r in jobs["Nightly report"]["runs"]]
    assert statuses.count("error") == 3 and statuses.count("ok") == 27
    assert jobs["research"]["job"]["theater_share"] == pytest.approx(0.5)
    flagged = {n for n, j in jobs.items() if j["job"]["change"] and j["job"]["change"]["regressed"]}
    assert flagged == {"site"}
    change = jobs["site"]["job"]["change"]
    assert change["first_changed"]["session"] == history.first_worse
    assert change["pct"] == pytest.approx(100, abs=15)


def test_the_table_names_the_regression_and_labels_the_arithmetic(
    history: JobHistory, capsys: pytest.CaptureFixture[str]
) -> None:
    text = report(history, capsys, "--no-scan")
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["JOB", "SOURCE", "RUNS", "FAILED"]
    nightly = next(line for line in lines if line.startswith("Nightly report"))
    assert nightly.split()[2:5] == ["cron", "30", "3"]
    [flag] = [line for line in lines if line.startswith("⚑ site")]
    assert "week over week" in flag and history.first_worse in flag
    assert "arithmetic, not a claim that model could have done the work" in text
    assert "⚑ median $/run" in text  # the flag's legend, as a job carries it
    lenient = history.root / "lenient.toml"
    lenient.write_text("[jobs]\nregress_pct = 500\n")
    calm = report(history, capsys, "--no-scan", "--config", str(lenient))
    assert "⚑" not in calm and "arithmetic" in calm  # no legend for a flag nobody carries


def test_week_and_month_groupings_add_up(
    history: JobHistory, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = {}
    for by in ("session", "week", "month"):
        assert main(["report", "--no-scan", "--by", by, "--format", "json", *history.args()]) == 0
        docs[by] = json.loads(capsys.readouterr().out)
    total = docs["session"]["total"]
    for by in ("week", "month"):
        rows = docs[by]["rows"]
        assert sum(r["sessions"] for r in rows) == total["sessions"] == 89  # one run spent nothing
        assert sum(r["cost_usd"] for r in rows) == pytest.approx(total["cost_usd"])
    starts = [history.at(i, h) for i in range(30) for h in (1.0, 2.0, 3.0) if (i, h) != (26, 3.0)]
    assert [r["group"] for r in docs["week"]["rows"]] == sorted({iso_week(t) for t in starts})


def run(at: float, cost: float) -> JobRun:
    return JobRun("k", "k", "prompt", at, session=f"s{at:.0f}", cost_usd=cost)


def test_one_expensive_run_is_not_the_change_point() -> None:
    """An outlier in the earlier week does not pass for the change: the level shift does."""
    now = 30 * DAY
    costs = [1.0] * 3 + [9.0] + [1.0] * 6 + [2.0] * 10
    runs = [run(now - 13.5 * DAY + i * 0.65 * DAY, c) for i, c in enumerate(costs)]
    change = week_over_week(runs, now, 30.0)
    assert change is not None and change.regressed
    assert change.first_changed == runs[10] == first_changed(runs)
    steady = [run(r.at, 1.0 + (i % 3) * 0.05) for i, r in enumerate(runs)]
    assert week_over_week(steady, now, 30.0) is not None
    assert not week_over_week(steady, now, 30.0).regressed  # type: ignore[union-attr]


AGENT = """
import os, sys, time, uuid
from pathlib import Path
from claude_lines import escape_cwd, response, write_transcript
sid = str(uuid.uuid4())
root = Path(os.environ["CLAUDE_CONFIG_DIR"]) / "projects" / escape_cwd(os.getcwd())
replies = [response(sid, os.getcwd(), 4000, f"step {n}") for n in range(2)]
write_transcript(root / f"{sid}.jsonl", sid, os.getcwd(), replies)
time.sleep(1.0)
sys.exit(int(sys.argv[1]))
"""


def test_run_job_names_the_run_and_keeps_how_it_ended(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`tokentop run --job nightly`: each run's session is a run of "nightly", and an agent
    that exits non-zero is a failed run, whatever its first prompt."""
    import os
    import subprocess
    import sys

    work = tmp_path / "work"
    work.mkdir()
    env = {
        **os.environ,
        "CLAUDE_CONFIG_DIR": str(tmp_path / "claude"),
        "CODEX_HOME": str(tmp_path / "codex"),
        "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"),
        "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "PYTHONPATH": str(Path(__file__).parent),
    }
    for code in (0, 3):
        argv = [sys.executable, "-m", "tokentop.cli", "run", "--job", "nightly", "--quiet",
                "--", sys.executable, "-c", AGENT, str(code)]  # fmt: skip
        done = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == code, done.stderr
    db = tmp_path / "data" / "tokentop" / "tokentop.db"
    argv = ["report", "--by", "job", "--no-scan", "--format", "json", "--db", str(db)]
    assert main(argv) == 0
    [entry] = json.loads(capsys.readouterr().out)["jobs"]
    assert (entry["job"]["job"], entry["job"]["source"]) == ("nightly", "run")
    assert [r["status"] for r in entry["runs"]] == ["ok", "error"]
    assert (entry["job"]["runs"], entry["job"]["failed"]) == (2, 1)


def test_hostile_cron_files_are_counted_never_trusted(tmp_path: Path) -> None:
    """A FIFO where jobs.json should be is not read (no hang); junk and over-long run-log lines
    are counted; lines that are not finished runs are skipped as OpenClaw skips them; an older
    tool's bare list of jobs with `jobId` still names its job."""
    import os

    from tokentop.sources.openclaw_cron import MAX_RUN_LINE, cron_dirs, read_cron

    state = tmp_path / "openclaw"
    cron = state / "cron"
    (cron / "runs").mkdir(parents=True)
    os.mkfifo(cron / "jobs.json")
    good = b'{"ts":1767225600000,"jobId":"j1","action":"finished","status":"error"}'
    started = b'{"ts":1767225600000,"jobId":"j1","action":"started"}'
    lines = [good, b"not json", b"{" + b" " * MAX_RUN_LINE + b"}", started, good]
    (cron / "runs" / "j1.jsonl").write_bytes(b"\n".join(lines) + b"\n")
    index = read_cron(cron_dirs([state / "agents"]))
    assert (index.jobs, index.bad_lines) == ({}, 2)
    assert [(r.job_id, r.status, r.ts) for r in index.runs] == [("j1", "error", 1767225600.0)] * 2
    os.unlink(cron / "jobs.json")
    (cron / "jobs.json").write_text('[{"jobId": "j1", "name": "Inbox triage"}]')
    assert read_cron(cron_dirs([state])).name_of("j1") == "Inbox triage"


def test_the_first_prompt_is_the_users_own_words(tmp_path: Path) -> None:
    """Codex's injected context and Claude Code's meta records are not prompts; a FIFO is
    never read; a prompt past the first read is found; run-to-run variables fold away."""
    import os

    from tokentop.history.fingerprint import normalised, prompt_key
    from tokentop.sources.prompts import first_prompt, main_file

    codex = tmp_path / "rollout.jsonl"

    def user(text: str) -> dict[str, object]:
        content = [{"type": "input_text", "text": text}]
        return {"type": "response_item",
                "payload": {"type": "message", "role": "user", "content": content}}  # fmt: skip

    lines = [user("<environment_context><cwd>/x</cwd></environment_context>"),
             user("Research scan 2026-11-20")]  # fmt: skip
    codex.write_text("".join(json.dumps(x) + "\n" for x in lines))
    assert first_prompt("codex", str(codex)) == "Research scan 2026-11-20"
    claude = tmp_path / "s1.jsonl"
    filler = {"type": "summary", "summary": "x" * 40_000}
    meta = {"type": "user", "isMeta": True, "message": {"role": "user", "content": "Caveat: …"}}
    tools = {"type": "user", "message": {"role": "user", "content": [
        {"type": "tool_result", "content": "ok"}]}}  # fmt: skip
    text = "Fix issue #412 in /home/u/app.py (commit 3f2a9c1e)"
    ask = {"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": text}]}}
    claude.write_text("".join(json.dumps(x) + "\n" for x in (filler, meta, tools, ask)))
    prompt = first_prompt("claude", str(claude))
    assert prompt.startswith("Fix issue #412")
    assert normalised(prompt) == "fix issue <n> in <path> (commit <hash>)"
    assert prompt_key("/w", prompt) == prompt_key(
        "/w", "fix issue #97 in /home/u/b.py (commit aa11ff2)"
    )
    assert prompt_key("/w", prompt) != prompt_key("/other", prompt)
    os.mkfifo(tmp_path / "fifo.jsonl")
    assert first_prompt("claude", str(tmp_path / "fifo.jsonl")) == ""
    assert first_prompt("gemini", str(claude)) == ""  # not a format read for prompts
    files = ["/p/s1/subagents/agent-1.jsonl", "/p/s1.jsonl"]
    assert main_file("s1", files) == "/p/s1.jsonl"
