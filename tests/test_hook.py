"""`tokentop hook` fed real hook JSON (a real subprocess, as Claude Code runs it), the
session registry it keeps, soft-stop escalation, and `hook install` on settings.json."""

from __future__ import annotations

import contextlib
import io
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

import fake_agents
import proc_helpers
from claude_lines import response, write_transcript
from tokentop.cli import main
from tokentop.commands.hook_answer import HookFiles, handle
from tokentop.commands.hook_install import install, merged
from tokentop.processes.control import read_action_log
from tokentop.processes.registry import SessionRecord, SoftStopRecord, append, read

SESSION = "5b0e1d2c-3a4b-4c5d-8e6f-7a8b9c0d1e2f"
CWD = "/home/dev/shop"
TIMEOUT = 20.0
ESCALATION_S = 5.0
"""The helper acts once the hook has exited (well under a second), never PARENT_WAIT_S late."""
wait_until = partial(proc_helpers.wait_until, timeout=TIMEOUT)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A transcript of three ~3k-token responses, a config, and private data/cache dirs."""
    transcript = tmp_path / "claude" / "projects" / "-home-dev-shop" / f"{SESSION}.jsonl"
    write_transcript(
        transcript, SESSION, CWD, [response(SESSION, CWD, 3_000, f"t{i}") for i in range(3)]
    )
    return tmp_path


def hook_json(home: Path, event: str = "PreToolUse") -> str:
    transcript = home / "claude" / "projects" / "-home-dev-shop" / f"{SESSION}.jsonl"
    payload = {
        "session_id": SESSION,
        "transcript_path": str(transcript),
        "cwd": CWD,
        "permission_mode": "default",
        "hook_event_name": event,
        "tool_name": "Bash",
        "tool_input": {"command": "pytest -q", "description": "Run the tests"},
    }
    if event == "SessionStart":
        payload["source"] = "startup"
        del payload["tool_name"], payload["tool_input"]
    return json.dumps(payload)


def run_hook(home: Path, config: str, stdin: str) -> subprocess.CompletedProcess[str]:
    cfg = home / "config.toml"
    cfg.write_text(config)
    argv = [
        sys.executable, "-m", "tokentop.cli", "hook",
        "--config", str(cfg), "--registry", str(home / "registry.jsonl"),
    ]  # fmt: skip
    env = {**os.environ, "XDG_CACHE_HOME": str(home / "cache"), "XDG_DATA_HOME": str(home / "data")}
    return subprocess.run(argv, input=stdin, capture_output=True, text=True, env=env, timeout=60)


def test_an_over_budget_session_is_blocked_with_the_reason(home: Path) -> None:
    done = run_hook(home, "[budgets]\ntokens = 5000\n", hook_json(home))
    assert done.returncode == 2
    assert "over budget: 9,000 of 5,000 tokens" in done.stderr
    assert "end your turn" in done.stderr and done.stdout == ""
    records, bad = read(home / "registry.jsonl")
    assert bad == 0
    assert [type(r).__name__ for r in records] == ["SessionRecord", "SoftStopRecord"]
    assert records[1].state == "blocked"  # type: ignore[union-attr]


def test_a_session_within_budget_goes_on_and_nothing_is_printed(home: Path) -> None:
    done = run_hook(home, "[budgets]\ntokens = 1000000\nusd = 50\n", hook_json(home))
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def test_a_looping_session_is_blocked(home: Path) -> None:
    transcript = home / "claude" / "projects" / "-home-dev-shop" / f"{SESSION}.jsonl"
    same = [response(SESSION, CWD, 1_000, "pytest -q", error="1 failed") for _ in range(6)]
    write_transcript(transcript, SESSION, CWD, same)
    done = run_hook(home, "", hook_json(home))
    assert done.returncode == 2 and "looping: the same Bash" in done.stderr
    moved_on = [*same, response(SESSION, CWD, 1_000, "git log -1")]
    write_transcript(transcript, SESSION, CWD, moved_on)  # a different call: let it go
    assert run_hook(home, "", hook_json(home)).returncode == 0


def test_the_block_lifts_when_the_budget_is_raised(home: Path) -> None:
    assert run_hook(home, "[budgets]\ntokens = 5000\n", hook_json(home)).returncode == 2
    assert run_hook(home, "[budgets]\ntokens = 50000\n", hook_json(home)).returncode == 0
    states = [r.state for r in read(home / "registry.jsonl")[0] if isinstance(r, SoftStopRecord)]
    assert states == ["blocked", "cleared"]


def test_a_budget_set_with_b_in_the_app_is_honoured_by_the_hook(home: Path) -> None:
    """The app keeps `b` budgets in the store; the hook reads them on its next call."""
    from tokentop.config import Budget
    from tokentop.history.store import Store
    from tokentop.model import SessionKey

    assert run_hook(home, "", hook_json(home)).returncode == 0  # no budget configured
    with Store(home / "data" / "tokentop" / "tokentop.db") as store:
        store.set_budget(SessionKey("claude", SESSION), Budget(tokens=5000))
        done = run_hook(home, "", hook_json(home))
        assert done.returncode == 2 and "over budget: 9,000 of 5,000 tokens" in done.stderr
        store.set_budget(SessionKey("claude", SESSION), None)  # "Use config" in the dialog
    assert run_hook(home, "", hook_json(home)).returncode == 0


@pytest.mark.parametrize(
    ("stdin", "config", "message"),
    [
        ("not json", "", "unreadable hook input"),
        ('{"hook_event_name": "PreToolUse"}', "", "no session_id"),
        (None, "[budgets]\ntokens = 'x'\n", "budgets.tokens: expected an integer"),
    ],
)
def test_bad_input_or_config_is_a_one_line_error_that_never_blocks(
    home: Path, stdin: str | None, config: str, message: str
) -> None:
    done = run_hook(home, config, stdin if stdin is not None else hook_json(home))
    assert done.returncode == 0 and message in done.stderr and done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


@fake_agents.needs_node
def test_session_start_records_the_agent_above_the_hook_shell(home: Path) -> None:
    """A fake npm `claude` (node running cli.js) runs the hook through a shell, as Claude
    Code does; the hook records that known agent install, checked among its ancestors."""
    payload = home / "start.json"
    payload.write_text(hook_json(home, "SessionStart"))
    registry = home / "registry.jsonl"
    hook = f"{sys.executable} -m tokentop.commands.hook --registry {registry} < {payload}"
    exe = fake_agents.npm_claude(home / "npm", fake_agents.SHELL)
    popen = subprocess.Popen([*exe, hook], start_new_session=True)
    try:
        assert popen.wait(timeout=60) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
    records, _ = read(registry)
    assert len(records) == 1 and isinstance(records[0], SessionRecord)
    record = records[0]
    assert (record.pid, record.how, record.cwd) == (popen.pid, "hook", CWD)
    assert record.transcript_path.endswith(f"{SESSION}.jsonl")


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A native Claude Code install (escalation acts only on a known agent install)."""
    with fake_agents.running_native_claude(tmp_path / "install") as popen:
        yield popen


