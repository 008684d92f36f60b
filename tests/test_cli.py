"""The headless CLI as a user runs it: real subprocesses over real transcript files."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tokentop.processes.control import ProcessController
from tokentop.processes.finding import launch

FIXTURES = Path(__file__).parent / "fixtures"
DEMO_ID = "1af7fc5e-8455-4414-9ccd-011d40f70b2a"


def env_for(tmp: Path) -> dict[str, str]:
    """Keep every user dir (cache, data, config) inside the test's temp dir."""
    env = dict(os.environ)
    for var in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        env[var] = str(tmp / var.lower())
    env["HOME"] = str(tmp / "home")
    env.pop("CLAUDE_CONFIG_DIR", None)
    env.pop("CODEX_HOME", None)
    return env


def tokentop(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokentop.cli", *args],
        capture_output=True, text=True, timeout=60, env=env_for(tmp),
    )  # fmt: skip


def test_sessions_json_pins_the_shared_samples(tmp_path: Path) -> None:
    """The real Claude Code and Codex samples end to end: these totals are explained in
    test_source_claude.py (Demo session) and test_source_codex.py (rollout sample)."""
    proc = tokentop(
        tmp_path, "sessions", "--json", "--claude-dir", str(FIXTURES / "claude"),
        "--codex-dir", str(FIXTURES / "codex_samples"),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    sessions = {s["session_id"]: s for s in json.loads(proc.stdout)}
    demo = sessions[DEMO_ID]
    assert demo["tokens"] == {
        "input": 93, "output": 953, "cache_read": 103_219, "cache_write": 12_698,
        "cache_write_5m": 12_698, "cache_write_1h": 0, "reasoning": 0, "total": 116_963,
    }  # fmt: skip
    assert demo["cost_complete"] and demo["cost_usd"] > 0
    assert demo["models"][0]["model"] == "claude-sonnet-4-20250514"
    rollout = sessions["019b2ea4-aaaa-bbbb-cccc-58208e1f0000"]
    assert rollout["agent"] == "codex"
    assert rollout["tokens"]["total"] == 12_273
    assert all(s["bad_lines"] == 0 for s in sessions.values())


def test_bad_input_is_counted_never_a_traceback(tmp_path: Path) -> None:
    project = tmp_path / "claude" / "projects" / "-p"
    project.mkdir(parents=True)
    good = (FIXTURES / "claude/projects/-path-to-Demo" / f"{DEMO_ID}.jsonl").read_bytes()
    junk = b"{not json\n\x00\x01\x02binary\n" + b'{"type":"assistant","message":' + b"x" * 100
    (project / f"{DEMO_ID}.jsonl").write_bytes(good + junk + b"\n")
    (project / "binary.jsonl").write_bytes(bytes(range(256)) * 50)
    proc = tokentop(tmp_path, "sessions", "--json", "--claude-dir", str(tmp_path / "claude"))
    assert proc.returncode == 0
    assert "Traceback" not in proc.stderr
    [demo] = json.loads(proc.stdout)
    assert demo["tokens"]["total"] == 116_963
    assert demo["bad_lines"] == 3
    assert "binary.jsonl" in proc.stderr  # a file with bad lines and no session is reported


def test_missing_dir_and_bad_config_are_one_line_errors(tmp_path: Path) -> None:
    proc = tokentop(tmp_path, "sessions", "--claude-dir", str(tmp_path / "nope"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"tokentop: not a directory: {tmp_path / 'nope'}"
    config = tmp_path / "bad.toml"
    config.write_text("[budgets]\nusd = 'lots'\n")
    proc = tokentop(tmp_path, "sessions", "--config", str(config), "--claude-dir", str(tmp_path))
    assert proc.returncode == 2
    assert "budgets" in proc.stderr and "Traceback" not in proc.stderr


def test_config_roots_add_dirs_and_log_files(tmp_path: Path) -> None:
    """`[roots]` adds an agent dir to the defaults and log files to the sources; a dir given
    on the command line replaces the dirs, and the log files stay."""
    import shutil

    shutil.copytree(FIXTURES / "claude" / "projects", tmp_path / "home" / ".claude" / "projects")
    config = tmp_path / "config.toml"
    extra = FIXTURES / "claude" / "ccusage-fixture"
    usage = FIXTURES / "generic" / "usage.jsonl"
    config.write_text(f"[roots]\nclaude = ['{extra}']\njsonl = ['{usage}']\n")
    proc = tokentop(tmp_path, "sessions", "--json", "--no-cache", "--config", str(config))
    assert proc.returncode == 0, proc.stderr
    found = {(s["agent"], s["session_id"]) for s in json.loads(proc.stdout)}
    assert ("claude", DEMO_ID) in found  # the default dir
    assert any(sid.startswith("session-") for agent, sid in found if agent == "claude")
    assert ("jsonl", "run-1") in found

    only = FIXTURES / "claude" / "projects"
    proc = tokentop(
        tmp_path, "sessions", "--json", "--no-cache", "--config", str(config),
        "--claude-dir", str(only),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    agents = sorted({(s["agent"], s["session_id"]) for s in json.loads(proc.stdout)})
    logged = {k for k in found if k[0] != "claude"}  # a generic line may name its agent
    assert ("jsonl", "run-1") in logged
    assert agents == sorted({("claude", DEMO_ID)} | logged)

    config.write_text("[roots]\nclaud = ['/tmp']\n")
    proc = tokentop(tmp_path, "sessions", "--config", str(config))
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "roots.claud" in proc.stderr and "known: claude" in proc.stderr


class Watch:
    """`tokentop watch --ndjson` in a subprocess, its lines collected by a thread."""

    def __init__(self, tmp: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tokentop.cli", "watch", "--ndjson", "--no-cache", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env_for(tmp),
        )  # fmt: skip
        self.lines: queue.Queue[dict[str, Any]] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def wait_for(self, match: Any, timeout: float = 20.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                obj = self.lines.get(timeout=0.2)
            except queue.Empty:
                continue
            if match(obj):
                return obj
        raise AssertionError("no matching NDJSON line")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def test_watch_streams_sessions_decisions_and_actions(tmp_path: Path) -> None:
    root = tmp_path / "claude"
    project = root / "projects" / "-p"
    project.mkdir(parents=True)
    lines = (FIXTURES / "claude/projects/-path-to-Demo" / f"{DEMO_ID}.jsonl").read_bytes()
    # Policy judges live sessions only, so the recorded session is replayed as happening now.
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    lines = re.sub(rb'"timestamp":"[^"]+"', f'"timestamp":"{now}"'.encode(), lines)
    config = tmp_path / "config.toml"
    config.write_text("[budgets]\ntokens = 50000\n")
    watch = Watch(tmp_path, "--claude-dir", str(root), "--config", str(config))
    child = None
    try:
        path = project / f"{DEMO_ID}.jsonl"
        half = lines.index(b"\n", len(lines) // 2) + 1
        path.write_bytes(lines[:half])
        first = watch.wait_for(lambda o: o["type"] == "session" and o["responses"] > 0)
        with path.open("ab") as fh:
            fh.write(lines[half:])
        done = watch.wait_for(lambda o: o.get("tokens", {}).get("total") == 116_963)
        assert done["session_id"] == DEMO_ID and first["tokens"]["total"] < 116_963
        over = watch.wait_for(lambda o: o["type"] == "decision" and o["detector"] == "budget")
        assert over["session_id"] == DEMO_ID
        child, ref = launch([sys.executable, "-c", "import time; time.sleep(60)"])
        log = tmp_path / "xdg_data_home" / "tokentop" / "actions.jsonl"
        result = ProcessController(log_path=log).kill(ref, "test", "key:k")
        assert result.ok, result.message
        action = watch.wait_for(lambda o: o["type"] == "action")
        assert (action["action"], action["origin"], action["ok"]) == ("kill", "key:k", True)
    finally:
        watch.close()
        if child is not None and child.poll() is None:
            child.kill()


@pytest.mark.parametrize("command", [["sessions"], ["sessions", "--json"]])
def test_empty_roots_print_an_empty_result(tmp_path: Path, command: list[str]) -> None:
    proc = tokentop(tmp_path, *command, "--claude-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    if "--json" in command:
        assert json.loads(proc.stdout) == []


def test_watch_json_is_not_taken_for_jsonl(tmp_path: Path) -> None:
    """`--json` where `--ndjson` is meant works; an abbreviation never matches a longer flag."""
    sample = FIXTURES / "claude"
    watch = Watch(tmp_path, "--json", "--claude-dir", str(sample))
    try:
        first = watch.wait_for(lambda o: o["type"] == "session")
        assert first["agent"] == "claude"
    finally:
        watch.close()
    for abbreviated in (["watch", "--nd"], ["sessions", "--js"], ["--read"]):
        proc = tokentop(tmp_path, *abbreviated, "--claude-dir", str(tmp_path))
        assert proc.returncode == 2 and "unrecognized arguments" in proc.stderr, abbreviated


@pytest.mark.parametrize(
    ("args", "reason"),
    [
        (["demo", "--interval", "0"], "--interval: must be between 0.05 and 60"),
        (["demo", "--interval", "nan"], "--interval: must be between"),
        (["demo", "--interval", "-1"], "--interval: must be between"),
        (["demo", "--budget", "nan"], "--budget: not a finite number"),
        (["run", "--budget", "-1", "--", "true"], "--budget: must be zero or more"),
        (["run", "--budget-tokens", "2x", "--", "true"], "--budget-tokens: not a number"),
    ],
)
def test_nonsense_values_exit_2_with_the_reason(
    tmp_path: Path, args: list[str], reason: str
) -> None:
    proc = tokentop(tmp_path, *args)
    assert proc.returncode == 2
    assert reason in proc.stderr and "Traceback" not in proc.stderr


def test_the_app_without_a_terminal_says_so_in_one_line(tmp_path: Path) -> None:
    """`timeout 6 tokentop demo` under CI: no TTY, so one line and exit 2, no traceback and
    no demo agents started."""
    for command in (["demo"], []):
        proc = subprocess.run(
            ["timeout", "20", sys.executable, "-m", "tokentop.cli", *command],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
            env=env_for(tmp_path),
        )  # fmt: skip
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.count("\n") == 1 and "needs a terminal" in proc.stderr


@pytest.mark.parametrize("flag", ["--jsonl", "--proxy-log"])
def test_a_missing_log_file_is_an_error_like_a_missing_dir(tmp_path: Path, flag: str) -> None:
    missing = tmp_path / "usage.jsonl"
    proc = tokentop(tmp_path, "sessions", "--claude-dir", str(tmp_path), flag, str(missing))
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"tokentop: no such file: {missing} ({flag})"
    missing.write_text("")
    proc = tokentop(tmp_path, "sessions", "--claude-dir", str(tmp_path), flag, str(missing))
    assert proc.returncode == 0, proc.stderr


def test_one_table_drives_the_dir_flags_and_the_sources(tmp_path: Path) -> None:
    from tokentop.cli import build_parser
    from tokentop.commands.common import AGENT_SOURCES, make_sources

    for key, agent in AGENT_SOURCES.items():
        argv = ["sessions", f"--{key}-dir", str(tmp_path)]
        [source] = make_sources(build_parser(argv).parse_args(argv))
        assert (type(source).__module__, type(source).__name__) == (agent.module, agent.cls)
        assert source.name == key
