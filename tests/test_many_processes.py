"""Several tokentop processes on one store, as users run them: the app open beside cron
`run`s, a `guard`, a `watch` and the hook. What one does, the others show.

Everything is real: `tokentop run` and `guard` and `watch` are subprocesses, the agents are
the tiny Claude agent of claude_lines.py, the app runs under Pilot over the real engine with
the same store, registry and action log (a fresh HOME for all of them).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from proc_helpers import default_sigint, wait_until
from test_cli import Watch, env_for
from tokentop.config import Config
from tokentop.engine.engine import Engine
from tokentop.history.store import Store
from tokentop.model import SessionKey
from tokentop.pricing import PriceTable
from tokentop.processes.control import ActionResult, ProcessController, read_action_log
from tokentop.processes.mapper import RecordedMapper, SessionMapper
from tokentop.processes.registry import Registry
from tokentop.sources.claude_code import ClaudeCodeSource
from tokentop.ui.widgets.session_table import cell_text

AGENT = Path(__file__).parent / "claude_lines.py"
BUDGET = 0.01
"""A response of the tiny agent costs ~$0.0032 (sonnet-4-5): killed at its 4th."""
SHOWN_WITHIN_S = 2.0


class Home:
    """One user's tokentop world: data, config and cache dirs, a Claude root, work dirs."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.env = env_for(tmp)
        self.claude = tmp / "claude"
        (self.claude / "projects").mkdir(parents=True)
        self.env["CLAUDE_CONFIG_DIR"] = str(self.claude)
        self.data = Path(self.env["XDG_DATA_HOME"]) / "tokentop"
        self.popens: list[subprocess.Popen[str]] = []

    def workdir(self, name: str) -> Path:
        path = self.tmp / "work" / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def run(
        self, cwd: Path, *options: str, tick: str = "0.2", resume: str = ""
    ) -> subprocess.Popen[str]:
        """A quiet `tokentop run` of the tiny agent (resuming session `resume` if given)."""
        argv = [
            sys.executable, "-m", "tokentop.cli", "run", "--quiet", *options, "--",
            sys.executable, str(AGENT), tick, "1500", *([resume] if resume else []),
        ]  # fmt: skip
        return self.start(argv, cwd)

    def start(self, argv: list[str], cwd: Path | None = None) -> subprocess.Popen[str]:
        popen = subprocess.Popen(
            argv, cwd=cwd or self.tmp, env=self.env, text=True, start_new_session=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=default_sigint,
        )  # fmt: skip
        self.popens.append(popen)
        return popen

    def actions(self) -> list[ActionResult]:
        return read_action_log(self.data / "actions.jsonl")[0]

    def stop_all(self) -> None:
        for popen in self.popens:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(popen.pid, sig)
        from tokentop.processes.registry import SessionRecord, read

        for record in read(self.data / "sessions.jsonl")[0]:
            if isinstance(record, SessionRecord) and record.pid > 0:
                for sig in (signal.SIGCONT, signal.SIGKILL):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(record.pid, sig)
        for popen in self.popens:
            with contextlib.suppress(subprocess.TimeoutExpired):
                popen.communicate(timeout=5)


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Home]:
    made = Home(tmp_path)
    for var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_CACHE_HOME", "HOME"):
        monkeypatch.setenv(var, made.env[var])
    yield made
    made.stop_all()


def app_for(home: Home) -> Any:
    """The app as `tokentop` builds it (commands/app.py), over this home."""
    from tokentop.commands.app import build_app
    from tokentop.processes.registry import default_path

    engine = Engine([ClaudeCodeSource([home.claude])], PriceTable.default().cost)
    mapper = RecordedMapper(Registry(default_path()), ProcessController(), SessionMapper())
    app = build_app(argparse.Namespace(read_only=False), engine, Config(), mapper)
    app.min_redraw_s = 0.0
    return app


