"""End-to-end tests of the process controller and mapping, with real child processes.

Children are the demo agent (a real process appending to a real transcript) or tiny scripts.
Every child is started in its own process group, and a finalizer SIGKILLs that group whatever
happens. Timing is only ever polled with generous timeouts.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import msgspec
import psutil
import pytest

import fake_agents
import proc_helpers
from proc_helpers import gone, psutil_status
from tokentop.processes.control import ProcessController, read_action_log
from tokentop.processes.finding import (
    ProcessRef,
    agent_name,
    find_agent_ancestor,
    find_agent_processes,
    find_by_open_file,
    launch,
    match_session,
    ref_for_pid,
)

TIMEOUT = 15.0
wait_until = partial(proc_helpers.wait_until, timeout=TIMEOUT)
FAST = "0.02"


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def grows(path: Path, timeout: float) -> bool:
    """Whether the file grows within `timeout` (polled)."""
    start = size(path)
    return wait_until(lambda: size(path) > start, timeout=timeout)


def transcript(root: Path) -> Path:
    assert wait_until(lambda: any(root.rglob("*.jsonl"))), f"no transcript under {root}"
    return next(root.rglob("*.jsonl"))


Spawn = Callable[..., tuple[subprocess.Popen[bytes], ProcessRef]]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Launch children in their own process group; SIGKILL every group at teardown."""
    children: list[subprocess.Popen[bytes]] = []

    def start(argv: list[str], **kwargs: object) -> tuple[subprocess.Popen[bytes], ProcessRef]:
        popen, ref = launch(argv, stdout=subprocess.DEVNULL, **kwargs)  # type: ignore[arg-type]
        children.append(popen)
        return popen, ref

    yield start
    for popen in children:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired, ChildProcessError):
            popen.wait(timeout=5)


def demo_argv(root: Path, kind: str = "claude", behavior: str = "steady") -> list[str]:
    return [
        sys.executable, "-m", "tokentop.demo.agent", "--kind", kind, "--behavior", behavior,
        "--root", str(root), "--cwd", "/home/dev/project", "--interval", FAST,
    ]  # fmt: skip


@pytest.fixture
def controller(tmp_path: Path) -> ProcessController:
    return ProcessController(log_path=tmp_path / "log" / "actions.jsonl")


def test_pause_stops_the_transcript_and_resume_restarts_it(
    spawn: Spawn, controller: ProcessController, tmp_path: Path
) -> None:
    popen, ref = spawn(demo_argv(tmp_path / "root"))
    path = transcript(tmp_path / "root")
    assert grows(path, TIMEOUT)

    paused = controller.pause(ref, reason="test", origin="key:p")
    assert paused.ok, paused.message
    assert paused.pids == (popen.pid,)
    assert psutil_status(popen.pid) == psutil.STATUS_STOPPED
    assert controller.status(ref) == "stopped"
    assert not grows(path, 1.0), "a paused agent kept writing"

    resumed = controller.resume(ref, reason="test", origin="key:p")
    assert resumed.ok, resumed.message
    assert controller.status(ref) == "running"
    assert grows(path, TIMEOUT), "a resumed agent did not write again"


def test_terminate_ends_a_running_agent(
    spawn: Spawn, controller: ProcessController, tmp_path: Path
) -> None:
    popen, ref = spawn(demo_argv(tmp_path / "root"))
    transcript(tmp_path / "root")
    result = controller.terminate(ref, reason="over budget", origin="policy:budget", grace=5)
    assert result.ok, result.message
    assert "ignored SIGTERM" not in result.message
    assert gone(popen.pid)
    assert controller.status(ref) == "gone"


def test_terminate_continues_a_paused_agent_so_it_acts_on_sigterm(
    spawn: Spawn, controller: ProcessController, tmp_path: Path
) -> None:
    popen, ref = spawn(demo_argv(tmp_path / "root"))
    path = transcript(tmp_path / "root")
    assert controller.pause(ref).ok
    result = controller.terminate(ref, reason="loop", origin="key:t", grace=5)
    assert result.ok, result.message
    # Without the SIGCONT the stopped agent would ignore SIGTERM until SIGKILLed.
    assert "ignored SIGTERM" not in result.message
    assert gone(popen.pid)
    assert path.read_bytes().endswith(b"\n"), "the agent stopped mid-line"


def test_kill_ends_the_agent(spawn: Spawn, controller: ProcessController, tmp_path: Path) -> None:
    popen, ref = spawn(demo_argv(tmp_path / "root", "codex", "loop"))
    transcript(tmp_path / "root")
    result = controller.kill(ref, reason="runaway", origin="key:k")
    assert result.ok, result.message
    assert result.pids == (popen.pid,)
    assert gone(popen.pid)
    assert controller.status(ref) == "gone"
    again = controller.kill(ref, reason="runaway", origin="key:k")
    assert not again.ok and "already exited" in again.message


