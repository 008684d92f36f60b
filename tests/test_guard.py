"""`tokentop guard`: real looping agents killed by policy, and mappings it must not act on.

Agents are the demo agent (a real process appending a real transcript); every child runs in
its own process group and a finalizer kills the group whatever happens. Timing is polled with
generous timeouts; the only timed assertion is the issue's "gone within 2 s of the line".
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import msgspec
import pytest

import proc_helpers
from proc_helpers import gone
from tokentop.commands.common import make_watchdog
from tokentop.commands.guard import Guard
from tokentop.config import parse_config
from tokentop.history.store import Store
from tokentop.model import LedgerSnapshot, RecentTool, SessionKey, SessionSnapshot, TokenCounts
from tokentop.processes.control import ProcessController
from tokentop.processes.finding import ProcessRef, launch
from tokentop.processes.mapper import RecordedMapper, SessionMapper
from tokentop.processes.registry import Registry, SessionRecord, append

TIMEOUT = 20.0
wait_until = partial(proc_helpers.wait_until, timeout=TIMEOUT, step=0.01)
LOOP_KILL = """\
[policy.loop]
action = "kill"
repeats = 3
error_repeats = 3
"""


class Lines:
    """Collects a child's stdout lines as JSON objects, from a reader thread."""

    def __init__(self, popen: subprocess.Popen[str]) -> None:
        self.items: list[dict[str, Any]] = []
        assert popen.stdout is not None
        stream = popen.stdout
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: Any) -> None:
        for line in stream:
            self.items.append(json.loads(line))

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [item for item in list(self.items) if item["type"] == kind]