def test_an_ignored_soft_stop_escalates_to_kill(home: Path, agent: subprocess.Popen[bytes]) -> None:
    started = psutil.Process(agent.pid).create_time()
    registry = home / "registry.jsonl"
    append(registry, SessionRecord("claude", SESSION, agent.pid, started, "hook", time.time()))
    config = (
        "[budgets]\ntokens = 5000\n"
        "[policy.soft_stop]\nthen = 'kill'\nafter_responses = 1\nafter_s = 0\n"
    )
    assert run_hook(home, config, hook_json(home)).returncode == 2  # told to stop
    assert agent.poll() is None
    transcript = home / "claude" / "projects" / "-home-dev-shop" / f"{SESSION}.jsonl"
    with transcript.open("a") as fh:  # ...but it answered with another tool call
        fh.write("\n".join(response(SESSION, CWD, 3_000, "one more")) + "\n")
    assert run_hook(home, config, hook_json(home)).returncode == 2
    killed = proc_helpers.wait_until(lambda: agent.poll() is not None, timeout=ESCALATION_S)
    assert killed, "the agent was not killed at once"  # not after the helper's 10 s wait
    log_path = home / "data" / "tokentop" / "actions.jsonl"
    kills = lambda: [a for a in read_action_log(log_path)[0] if a.action == "kill"]  # noqa: E731
    assert wait_until(lambda: bool(kills()))  # logged after it is gone
    log, _ = read_action_log(log_path)
    assert [(a.action, a.ok, a.origin, a.pid, a.actor) for a in log] == [
        ("block", True, "policy:soft-stop", agent.pid, "hook"),  # the first block: once
        ("kill", True, "policy:soft-stop", agent.pid, "hook"),
    ]
    assert "ignored the soft stop (1 more responses" in log[1].reason
    states = [r.state for r in read(registry)[0] if isinstance(r, SoftStopRecord)]
    assert states == ["blocked", "escalated"]


