"""Folders tokentop can't make, and a umask of 000: every command says so in one line and
goes on, the enforcing ones (guard, run, the hook) still enforce without their history, and
every folder tokentop creates is 0700. Real subprocesses, as a user runs them."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from claude_lines import response, write_transcript
from proc_helpers import wait_until
from test_guard import Lines

SESSION = "5e0c2f1a-3b4d-4c5e-8f60-718293a4b5c6"
CWD = "/home/dev/shop"
OVER_BUDGET = "[budgets]\ntokens = 1000\n"


def _home(tmp: Path) -> tuple[Path, Path]:
    """A private HOME with a Claude transcript of 9k tokens; (home, transcript)."""
    home = tmp / "home"
    transcript = home / ".claude" / "projects" / "-home-dev-shop" / f"{SESSION}.jsonl"
    write_transcript(
        transcript, SESSION, CWD, [response(SESSION, CWD, 3_000, f"t{i}") for i in range(3)]
    )
    (tmp / "config.toml").write_text(OVER_BUDGET)
    return home, transcript


def _env(home: Path, blocked: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XDG_", "CLAUDE_"))}
    env["HOME"] = str(home)
    if blocked is not None:  # every data, cache and state folder would be under a file
        for var in ("XDG_DATA_HOME", "XDG_CACHE_HOME", "XDG_STATE_HOME"):
            env[var] = str(blocked)
    return env


def _run(
    argv: list[str], env: dict[str, str], stdin: str = "", umask: int | None = None
) -> subprocess.CompletedProcess[str]:
    masked = None if umask is None else lambda: os.umask(umask)
    return subprocess.run(
        [sys.executable, "-m", "tokentop.cli", *argv], input=stdin, capture_output=True,
        text=True, env=env, timeout=60, preexec_fn=masked,
    )  # fmt: skip


def _hook_input(transcript: Path) -> str:
    return json.dumps({
        "session_id": SESSION, "transcript_path": str(transcript), "cwd": CWD,
        "hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "ls"},
    })  # fmt: skip


def _one_clear_line(err: str) -> None:
    assert "Traceback" not in err, err
    assert len([line for line in err.splitlines() if line.strip()]) <= 1, err


def test_folders_that_cant_be_made_give_one_line_and_enforcing_goes_on(tmp_path: Path) -> None:
    home, transcript = _home(tmp_path)
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")
    env = _env(home, blocked)
    cfg = ["--config", str(tmp_path / "config.toml")]
    hook = _run(
        ["hook", *cfg, "--registry", str(tmp_path / "reg.jsonl")], env, _hook_input(transcript)
    )
    assert hook.returncode == 2 and "budget" in hook.stderr  # still blocks the tool call
    sessions = _run(["sessions", "--json"], env)
    assert sessions.returncode == 0 and json.loads(sessions.stdout)[0]["tokens"]["total"] > 0
    _one_clear_line(sessions.stderr)
    assert "cache" in sessions.stderr
    report = _run(["report", *cfg], env)
    assert report.returncode == 2
    _one_clear_line(report.stderr)
    assert str(blocked) in report.stderr
    argv = [sys.executable, "-m", "tokentop.cli", "guard", "--dry-run", *cfg]
    guard = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    lines = Lines(guard)
    try:  # still enforcing: it decides (a dry run says what it would do)
        budget = lambda: [d for d in lines.of("decision") if d["detector"] == "budget"]  # noqa: E731
        assert wait_until(lambda: bool(budget()), timeout=30), lines.items
    finally:
        guard.terminate()
        _, err = guard.communicate(timeout=10)
    _one_clear_line(err)
    assert "history" in err or "findings" in err


def test_folders_tokentop_creates_are_0700_whatever_the_umask(tmp_path: Path) -> None:
    home, transcript = _home(tmp_path)
    env = _env(home, None)
    cfg = ["--config", str(tmp_path / "config.toml")]
    hook = _run(
        ["hook", *cfg, "--registry", str(tmp_path / "reg.jsonl")],
        env,
        _hook_input(transcript),
        umask=0,
    )
    assert hook.returncode == 2
    assert _run(["sessions", "--json"], env, umask=0).returncode == 0
    assert _run(["report", *cfg], env, umask=0).returncode == 0
    made = [
        home / ".cache", home / ".cache" / "tokentop", home / ".cache" / "tokentop" / "hook",
        home / ".local", home / ".local" / "share", home / ".local" / "share" / "tokentop",
    ]  # fmt: skip
    modes = {str(p.relative_to(home)): oct(stat.S_IMODE(p.stat().st_mode)) for p in made}
    assert set(modes.values()) == {"0o700"}, modes