def row_of(app: Any, key: str) -> tuple[str, str, float | None, str] | None:
    """(status cell, budget cell, budget in USD, where it comes from) of a session's row."""
    row = app.main_table.shown.get(key)
    judgement = app.judgement
    judged = judgement.of(SessionKey(*key.split(":", 1))) if judgement is not None else None
    if row is None or judged is None:
        return None
    use = judged.use
    return cell_text(row, "status").strip(), row.budget, use.budget.usd, use.origin


async def test_the_app_shows_each_run_kill_and_its_budget_and_every_summary_says_killed(
    home: Home,
) -> None:
    """20 cron-style `run --budget … --on-budget kill`s, five at a time, beside the app: each
    row reads `killed` with the run's budget within 2 s of the kill, and the store records
    every one as killed, whichever process writes last."""
    app = app_for(home)
    killed: dict[str, ActionResult] = {}
    want = ("killed", BUDGET, "run")
    async with app.run_test(size=(160, 40)) as pilot:
        for batch in range(4):
            runs = [
                home.run(home.workdir(f"job-{batch}-{i}"), "--budget", str(BUDGET), "--on-budget",
                         "kill")
                for i in range(5)
            ]  # fmt: skip
            shown_at: dict[str, float] = {}  # watched while the runs go: when each row was right
            deadline = time.time() + 60
            while len(shown_at) < 5 or any(popen.poll() is None for popen in runs):
                assert time.time() < deadline, (shown_at, [p.poll() for p in runs])
                for kill in [a for a in home.actions() if a.actor == "run"]:
                    shown = row_of(app, kill.session)
                    if kill.session in killed or kill.session in shown_at or shown is None:
                        continue
                    if (shown[0], *shown[2:]) == want and shown[1].endswith("%"):
                        shown_at[kill.session] = time.time()
                await pilot.pause(0.05)
            for popen in runs:
                _, err = popen.communicate(timeout=60)
                assert popen.returncode == 124, err
            kills = [a for a in home.actions() if a.actor == "run" and a.session not in killed]
            assert len(kills) == 5 and all(a.action == "kill" and a.ok for a in kills)
            for kill in kills:
                killed[kill.session] = kill
                lag = shown_at[kill.session] - kill.timestamp
                assert lag < SHOWN_WITHIN_S, (kill.session, lag)
    assert len(killed) == 20
    with Store(home.data / "tokentop.db") as store:
        summaries = {str(s.key): s for s in store.summaries()[0]}
    assert {key: summaries[key].end_reason for key in killed} == dict.fromkeys(killed, "killed")
    one = next(iter(killed)).split(":", 1)[1]
    proc = subprocess.run(
        [sys.executable, "-m", "tokentop.cli", "summary", one, "--no-scan"],
        env=home.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and "killed" in proc.stdout, proc.stderr


def test_a_run_paused_at_its_budget_then_interrupted_ends_paused_then_exited(home: Home) -> None:
    run = home.run(home.workdir("paused"), "--budget", str(BUDGET), "--on-budget", "pause")
    assert wait_until(lambda: any(a.action == "pause" and a.ok for a in home.actions()), 30)
    run.send_signal(signal.SIGINT)
    run.communicate(timeout=30)
    [pause] = [a for a in home.actions() if a.action == "pause"]
    with Store(home.data / "tokentop.db") as store:
        summary = store.summary(pause.session)
    assert summary is not None and summary.end_reason == "paused-then-exited"


def test_watch_started_after_a_guard_kill_decides_nothing_about_that_session(
    home: Home,
) -> None:
    config = home.tmp / "guard.toml"
    config.write_text(f'[budgets]\nusd = {BUDGET}\n[policy.budget]\naction = "kill"\n')
    guard = home.start(
        [sys.executable, "-m", "tokentop.cli", "guard", "--config", str(config), "--no-cache"]
    )
    run = home.run(home.workdir("guarded"))  # maps the agent exactly ("launched")
    assert wait_until(lambda: launched(home), 30)
    os.killpg(run.pid, signal.SIGKILL)  # its run is gone: the guard enforces the budget
    run.communicate(timeout=30)
    assert wait_until(lambda: any(a.actor == "guard" and a.ok for a in home.actions()), 40)
    [kill] = [a for a in home.actions() if a.actor == "guard"]
    guard.send_signal(signal.SIGTERM)
    guard.communicate(timeout=30)
    watch = Watch(home.tmp, "--config", str(config), "--claude-dir", str(home.claude))
    try:
        line = watch.wait_for(lambda o: o["type"] == "session")
        assert f"{line['agent']}:{line['session_id']}" == kill.session
        assert line["state"] == "killed"
        time.sleep(3)  # several judgements
        later = []
        while not watch.lines.empty():
            later.append(watch.lines.get())
        assert [o for o in later if o["type"] == "decision"] == []
    finally:
        watch.close()


async def test_eight_runs_the_app_a_guard_and_the_hook_on_one_store(home: Home) -> None:
    """Eight runs killed at their budget, the app open, a guard running and the hook asked
    before tool calls, all at once: every kill and every ending is recorded once, and no
    process reports a locked database."""
    config = home.tmp / "guard.toml"  # the guard would kill at the budget too: it must not
    config.write_text('[policy.budget]\naction = "kill"\n')  # race the runs that launched them
    guard = home.start(
        [sys.executable, "-m", "tokentop.cli", "guard", "--no-cache", "--config", str(config)]
    )
    app = app_for(home)
    async with app.run_test(size=(160, 40)) as pilot:
        runs = [
            home.run(home.workdir(f"eight-{i}"), "--budget", str(BUDGET), "--on-budget", "kill")
            for i in range(8)
        ]
        hooks = 0
        while any(r.poll() is None for r in runs):
            for transcript in home.claude.rglob("*.jsonl"):
                hooks += hook_call(home, transcript)
            await pilot.pause(0.1)
        errors = [r.communicate(timeout=30)[1] for r in runs]
        assert [r.returncode for r in runs] == [124] * 8, errors
        kills = [a for a in home.actions() if a.action == "kill"]
        assert len(kills) == 8 and len({a.session for a in kills}) == 8
        assert all(a.actor == "run" and a.ok for a in kills)
        for kill in kills:
            wait = lambda k=kill: (row_of(app, k.session) or ("",))[0] == "killed"  # noqa: E731
            while not wait():
                assert time.time() < kill.timestamp + SHOWN_WITHIN_S
                await pilot.pause(0.05)
        problems = [n.message for n in app._notifications if "database is locked" in str(n.message)]
        assert problems == []
    guard.send_signal(signal.SIGTERM)
    out, err = guard.communicate(timeout=30)
    held = [json.loads(line) for line in out.splitlines() if '"action"' in line]
    assert all(not a["ok"] for a in held if a.get("type") == "action"), held
    assert hooks > 0
    assert "database is locked" not in err and "Traceback" not in err, err
    assert not any("database is locked" in e for e in errors)
    with Store(home.data / "tokentop.db") as store:
        store.import_action_log(home.data / "actions.jsonl")
        summaries = {str(s.key): s.end_reason for s in store.summaries()[0]}
        recorded = [a for k in kills for a in store.actions_for(k.session) if a.action == "kill"]
    assert {k.session: summaries.get(k.session) for k in kills} == {
        k.session: "killed" for k in kills
    }
    assert len(recorded) == 8  # each once, though the app, run and guard all import the log


def launched(home: Home) -> bool:
    from tokentop.processes.registry import SessionRecord, read

    records = read(home.data / "sessions.jsonl")[0]
    return any(isinstance(r, SessionRecord) and r.how == "launched" for r in records)


def hook_call(home: Home, transcript: Path) -> int:
    """One PreToolUse hook call for the session of `transcript`, as Claude Code makes it."""
    event = {
        "session_id": transcript.stem, "transcript_path": str(transcript),
        "cwd": str(home.tmp), "hook_event_name": "PreToolUse", "tool_name": "Bash",
    }  # fmt: skip
    proc = subprocess.run(
        [sys.executable, "-m", "tokentop.commands.hook"], input=json.dumps(event),
        env=home.env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode in (0, 2) and "Traceback" not in proc.stderr, proc.stderr
    assert "database is locked" not in proc.stderr
    return 1


async def test_an_agent_that_exits_under_run_reads_exited_in_the_app_within_2s(
    home: Home,
) -> None:
    """Ctrl+C on a `run` whose agent is writing fast: its row in the app beside it reads
    `exited`, with no burn and no ETA, within 2 s, as a kill does (it read `live` for ~25 s:
    a pace of 30 s to wind down, or a mapping the app had looked up before `run` wrote it)."""
    app = app_for(home)
    async with app.run_test(size=(160, 40)) as pilot:
        run = home.run(home.workdir("interrupted"), "--budget", "5", tick="0.5")
        while not (key := launched_key(home)) or (row_of(app, key) or ("",))[0] != "live":
            assert run.poll() is None, run.stderr
            await pilot.pause(0.05)
        interrupted = time.time()
        run.send_signal(signal.SIGINT)  # Ctrl+C: `run` passes it on, and its agent dies of it
        while (shown := exit_shown(app, key)) != ("exited", 0.0, None, "—"):
            assert time.time() < interrupted + SHOWN_WITHIN_S, shown
            await pilot.pause(0.05)
        run.communicate(timeout=30)
        assert run.returncode == 128 + signal.SIGINT


def test_a_resumed_session_watch_already_showed_reads_exited_within_2s_of_its_end(
    home: Home,
) -> None:
    """`watch` judges a session before a `run` resumes it (`claude -r <id>` in a cron job),
    so it first finds no process for it: it learns of the run's mapping, and then of the
    agent's exit, from the registry as they are written, not half a minute later."""
    from claude_lines import escape_cwd, response, write_transcript

    work = home.workdir("resumed")
    session = "0b9c3f4e-6a1d-4c2e-9f47-2d8e5b1a7c30"
    transcript = home.claude / "projects" / escape_cwd(str(work)) / f"{session}.jsonl"
    write_transcript(transcript, session, str(work), [response(session, str(work), 1500)])
    watch = Watch(home.tmp, "--claude-dir", str(home.claude))
    try:
        watch.wait_for(lambda o: o.get("session_id") == session and o["state"] == "live")
        run = home.run(work, tick="0.5", resume=session)  # linked: named on its command line
        assert wait_until(lambda: launched_key(home) == f"claude:{session}", 30)
        interrupted = time.time()
        os.killpg(run.pid, signal.SIGINT)
        line = watch.wait_for(lambda o: o.get("session_id") == session and o["state"] != "live")
        assert time.time() < interrupted + SHOWN_WITHIN_S, line
        assert (line["state"], line["burn"]["tokens_per_min"], line["eta_s"]) == ("exited", 0, None)
    finally:
        watch.close()


def launched_key(home: Home) -> str:
    """The session a `run` recorded as launched ("" until one has)."""
    from tokentop.processes.registry import SessionRecord, read

    records = read(home.data / "sessions.jsonl")[0]
    found = [r for r in records if isinstance(r, SessionRecord) and r.how == "launched"]
    return str(found[-1].key) if found else ""


def exit_shown(app: Any, key: str) -> tuple[str, float, float | None, str] | None:
    """(state, tokens/min, ETA, burn cell) of a session as the app shows it."""
    row = app.main_table.shown.get(key)
    judged = app.judgement.of(SessionKey(*key.split(":", 1))) if app.judgement else None
    if row is None or judged is None:
        return None
    return judged.state, judged.session.tokens_per_min, judged.use.eta_s, row.burn.strip()