def test_handle_in_process_reads_only_new_bytes_with_a_cache(home: Path) -> None:
    files = HookFiles(home / "registry.jsonl", home / "none.toml", home / "cache")
    (home / "none.toml").write_text("[budgets]\ntokens = 10000\n")
    err = io.StringIO()
    assert handle(hook_json(home).encode(), files, time.time(), err) == 0
    assert list((home / "cache").rglob("*.msgpack"))
    transcript = home / "claude" / "projects" / "-home-dev-shop" / f"{SESSION}.jsonl"
    with transcript.open("a") as fh:
        fh.write("\n".join(response(SESSION, CWD, 3_000, "more")) + "\n")
    assert handle(hook_json(home).encode(), files, time.time(), err) == 2
    assert "12,000 of 10,000 tokens" in err.getvalue()


# -- install ----------------------------------------------------------------------------------

COMMAND = "/opt/venv/bin/python -m tokentop.commands.hook"


def test_install_merges_shows_the_diff_keeps_a_backup_and_is_idempotent(tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    mine = {
        "model": "opus",
        "hooks": {
            "PreToolUse": [{"matcher": "Bash", "hooks": [{"type": "command", "command": "lint"}]}]
        },
    }
    settings.write_text(json.dumps(mine, indent=2) + "\n")
    out = io.StringIO()
    assert install(settings, command=COMMAND, ask=lambda _: "y", out=out) == 0
    shown = out.getvalue()
    assert f"--- {settings}\n+++ {settings} (with the hook)" in shown  # not "(new)": it exists
    fresh = io.StringIO()
    assert install(tmp_path / "none.json", command=COMMAND, ask=lambda _: "y", out=fresh) == 0
    assert f"--- /dev/null\n+++ {tmp_path / 'none.json'} (new)" in fresh.getvalue()
    added = [line for line in shown.splitlines() if line.startswith("+ ")]
    assert sum(f'"command": "{COMMAND}"' in line for line in added) == 2
    new = json.loads(settings.read_text())
    assert new["model"] == "opus"
    pre = new["hooks"]["PreToolUse"]
    assert pre[0] == mine["hooks"]["PreToolUse"][0]
    assert pre[1] == {
        "matcher": "*",
        "hooks": [{"type": "command", "command": COMMAND, "timeout": 30}],
    }
    assert new["hooks"]["SessionStart"] == [
        {"hooks": [{"type": "command", "command": COMMAND, "timeout": 30}]}
    ]
    backups = list(tmp_path.glob("settings.json.tokentop-backup-*"))
    assert len(backups) == 1 and json.loads(backups[0].read_text()) == mine
    before = settings.read_text()
    again = io.StringIO()
    assert install(settings, command=COMMAND, ask=lambda _: "y", out=again) == 0
    assert "already installed" in again.getvalue() and settings.read_text() == before
    moved = merged(new, "/new/python -m tokentop.commands.hook")
    assert [h["command"] for g in moved["hooks"]["PreToolUse"] for h in g["hooks"]] == [
        "lint",
        "/new/python -m tokentop.commands.hook",
    ]


def test_install_declined_or_on_bad_json_changes_nothing(tmp_path: Path) -> None:
    settings = tmp_path / "settings.json"
    settings.write_text('{"hooks": {}}\n')
    assert install(settings, command=COMMAND, ask=lambda _: "n", out=io.StringIO()) == 1
    assert settings.read_text() == '{"hooks": {}}\n'
    settings.write_text('{"hooks": [}\n')
    assert install(settings, command=COMMAND, yes=True, out=io.StringIO()) == 1
    assert settings.read_text() == '{"hooks": [}\n'
    assert not list(tmp_path.glob("*backup*"))


def test_install_from_the_cli_creates_a_missing_settings_file(tmp_path: Path) -> None:
    settings = tmp_path / "fresh" / "settings.json"
    assert main(["hook", "install", "--settings", str(settings), "--yes"]) == 0
    hooks = json.loads(settings.read_text())["hooks"]
    assert set(hooks) == {"SessionStart", "PreToolUse"}
    assert hooks["PreToolUse"][0]["hooks"][0]["command"].endswith("-m tokentop.commands.hook")
