"""`tokentop run` with real agents: the tiny agent of claude_lines.py appends realistic Claude
Code lines under CLAUDE_CONFIG_DIR. Each run is a real `python -m tokentop.cli run` in its own
process group; finalizers kill the runner's group and the agent's (its own) whatever happens."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import psutil
import pytest

import proc_helpers
from proc_helpers import gone
from tokentop.commands.run import EXIT_FAILED, EXIT_NOT_FOUND, EXIT_STOPPED, Linker
from tokentop.history.store import Store
from tokentop.model import LedgerSnapshot, SessionKey, SessionSnapshot, TokenCounts
from tokentop.processes.control import read_action_log
from tokentop.processes.registry import SessionRecord, read

AGENT = Path(__file__).parent / "claude_lines.py"
TIMEOUT = 30.0
wait_until = partial(proc_helpers.wait_until, timeout=TIMEOUT)


class Sandbox:
    """A Claude root, a data dir (registry, action log) and a working dir for one run."""

    def __init__(self, tmp_path: Path) -> None:
        self.claude = tmp_path / "claude"
        self.claude.mkdir()
        self.data = tmp_path / "data"
        self.work = tmp_path / "work"
        self.work.mkdir()
        self.env = {
            **os.environ,
            "CLAUDE_CONFIG_DIR": str(self.claude),
            "CODEX_HOME": str(tmp_path / "codex"),
            "XDG_DATA_HOME": str(self.data),
            "XDG_CONFIG_HOME": str(tmp_path / "config"),
            "XDG_CACHE_HOME": str(tmp_path / "cache"),
        }
        self.popens: list[subprocess.Popen[str]] = []

    def start(self, *options: str, agent: list[str] | None = None) -> subprocess.Popen[str]:
        command = agent or [sys.executable, str(AGENT), "0.3", "1500"]
        argv = [sys.executable, "-m", "tokentop.cli", "run", *options, "--", *command]
        popen = subprocess.Popen(
            argv, cwd=self.work, env=self.env, text=True, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=proc_helpers.default_sigint,
        )  # fmt: skip
        self.popens.append(popen)
        return popen

    def launched(self) -> list[SessionRecord]:
        records, _ = read(self.data / "tokentop" / "sessions.jsonl")
        return [r for r in records if isinstance(r, SessionRecord)]

    def transcripts(self) -> list[Path]:
        return sorted(self.claude.rglob("*.jsonl"))

    def kill_all(self) -> None:
        pids = [r.pid for r in self.launched()] + [p.pid for p in self.popens]
        for pid in pids:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, sig)
        for popen in self.popens:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.communicate(timeout=5)


@pytest.fixture
def box(tmp_path: Path) -> Iterator[Sandbox]:
    sandbox = Sandbox(tmp_path)
    yield sandbox
    sandbox.kill_all()


def transcript_tokens(path: Path) -> int:
    total = 0
    for line in path.read_text().splitlines():
        usage = json.loads(line).get("message", {}).get("usage")
        if isinstance(usage, dict):
            total += sum(v for v in usage.values() if isinstance(v, int))
    return total


def test_a_token_budget_kills_the_agent_once_passed(box: Sandbox) -> None:
    run = box.start("--budget-tokens", "5000", "--on-budget", "kill")
    _, err = run.communicate(timeout=TIMEOUT)
    assert run.returncode == EXIT_STOPPED, err
    [record] = box.launched()
    assert record.how == "launched" and record.cwd == str(box.work)
    assert gone(record.pid)
    [transcript] = box.transcripts()
    assert record.transcript_path == str(transcript)
    spent = transcript_tokens(transcript)
    assert 5_000 < spent <= 5_000 + 3 * 1_500  # stopped within a few responses of the line
    log, _ = read_action_log(box.data / "tokentop" / "actions.jsonl")
    assert [(a.action, a.ok, a.origin, a.pid) for a in log] == [
        ("kill", True, "policy:budget", record.pid)
    ]
    assert "over budget" in err and "stopped by tokentop" in err.splitlines()[-1]
    with Store(box.data / "tokentop" / "tokentop.db") as store:  # the default store
        summary = store.summary(f"claude:{record.session_id}")
    assert summary is not None and summary.end_reason == "killed"
    assert summary.tokens.total == spent
    assert [(e.detector, e.action) for e in summary.events] == [
        ("budget", "warn"),
        ("budget", "kill"),
    ]
    assert [(a.action, a.origin) for a in summary.actions] == [("kill", "policy:budget")]


def test_a_dollar_budget_that_is_not_reached_lets_the_agent_exit_with_its_own_status(
    box: Sandbox,
) -> None:
    script = "import sys, time; time.sleep(0.2); sys.exit(3)"
    run = box.start("--budget", "2.50", "--quiet", agent=[sys.executable, "-c", script])
    out, err = run.communicate(timeout=TIMEOUT)
    assert (run.returncode, out, err) == (3, "", "")


def test_pause_on_budget_then_sigterm_reaches_the_paused_agent(box: Sandbox) -> None:
    run = box.start("--budget-tokens", "5000", "--on-budget", "pause", "--quiet")
    assert wait_until(lambda: bool(box.launched()))
    pid = box.launched()[0].pid
    assert wait_until(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED)
    assert run.poll() is None  # the runner waits for a paused agent
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=TIMEOUT)
    assert run.returncode == 128 + signal.SIGTERM and err == ""
    assert gone(pid)
    session = box.launched()[0].session_id
    with Store(box.data / "tokentop" / "tokentop.db") as store:  # how it ended, as it ended
        summary = store.summary(f"claude:{session}")
    assert summary is not None and summary.end_reason == "paused-then-exited"


def test_ctrl_c_is_forwarded_to_the_agent(box: Sandbox) -> None:
    run = box.start("--quiet")
    assert wait_until(lambda: bool(box.transcripts()) and bool(box.launched()))
    pid = box.launched()[0].pid
    run.send_signal(signal.SIGINT)
    run.communicate(timeout=TIMEOUT)
    assert run.returncode == 128 + signal.SIGINT  # the agent's own death by SIGINT
    assert gone(pid)


def test_the_status_of_a_paused_agent_says_paused_and_burns_nothing(box: Sandbox) -> None:
    """The Watchdog says how the session stands and what it burns: once `run` has paused
    the agent, its status lines read `paused` and `0 tok/min` (its last minute's pace is
    not a burn), and the line after them says how it ended."""
    run = box.start("--budget-tokens", "5000", "--on-budget", "pause")
    assert wait_until(lambda: bool(box.launched()))
    pid = box.launched()[0].pid
    assert wait_until(lambda: psutil.Process(pid).status() == psutil.STATUS_STOPPED)
    time.sleep(2.5)  # a status line is due at most every 2 s
    run.send_signal(signal.SIGTERM)
    _, err = run.communicate(timeout=TIMEOUT)
    lines = err.splitlines()
    [note] = [i for i, line in enumerate(lines) if ": paused pid" in line.lower()]
    paused, last = lines[note + 1 : -1], lines[-1]
    assert paused and all(" paused · " in line for line in paused), lines
    assert all(line.endswith(" · 0 tok/min") for line in [*paused, last]), lines
    assert " exited with 143 · " in last


def test_no_status_line_follows_the_kill(box: Sandbox) -> None:
    """The agent's first response is over its budget, and comes when a status line is due:
    the kill's note is followed by the last line only, not by a status from before the
    kill."""
    agent = ["sh", "-c", f'sleep 2.5; exec "{sys.executable}" "{AGENT}" 0.3 1500']
    run = box.start("--budget-tokens", "1000", "--on-budget", "kill", agent=agent)
    _, err = run.communicate(timeout=TIMEOUT)
    assert run.returncode == EXIT_STOPPED, err
    lines = err.splitlines()
    assert lines[0] == "tokentop: agent running, no transcript linked yet", lines
    assert ": killed pid" in lines[-2].lower(), lines
    assert " stopped by tokentop · " in lines[-1], lines


def test_an_agent_that_ends_before_a_transcript_is_said_to_end_once(box: Sandbox) -> None:
    """It ends before `run`'s first look (every 0.25 s): the last line says how, and no line
    before it says `gone` (a line says `running` only if a look found it running)."""
    run = box.start(agent=["sh", "-c", "sleep 0.1; exit 1"])
    _, err = run.communicate(timeout=TIMEOUT)
    assert run.returncode == 1
    *before, last = err.splitlines()
    assert last == "tokentop: agent exited with 1, no transcript linked yet"
    assert set(before) <= {"tokentop: agent running, no transcript linked yet"}, before


@pytest.mark.parametrize(
    ("agent", "code", "message"),
    [
        (["/nonexistent/agent-binary"], EXIT_NOT_FOUND, "cannot run /nonexistent/agent-binary"),
        ([], EXIT_FAILED, "no agent command given"),
    ],
)
def test_tokentop_failures_have_their_own_exit_codes(
    box: Sandbox, agent: list[str], code: int, message: str
) -> None:
    argv = [sys.executable, "-m", "tokentop.cli", "run", "--", *agent]
    done = subprocess.run(argv, env=box.env, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == code and message in done.stderr


def test_help_documents_the_exit_codes() -> None:
    argv = [sys.executable, "-m", "tokentop.cli", "run", "--help"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT)
    for code in ("124", "125", "126", "127"):
        assert f"\n  {code} " in done.stdout


def snapshot_of(*sessions: tuple[str, str, str]) -> LedgerSnapshot:
    """Sessions (id, cwd, file) with nothing else of interest."""
    fields = dict(
        branch="", first_ts=0.0, last_ts=1.0, tokens=TokenCounts(), cost_usd=0.0,
        unpriced_models=(), models=(), model_timeline=(), responses=0, tokens_per_min=0.0,
        usd_per_hour=0.0, burn_series=(), tool_calls=0, tool_errors=0, tools=(),
        recent_tools=(), bad_lines=0,
    )  # fmt: skip
    made = tuple(
        SessionSnapshot(key=SessionKey("claude", sid), cwd=cwd, files=(path,), **fields)
        for sid, cwd, path in sessions
    )
    return LedgerSnapshot(1.0, made, (), 0, 1)


def test_a_resumed_session_named_on_the_command_line_is_linked_and_budgeted(
    box: Sandbox,
) -> None:
    """An agent that appends to an existing session (as `codex resume <id>` does) is linked
    through the id on its command line, even from another cwd, and its budget counts the
    whole session: 4000 tokens before the launch, so it is stopped after one response."""
    import claude_lines

    sid = "3f0c9a1e-5b7d-4c2a-9e8f-1a2b3c4d5e6f"
    path = box.claude / "projects" / "-elsewhere" / f"{sid}.jsonl"
    before = [claude_lines.response(sid, "/elsewhere", 2000) for _ in range(2)]
    claude_lines.write_transcript(path, sid, "/elsewhere", before)
    agent = [sys.executable, str(AGENT), "0.3", "1500", sid]
    run = box.start("--budget-tokens", "5000", "--on-budget", "kill", agent=agent)
    _, err = run.communicate(timeout=TIMEOUT)
    assert run.returncode == EXIT_STOPPED, err
    [record] = box.launched()
    assert (record.session_id, record.transcript_path) == (sid, str(path))
    assert box.transcripts() == [path]
    assert 5_000 < transcript_tokens(path) <= 4_000 + 3 * 1_500


def test_resume_without_an_id_links_the_growing_session_of_its_cwd(box: Sandbox) -> None:
    """`codex resume --last` names no session: an existing file that records the agent's cwd
    and grows after the launch is linked; a session of another cwd that grows is not."""
    import claude_lines

    mine, other = "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d", "7b8c9d0e-1f2a-4b3c-9d4e-5f6a7b8c9d0e"
    cwd = str(box.work)
    path = box.claude / "projects" / claude_lines.escape_cwd(cwd) / f"{mine}.jsonl"
    claude_lines.write_transcript(path, mine, cwd, [claude_lines.response(mine, cwd, 3000)])
    elsewhere = box.claude / "projects" / "-elsewhere" / f"{other}.jsonl"
    claude_lines.write_transcript(elsewhere, other, "/elsewhere", [])
    agent = [sys.executable, str(AGENT), "0.3", "1500", "resume"]
    run = box.start("--budget-tokens", "5000", "--on-budget", "kill", agent=agent)
    time.sleep(0.5)
    with elsewhere.open("a") as fh:  # another agent's session grows meanwhile
        fh.write("\n".join(claude_lines.response(other, "/elsewhere", 9000)) + "\n")
    _, err = run.communicate(timeout=TIMEOUT)
    assert run.returncode == EXIT_STOPPED, err
    [record] = box.launched()
    assert (record.session_id, record.transcript_path) == (mine, str(path))


def test_linker_takes_only_new_files_recording_the_agent_cwd(tmp_path: Path) -> None:
    old, mine, other, blank = (tmp_path / f"{n}.jsonl" for n in ("old", "mine", "other", "blank"))
    linker = Linker(str(tmp_path), existing={old})
    assert linker.worth_reading({old, mine, other, blank}) == {mine, other, blank}
    snap = snapshot_of(
        ("a", str(tmp_path), str(mine)), ("b", "/elsewhere", str(other)), ("c", "", str(blank))
    )
    assert [s.key.session_id for s in linker.judge(snap)] == ["a"]
    assert linker.linked == {mine} and linker.rejected == {other} and linker.pending == {blank}
    assert linker.worth_reading({other}) == {blank}  # rejected files are never read again
    assert [s.key.session_id for s in linker.sessions(snap)] == ["a"]