def test_a_child_ignoring_sigterm_is_killed_after_the_grace_period(
    spawn: Spawn, controller: ProcessController, tmp_path: Path
) -> None:
    ready = tmp_path / "ready"
    script = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "pathlib.Path(sys.argv[1]).touch()\n"
        "while True: time.sleep(0.05)\n"
    )
    popen, ref = spawn([sys.executable, "-c", script, str(ready)])
    assert wait_until(ready.exists)
    started = time.monotonic()
    result = controller.terminate(ref, reason="test", origin="key:t", grace=0.5)
    assert result.ok, result.message
    assert time.monotonic() - started >= 0.5
    assert "ignored SIGTERM" in result.message
    assert gone(popen.pid)


def test_pid_reuse_guard_refuses_a_stale_ref(
    spawn: Spawn, controller: ProcessController, tmp_path: Path
) -> None:
    _popen, ref = spawn(demo_argv(tmp_path / "root"))
    path = transcript(tmp_path / "root")
    stale = msgspec.structs.replace(ref, create_time=ref.create_time - 100)
    for act in (controller.pause, controller.kill, controller.terminate):
        result = act(stale, "test", "key:k")
        assert not result.ok
        assert result.pids == ()
        assert "reused" in result.message
    assert controller.status(stale) == "gone"
    assert controller.status(ref) == "running"
    assert grows(path, TIMEOUT), "a refused action still affected the process"


def test_never_signals_itself_its_parent_or_ancestors(controller: ProcessController) -> None:
    # resume (SIGCONT) is harmless if the guard were broken, so the test cannot hang the run.
    ancestors = [os.getpid(), os.getppid(), *(p.pid for p in psutil.Process().parents())]
    for pid in ancestors:
        ref = ref_for_pid(pid)
        if ref is None:
            continue
        result = controller.resume(ref, reason="test", origin="test")
        assert not result.ok
        assert result.pids == ()
        assert "tokentop itself or one of its parents" in result.message


