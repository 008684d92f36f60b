"""Command-line edges a new user met: Ctrl+C, a hook run by hand, run's status lines, a
`--*-dir` that holds nothing, `--help` texts, the budget dialog's hints and a demo root left
by a killed demo. Each as a user meets it: real processes, real terminals where it matters."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from proc_helpers import default_sigint, gone, wait_until
from test_cli import env_for
from tokentop.quantities import QuantityError, parse_tokens, parse_usd

CLI = [sys.executable, "-m", "tokentop.cli"]


def interrupted(
    argv: list[str], env: dict[str, str], ready: Any, **kw: Any
) -> tuple[int, str, list[int]]:
    """Start `argv`; once `ready(process)` holds, SIGINT it (as Ctrl+C does): its exit
    status, its stderr, and the pids of the children it had then."""
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, preexec_fn=default_sigint, **kw)  # fmt: skip
    me = psutil.Process(proc.pid)
    assert wait_until(lambda: proc.poll() is None and ready(me), 30, 0.005), "never ready"
    children = [c.pid for c in me.children(recursive=True)]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    return proc.returncode, err, children


def scanning(proc: psutil.Process) -> bool:
    """Its cold-scan workers are at work."""
    return any(c.name() == "tokentop-scan" for c in proc.children())


def after(seconds: float) -> Any:
    started = time.monotonic()
    return lambda proc: time.monotonic() - started >= seconds


def test_ctrl_c_in_a_cold_scan_exits_130_and_leaves_no_worker(
    tmp_path: Path, big_history: tuple[Path, Any]
) -> None:
    root, _ = big_history
    argv = [*CLI, "sessions", "--json", "--no-cache", "--claude-dir", str(root)]
    code, err, children = interrupted(argv, env_for(tmp_path), scanning)
    assert code == 130 and "Traceback" not in err, err
    assert children
    assert wait_until(lambda: all(gone(pid) for pid in children), 5)


def test_ctrl_c_in_a_first_report_exits_130(tmp_path: Path, big_history: tuple[Path, Any]) -> None:
    root, _ = big_history
    argv = [*CLI, "report", "--no-git", "--claude-dir", str(root)]
    code, err, _ = interrupted(argv, env_for(tmp_path), scanning)
    assert code == 130 and "Traceback" not in err, err


@pytest.mark.parametrize(
    ("command", "wait"),
    [(["watch", "--ndjson"], 1.5), (["guard", "--dry-run"], 1.5), (["hook"], 0.6)],
)
def test_ctrl_c_exits_130_with_no_traceback(
    tmp_path: Path, command: list[str], wait: float
) -> None:
    """The hook waits on its stdin (a pipe held open; it gives up after 1 s); the others on
    their work."""
    env = env_for(tmp_path)
    env["CLAUDE_CONFIG_DIR"] = str(tmp_path / "claude")
    code, err, _ = interrupted([*CLI, *command], env, after(wait), stdin=subprocess.PIPE)
    assert code == 130 and "Traceback" not in err, err


def test_the_hook_run_from_a_terminal_says_what_it_is_for(tmp_path: Path) -> None:
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "hook"], stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env=env_for(tmp_path), text=True,
    )  # fmt: skip
    os.close(slave)
    try:
        _, err = proc.communicate(timeout=10)  # it must not wait for JSON from a person
    finally:
        os.close(master)
    assert proc.returncode == 0
    assert "Claude Code runs this" in err and "tokentop hook install" in err


def test_runs_status_on_a_terminal_is_whole_lines(tmp_path: Path) -> None:
    """The agent writes to the same terminal: every status write ends its line first."""
    env = env_for(tmp_path)
    env["CLAUDE_CONFIG_DIR"] = str(tmp_path / "claude")
    agent = Path(__file__).parent / "claude_lines.py"
    script = (
        "import subprocess, sys, time\n"
        f"p = subprocess.Popen([sys.executable, {str(agent)!r}, '0.2', '1500'])\n"
        "for i in range(12):\n"
        "    print(f'fake agent: response {i}', flush=True); time.sleep(0.25)\n"
        "p.kill()\n"
    )
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*CLI, "run", "--", sys.executable, "-c", script], cwd=tmp_path, env=env,
        stdin=slave, stdout=slave, stderr=slave,
    )  # fmt: skip
    os.close(slave)
    screen = b""
    while proc.poll() is None or select.select([master], [], [], 0.1)[0]:
        if select.select([master], [], [], 0.1)[0]:
            try:
                screen += os.read(master, 4096)
            except OSError:
                break
    os.close(master)
    text = screen.decode(errors="replace")
    assert "tokentop:" in text and "fake agent: response 11" in text
    for line in text.replace("\r\n", "\n").split("\n"):
        assert "\r" not in line and "\x1b[K" not in line, repr(line)  # never rewritten in place
        assert not ("tok/min" in line and "fake agent" in line), repr(line)


def test_a_dir_that_holds_no_transcript_is_said_with_the_layout_expected(tmp_path: Path) -> None:
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    proc = subprocess.run(
        [*CLI, "sessions", "--claude-dir", str(empty), "--codex-dir", str(empty)],
        env=env_for(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0
    assert f"--claude-dir {empty}: no transcripts found" in proc.stderr
    assert "DIR/projects/<project>/<session>.jsonl" in proc.stderr
    assert "--codex-dir" in proc.stderr and "rollout-*.jsonl" in proc.stderr


@pytest.mark.parametrize("by", ["session", "block"])
def test_a_report_says_a_dir_that_holds_no_transcript(tmp_path: Path, by: str) -> None:
    """Every way `report` reads transcripts says so (the blocks too, which record nothing)."""
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    argv = ["report", "--by", by, "--claude-dir", str(empty), "--db", str(tmp_path / "t.db")]
    proc = subprocess.run(
        [*CLI, *argv], env=env_for(tmp_path), capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count(f"--claude-dir {empty}: no transcripts found") == 1


def test_claude_dir_takes_a_folder_of_project_folders_whatever_its_name(tmp_path: Path) -> None:
    import shutil

    copied = tmp_path / "backup-of-my-claude-history"
    fixture = Path(__file__).parent / "fixtures" / "claude" / "projects"
    shutil.copytree(fixture, copied)
    proc = subprocess.run(
        [*CLI, "sessions", "--json", "--claude-dir", str(copied)],
        env=env_for(tmp_path), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0 and "no transcripts found" not in proc.stderr
    assert '"total": 116963' in proc.stdout


@pytest.mark.parametrize("command", ["guard", "hook", "watch"])
def test_help_says_what_each_command_is_for(command: str) -> None:
    out = subprocess.run([*CLI, command, "--help"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    description = out.stdout.split("\n\n")[1]
    assert len(description.split()) >= 10, out.stdout  # a sentence, not just the usage


def test_hook_help_lists_only_the_options_it_uses() -> None:
    out = subprocess.run([*CLI, "hook", "--help"], capture_output=True, text=True, timeout=30)
    assert "--registry" in out.stdout and "--config" in out.stdout
    for unused in ("--claude-dir", "--codex-dir", "--no-cache", "--proxy-log", "--jsonl"):
        assert unused not in out.stdout


@pytest.mark.parametrize(
    ("typed", "hint"),
    [("1,50", "write 1.50 or 150"), ("3,50", "write 3.50 or 350"), ("12,5k", "write 12.5 or 125")],
)
def test_an_ambiguous_comma_is_explained_with_the_users_own_digits(typed: str, hint: str) -> None:
    with pytest.raises(QuantityError, match=hint):
        parse_usd(typed) if not typed.endswith("k") else parse_tokens(typed)


def test_a_new_demo_removes_the_root_a_killed_demo_left_and_nobody_elses(tmp_path: Path) -> None:
    from tokentop.demo.fleet import MARKER, PREFIX, mark_owner, remove_stale_roots

    killed = tmp_path / f"{PREFIX}killed"
    killed.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (killed / MARKER).write_text(f"{dead.pid} {psutil.Process().create_time()!r}\n")
    running = tmp_path / f"{PREFIX}running"
    running.mkdir()
    mark_owner(running)  # this process: alive
    unmarked = tmp_path / f"{PREFIX}not-a-demo-root"
    unmarked.mkdir()
    assert remove_stale_roots(tmp_path) == [killed]
    assert not killed.exists() and running.exists() and unmarked.exists()