def start_guard(tmp_path: Path, groups: list[int], *source: str) -> tuple[Lines, Path]:
    cfg = tmp_path / "config.toml"
    cfg.write_text(LOOP_KILL)
    registry = tmp_path / "registry.jsonl"
    argv = [
        sys.executable, "-m", "tokentop.cli", "guard", *source, "--no-cache",
        "--config", str(cfg), "--registry", str(registry),
    ]  # fmt: skip
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    guard = subprocess.Popen(
        argv, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    groups.append(guard.pid)
    lines = Lines(guard)
    assert wait_until(lambda: bool(lines.of("ready"))), "guard never became ready"
    return lines, registry


def demo_loop(root: Path, kind: str, session_id: str) -> tuple[subprocess.Popen[bytes], ProcessRef]:
    argv = [
        sys.executable, "-m", "tokentop.demo.agent", "--kind", kind, "--behavior", "loop",
        "--root", str(root), "--cwd", "/home/dev/payments", "--interval", "0.1",
        "--session-id", session_id,
    ]  # fmt: skip
    return launch(argv, stdout=subprocess.DEVNULL)


def loop_calls(root: Path) -> int:
    """How many times the looping command has been called so far (tool_use lines)."""
    count = 0
    for path in root.rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            if "pytest tests/test_parser.py -x -q" in line and '"is_error"' not in line:
                count += '"tool_use"' in line or '"function_call"' in line
    return count


def assert_killed_within_2s_of_the_trigger(
    root: Path, popen: subprocess.Popen[bytes], lines: Lines
) -> None:
    assert wait_until(lambda: loop_calls(root) >= 3 or popen.poll() is not None)
    triggered = time.monotonic()
    assert wait_until(lambda: gone(popen.pid), timeout=5.0), "the looping agent is still running"
    assert time.monotonic() - triggered < 2.0
    assert wait_until(lambda: bool(lines.of("action")))
    decision = lines.of("decision")[0]
    assert (decision["detector"], decision["action"]) == ("loop", "kill")
    action = lines.of("action")[0]
    assert action["ok"] is True and action["pid"] == popen.pid
    assert action["origin"] == "policy:loop" and action["reason"] == decision["reason"]


def test_a_looping_claude_agent_is_killed_through_its_hook_record(
    tmp_path: Path, groups: list[int]
) -> None:
    root = tmp_path / "claude"
    (root / "projects").mkdir(parents=True)
    lines, registry = start_guard(tmp_path, groups, "--claude-dir", str(root))
    session_id = "7d1c0c3e-1111-4222-8333-444455556666"
    popen, ref = demo_loop(root, "claude", session_id)
    groups.append(popen.pid)
    record = SessionRecord("claude", session_id, ref.pid, ref.create_time, "hook", time.time())
    append(registry, record)
    assert_killed_within_2s_of_the_trigger(root, popen, lines)
    assert lines.of("action")[0]["mapping"] == "hook"
    with Store(tmp_path / "data" / "tokentop" / "tokentop.db") as store:  # XDG_DATA_HOME
        kept = store.events_for(f"claude:{session_id}")
    assert [(e.detector, e.action) for e in kept] == [("loop", "kill")]
    assert kept[0].reason == lines.of("decision")[0]["reason"]


def test_a_looping_codex_agent_is_killed_through_the_file_it_holds_open(
    tmp_path: Path, groups: list[int]
) -> None:
    pytest.importorskip("tokentop.sources.codex")
    root = tmp_path / "codex"
    (root / "sessions").mkdir(parents=True)
    lines, _ = start_guard(tmp_path, groups, "--codex-dir", str(root))
    popen, _ = demo_loop(root, "codex", "019a0000-aaaa-7bbb-8ccc-ddddeeeeffff")
    groups.append(popen.pid)
    assert_killed_within_2s_of_the_trigger(root, popen, lines)
    assert lines.of("action")[0]["mapping"] == "open-file"


# -- mappings the guard must not act on (in-process, real sleeping children) ------------------


def looping_session(cwd: str) -> SessionSnapshot:
    now = time.time()
    recent = tuple(RecentTool(now - 1, "Bash", "same", True, "err") for _ in range(6))
    return SessionSnapshot(
        SessionKey("claude", "abc"), cwd, "", now - 60, now - 1, TokenCounts(output=10), 0.0,
        (), (), (), 3, 0.0, 0.0, (), 6, 6, (), recent, (), 0,
    )  # fmt: skip


class FixedMapper(SessionMapper):
    """The app's mapper, answering with a fixed process (or none)."""

    def __init__(self, ref: ProcessRef | None) -> None:
        super().__init__()
        self.ref = ref

    def processes_for(self, session: SessionSnapshot) -> ProcessRef | None:
        return self.ref


@pytest.mark.parametrize(
    ("confident", "act", "message"),
    [
        (False, True, "is a guess"),
        (True, False, "dry run: would kill pid "),
        (None, True, "no process is mapped"),
        (None, False, "dry run: no process is mapped to this session; not acted"),
        (False, False, "dry run: would kill pid "),
    ],
)
def test_a_guessed_mapping_a_dry_run_or_no_mapping_is_reported_not_acted(
    tmp_path: Path, groups: list[int], confident: bool | None, act: bool, message: str
) -> None:
    popen, ref = launch([sys.executable, "-c", "import time; time.sleep(60)"])
    groups.append(popen.pid)
    if confident is not None:
        how = "launched" if confident else "heuristic"  # exact, or an ambiguous guess
        ref = ProcessRef(ref.pid, ref.create_time, ref.cmdline, ref.cwd, how, confident)
    controller = ProcessController(log_path=tmp_path / "actions.jsonl")
    fallback = FixedMapper(ref if confident is not None else None)
    mapper = RecordedMapper(Registry(tmp_path / "no-registry.jsonl"), controller, fallback)
    out: list[dict[str, Any]] = []
    config = parse_config(LOOP_KILL)
    watchdog = make_watchdog(config, mapper, controller)
    guard = Guard(config, controller, mapper, out.append, watchdog, act=act)
    snap = LedgerSnapshot(time.time(), (looping_session(str(tmp_path)),), (), 0, 1)
    assert [d.detector for d in guard.check(watchdog.judge(snap))] == ["loop"]
    actions = [o for o in out if o["type"] == "action"]
    assert len(actions) == 1 and actions[0]["ok"] is False and message in actions[0]["message"]
    assert ("the process is a guess, ambiguous" in actions[0]["message"]) is (confident is False)
    assert controller.status(ref) == "running"
    assert guard.check(watchdog.judge(snap)) == []  # once per crossing: no second attempt


def test_stall_is_reported_for_a_silent_session_whose_process_still_runs(
    tmp_path: Path, groups: list[int]
) -> None:
    popen, ref = launch([sys.executable, "-c", "import time; time.sleep(60)"])
    groups.append(popen.pid)
    registry = tmp_path / "registry.jsonl"
    old, new = SessionKey("claude", "old"), SessionKey("claude", "abc")
    for key in (old, new):  # /clear: a new session in the same process
        append(
            registry, SessionRecord("claude", key.session_id, ref.pid, ref.create_time, "hook", 0)
        )
    controller = ProcessController(log_path=tmp_path / "actions.jsonl")
    mapper = RecordedMapper(Registry(registry), controller, FixedMapper(None))
    out: list[dict[str, Any]] = []
    watchdog = make_watchdog(parse_config(""), mapper, controller)
    guard = Guard(parse_config(""), controller, mapper, out.append, watchdog)
    silent = msgspec.structs.replace(looping_session(str(tmp_path)), recent_tools=())
    quiet = time.time() - 16 * 60
    sessions = tuple(
        msgspec.structs.replace(silent, key=key, last_ts=quiet, first_ts=quiet)
        for key in (old, new)
    )
    found = guard.check(watchdog.judge(LedgerSnapshot(time.time(), sessions, (), 0, 1)))
    assert [(d.session, d.detector, d.action) for d in found] == [(new, "stall", "warn")]
    assert "transcript silent for 16 min" in out[0]["reason"]
    assert [o["type"] for o in out] == ["decision"]  # informational: nothing is signalled