def test_actions_on_a_process_tree(
    spawn: Spawn, controller: ProcessController, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    shell = " ".join(demo_argv(root)) + " & wait"
    popen, ref = spawn(["/bin/sh", "-c", shell])
    path = transcript(root)
    assert wait_until(lambda: len(psutil.Process(popen.pid).children()) == 1)
    child = psutil.Process(popen.pid).children()[0].pid

    paused = controller.pause(ref, reason="test", origin="key:p")
    assert paused.ok and paused.pids == (popen.pid, child)
    assert wait_until(lambda: psutil_status(child) == psutil.STATUS_STOPPED)
    assert not grows(path, 1.0)

    resumed = controller.resume(ref, reason="test", origin="key:p")
    assert resumed.ok and resumed.pids == (child, popen.pid)
    assert grows(path, TIMEOUT)

    killed = controller.kill(ref, reason="test", origin="key:k")
    assert killed.ok, killed.message
    assert wait_until(lambda: gone(child)) and gone(popen.pid)


def test_the_action_log_gets_one_line_per_action(
    spawn: Spawn, controller: ProcessController, tmp_path: Path
) -> None:
    _, ref = spawn(demo_argv(tmp_path / "root"))
    transcript(tmp_path / "root")
    controller.pause(ref, reason="over budget", origin="policy:budget", session="claude:abc")
    controller.resume(ref, reason="user", origin="key:p")
    controller.kill(ref, reason="loop", origin="policy:loop")
    controller.kill(ref, reason="again", origin="key:k")  # refused: already gone

    entries, bad = read_action_log(tmp_path / "log" / "actions.jsonl")
    assert bad == 0
    assert [e.action for e in entries] == ["pause", "resume", "kill", "kill"]
    assert [e.ok for e in entries] == [True, True, True, False]
    assert [e.origin for e in entries] == ["policy:budget", "key:p", "policy:loop", "key:k"]
    assert entries[0].reason == "over budget" and entries[0].session == "claude:abc"
    assert all(e.pid == ref.pid and e.timestamp > 0 for e in entries)


def test_an_unwritable_log_is_reported_not_raised(spawn: Spawn, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    controller = ProcessController(log_path=blocker / "actions.jsonl")
    _, ref = spawn(demo_argv(tmp_path / "root"))
    transcript(tmp_path / "root")
    result = controller.kill(ref, reason="test", origin="key:k")
    assert result.ok
    assert "not recorded" in result.message


def test_a_missing_pid_is_refused_with_a_clear_message(controller: ProcessController) -> None:
    ref = ProcessRef(pid=2**22 + 12345, create_time=1.0, cmdline=("claude",))
    result = controller.terminate(ref, reason="test", origin="key:t")
    assert not result.ok and "already exited" in result.message
    assert controller.status(ref) == "gone"


def test_launch_starts_a_new_session_and_remembers_the_process(
    spawn: Spawn, tmp_path: Path
) -> None:
    popen, ref = spawn(demo_argv(tmp_path / "root"), cwd=tmp_path)
    assert ref.how == "launched" and ref.confident
    assert ref.pid == popen.pid
    assert ref.create_time == psutil.Process(popen.pid).create_time()
    assert os.getsid(popen.pid) == popen.pid != os.getsid(0)
    assert os.getpgid(popen.pid) == popen.pid
    assert ref.cwd == str(tmp_path)
    assert ref.cmdline[:3] == (sys.executable, "-m", "tokentop.demo.agent")


@pytest.mark.parametrize(
    ("name", "cmdline", "expected"),
    [
        ("claude", ["claude", "--resume", "x"], "claude"),
        ("node", ["node", "/usr/local/bin/claude"], "claude"),
        ("node", ["node", "--no-warnings", "/opt/codex/bin/codex.js", "exec"], "codex"),
        ("python3.11", ["python3.11", "/home/u/.local/bin/aider", "--model", "x"], "aider"),
        ("codex", ["/opt/codex/vendor/codex"], "codex"),
        ("vim", ["vim", "claude"], ""),
        ("less", ["less", "/tmp/codex"], ""),
        ("node", ["node", "server.js"], ""),
    ],
)
def test_agent_name(name: str, cmdline: list[str], expected: str) -> None:
    assert agent_name(name, cmdline) == expected


def test_heuristic_scan_and_cwd_match(spawn: Spawn, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    agent = fake_agents.native_claude(tmp_path / "home")
    first, _ = spawn([str(agent), "60"], cwd=project)
    _, other_ref = spawn([str(fake_agents.native_codex(tmp_path / "npm")), "60"], cwd=project)

    found = {ref.pid: ref for ref in find_agent_processes()}
    assert found[first.pid].agent == "claude" and found[first.pid].how == "heuristic"
    assert found[first.pid].cwd == str(project)
    assert found[other_ref.pid].agent == "codex"

    match = match_session(str(project), found.values(), agent="claude")
    assert match is not None and match.pid == first.pid and match.confident
    assert not match.exact
    assert match_session(str(tmp_path / "elsewhere"), found.values()) is None
    shared = match_session(str(project), found.values(), agent="claude", rivals=1)
    assert shared is not None and not shared.confident  # another live session in this cwd

    second, _ = spawn([str(agent), "60"], cwd=project)
    assert wait_until(lambda: second.pid in {r.pid for r in find_agent_processes()})
    ambiguous = match_session(str(project), find_agent_processes(), agent="claude")
    assert ambiguous is not None and not ambiguous.confident
    assert ambiguous.pid == second.pid  # the newest process is the best guess


@fake_agents.needs_node
def test_a_wrapper_and_its_same_agent_child_are_one_process(spawn: Spawn, tmp_path: Path) -> None:
    native = fake_agents.native_codex(tmp_path / "npm")
    wrapper = fake_agents.npm_codex(tmp_path / "npm", fake_agents.WRAPPER)
    popen, _ = spawn([*wrapper, str(native), "60"])
    assert wait_until(lambda: len(psutil.Process(popen.pid).children()) == 1)
    child = psutil.Process(popen.pid).children()[0].pid
    pids = {ref.pid for ref in find_agent_processes()}
    assert popen.pid in pids and child not in pids


def test_find_by_open_file_maps_a_codex_rollout_to_its_writer(spawn: Spawn, tmp_path: Path) -> None:
    popen, _ = spawn(demo_argv(tmp_path / "root", "codex", "steady"))
    rollout = transcript(tmp_path / "root")
    reader, _ = spawn(["tail", "-f", str(rollout)])  # a reader must not be taken for the writer
    assert wait_until(lambda: psutil.Process(reader.pid).open_files() != [])
    ref = find_by_open_file(rollout)
    assert ref is not None
    assert ref.pid == popen.pid and ref.how == "open-file" and ref.confident
    assert find_by_open_file(tmp_path / "nobody-writes-this.jsonl") is None


@fake_agents.needs_node
def test_find_agent_ancestor_finds_the_agent_above_a_hook_shell(tmp_path: Path) -> None:
    """npm's Claude Code runs the hook through a shell; a wrapper merely named `claude`
    between them is no agent and is passed over."""
    out = tmp_path / "out"
    hook = (
        "from tokentop.processes.finding import find_agent_ancestor as f; "
        "r = f(); print(r.pid if r else 0)"
    )
    named = tmp_path / "bin" / "claude"  # a script named like the agent: not an install
    named.parent.mkdir()
    named.write_text(f"#!/bin/sh\n{sys.executable} -c '{hook}' > {out}\n")
    named.chmod(0o755)
    agent = fake_agents.npm_claude(tmp_path / "npm", fake_agents.SHELL)
    popen = subprocess.Popen([*agent, str(named)], start_new_session=True)
    try:
        assert popen.wait(timeout=TIMEOUT) == 0
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
    assert int(out.read_text()) == popen.pid
    assert find_agent_ancestor(2**22 + 12345) is None
