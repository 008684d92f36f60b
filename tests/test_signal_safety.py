"""What tokentop must never signal (issue 11, cases a-d), with real processes and real files.

(a) a script merely named like an agent in an over-budget transcript's cwd survives `guard`;
(b) session B's agent survives session A's budget when A and B share a cwd;
(c) a non-agent holding a Codex rollout open for append survives;
(d) a reused pid is never signalled, even when reused within one create-time tick of 50 ms.
A known agent install found by cwd is a guess: `guard` reports what it would do, and acts only
on exact mappings (launched, hook record, an agent install writing the session's file).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import psutil
import pytest

import fake_agents
import proc_helpers
from claude_lines import escape_cwd, response, write_transcript
from proc_helpers import gone
from test_guard import Lines
from tokentop.model import LedgerSnapshot
from tokentop.processes.control import ProcessController
from tokentop.processes.finding import ProcessRef, find_by_open_file, launch
from tokentop.processes.mapper import SessionMapper
from tokentop.processes.registry import SessionRecord, append

TIMEOUT = 30.0
wait_until = partial(proc_helpers.wait_until, timeout=TIMEOUT)
KILL_OVER_1000_TOKENS = '[budgets]\ntokens = 1000\n[policy.budget]\naction = "kill"\n'
SESSION_A = "0a0a0a0a-1111-4222-8333-444455556666"
SESSION_B = "0b0b0b0b-1111-4222-8333-444455556666"
NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


def start(argv: list[str], groups: list[int], **kwargs: Any) -> subprocess.Popen[bytes]:
    popen = subprocess.Popen(argv, start_new_session=True, stdout=subprocess.DEVNULL, **kwargs)
    groups.append(popen.pid)
    return popen


def start_guard(tmp_path: Path, groups: list[int], *source: str) -> Lines:
    cfg = tmp_path / "config.toml"
    cfg.write_text(KILL_OVER_1000_TOKENS)
    argv = [
        sys.executable, "-m", "tokentop.cli", "guard", *source, "--no-cache",
        "--config", str(cfg), "--registry", str(tmp_path / "registry.jsonl"),
    ]  # fmt: skip
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    guard = subprocess.Popen(
        argv, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    groups.append(guard.pid)
    return Lines(guard)


def claude_session(root: Path, session_id: str, cwd: Path, tokens: int) -> Path:
    path = root / "projects" / escape_cwd(str(cwd)) / f"{session_id}.jsonl"
    return write_transcript(path, session_id, str(cwd), [response(session_id, str(cwd), tokens)])


def the_action(lines: Lines, session_id: str) -> dict[str, Any]:
    """The guard's action line for the session (it has decided to kill it over budget)."""
    mine = lambda: [a for a in lines.of("action") if a["session"].endswith(session_id)]  # noqa: E731
    assert wait_until(lambda: bool(mine())), f"no action line for {session_id}: {lines.items}"
    decisions = [d for d in lines.of("decision") if d["session_id"] == session_id]
    assert [(d["detector"], d["action"]) for d in decisions] == [("budget", "kill")]
    return mine()[0]


def test_a_script_named_like_an_agent_in_the_transcripts_cwd_survives_guard(
    tmp_path: Path, groups: list[int]
) -> None:
    """(a) `python3 claude.py`, `exec -a claude sleep` and a copy of sleep named claude."""
    victim = tmp_path / "victim"
    (victim / "bin").mkdir(parents=True)
    (victim / "claude.py").write_text("import time\ntime.sleep(600)\n")
    python3 = shutil.which("python3") or sys.executable
    sleep = shutil.which("sleep")
    assert sleep is not None
    named = fake_agents.copy_of_sleep(victim / "bin" / "claude")
    impostors = [
        start([python3, "claude.py"], groups, cwd=victim),
        start(["claude", "600"], groups, cwd=victim, executable=sleep),
        start([str(named), "600"], groups, cwd=victim),
    ]
    script = impostors[0]  # and a hook record naming it, as an older tokentop could write
    started = psutil.Process(script.pid).create_time()
    record = SessionRecord("claude", SESSION_A, script.pid, started, "hook", time.time())
    append(tmp_path / "registry.jsonl", record)
    root = tmp_path / "claude"
    claude_session(root, SESSION_A, victim, 9_000)
    lines = start_guard(tmp_path, groups, "--claude-dir", str(root))
    action = the_action(lines, SESSION_A)
    assert action["ok"] is False and action["pids"] == []
    assert "no process is mapped" in action["message"]
    time.sleep(0.5)
    assert [p.poll() for p in impostors] == [None, None, None]


@pytest.mark.parametrize("shared", [False, True], ids=["alone", "shared-cwd"])
def test_a_guessed_agent_survives_another_sessions_budget_and_guard_says_it_would_kill(
    tmp_path: Path, groups: list[int], shared: bool
) -> None:
    """(b) A is over budget and its agent has exited without tokentop knowing its process;
    B's real-looking `claude` runs in the same cwd. The guess is reported, never acted on, and
    called ambiguous when B is live. (Had A a hook record, its process being gone would make
    A "exited" and nothing would be decided: see the next test.)"""
    project = tmp_path / "project"
    project.mkdir()
    root = tmp_path / "claude"
    claude_session(root, SESSION_A, project, 9_000)
    if shared:
        claude_session(root, SESSION_B, project, 100)
    agent_b = start([str(fake_agents.native_claude(tmp_path / "home")), "600"], groups, cwd=project)
    lines = start_guard(tmp_path, groups, "--claude-dir", str(root))
    action = the_action(lines, SESSION_A)
    assert action["ok"] is False and action["pids"] == [] and action["pid"] == agent_b.pid
    assert action["mapping"] == "heuristic"
    assert f"would kill pid {agent_b.pid}: the process is a guess" in action["message"]
    assert "tokentop run" in action["message"] and "install the hook" in action["message"]
    assert ("ambiguous" in action["message"]) is shared
    time.sleep(0.5)
    assert agent_b.poll() is None


def test_a_session_whose_recorded_agent_exited_is_over_and_nothing_is_signalled(
    tmp_path: Path, groups: list[int]
) -> None:
    """(b) A's hook record names a process that has exited: A has ended (the Watchdog says
    "exited"), so its budget decides nothing, and B's agent in the same cwd survives."""
    project = tmp_path / "project"
    project.mkdir()
    root = tmp_path / "claude"
    claude_session(root, SESSION_A, project, 9_000)
    exited = start([sys.executable, "-c", ""], groups)
    started = psutil.Process(exited.pid).create_time()
    exited.wait()
    record = SessionRecord("claude", SESSION_A, exited.pid, started, "hook", time.time())
    append(tmp_path / "registry.jsonl", record)
    agent_b = start([str(fake_agents.native_claude(tmp_path / "home")), "600"], groups, cwd=project)
    lines = start_guard(tmp_path, groups, "--claude-dir", str(root))
    assert wait_until(lambda: bool(lines.of("ready")))
    time.sleep(2.5)  # a few judgements
    assert lines.of("decision") == [] and lines.of("action") == []
    assert agent_b.poll() is None


def test_two_live_sessions_in_one_cwd_make_the_guess_ambiguous(
    tmp_path: Path, groups: list[int]
) -> None:
    """(b) in the mapper: one matching process is not confident when two sessions share it."""
    project = tmp_path / "project"
    project.mkdir()
    root = tmp_path / "claude"
    agent = start([str(fake_agents.native_claude(tmp_path / "home")), "600"], groups, cwd=project)
    from tokentop.engine.engine import Engine
    from tokentop.sources.claude_code import ClaudeCodeSource

    for sid in (SESSION_A, SESSION_B):
        claude_session(root, sid, project, 500)
    engine = Engine([ClaudeCodeSource(config_dirs=[root])], lambda *_: 0.0)
    engine.process(engine.find_transcripts())
    snapshot: LedgerSnapshot = engine.snapshot()
    a = next(s for s in snapshot.sessions if s.key.session_id == SESSION_A)
    mapper = SessionMapper()
    mapper.observe([a])
    alone = mapper.processes_for(a)
    assert alone is not None and alone.pid == agent.pid and alone.confident and not alone.exact
    mapper.observe(snapshot.sessions)
    both = mapper.processes_for(a)
    assert both is not None and both.pid == agent.pid and not both.confident


def codex_rollout(tmp_path: Path, cwd: Path) -> Path:
    """A real rollout written by the demo Codex agent, which is then stopped."""
    root = tmp_path / "codex"
    argv = [
        sys.executable, "-m", "tokentop.demo.agent", "--kind", "codex", "--behavior", "steady",
        "--root", str(root), "--cwd", str(cwd), "--interval", "0.02",
    ]  # fmt: skip
    popen, _ = launch(argv, stdout=subprocess.DEVNULL)
    try:
        tokens = lambda: sum(p.read_text().count("token_count") for p in root.rglob("*.jsonl"))  # noqa: E731
        assert wait_until(lambda: tokens() >= 3), "the demo codex wrote no usage"
    finally:
        popen.kill()
        popen.wait()
    return next(root.rglob("rollout-*.jsonl"))


def test_a_non_agent_holding_a_rollout_open_survives_and_an_agent_writer_is_exact(
    tmp_path: Path, groups: list[int]
) -> None:
    """(c) `sleep 600 3>>rollout-….jsonl` is no agent: it is neither mapped nor killed."""
    pytest.importorskip("tokentop.sources.codex")
    project = tmp_path / "project"
    project.mkdir()
    rollout = codex_rollout(tmp_path, project)
    holder = start(["/bin/sh", "-c", 'exec sleep 600 3>>"$1"', "sh", str(rollout)], groups)
    assert wait_until(lambda: any(f.path == str(rollout) for f in _files(holder.pid)))
    assert find_by_open_file(rollout) is None
    lines = start_guard(tmp_path, groups, "--codex-dir", str(tmp_path / "codex"))
    action = the_action(lines, rollout.stem[-36:])
    assert action["ok"] is False and "no process is mapped" in action["message"]
    time.sleep(0.5)
    assert holder.poll() is None
    if fake_agents.NODE is not None:  # a known agent install writing it is an exact mapping
        codex = start([*fake_agents.npm_codex(tmp_path / "npm"), str(rollout)], groups)
        assert wait_until(lambda: find_by_open_file(rollout) is not None)
        ref = find_by_open_file(rollout)
        assert ref is not None and (ref.pid, ref.how, ref.exact) == (codex.pid, "open-file", True)


def _files(pid: int) -> list[Any]:
    try:
        return psutil.Process(pid).open_files()
    except psutil.Error:
        return []


def reuse_pid_soon(groups: list[int]) -> tuple[ProcessRef, subprocess.Popen[bytes]] | None:
    """A process remembered, ended, and its pid given to a new process that started a few
    clock ticks later (0 < difference < 50 ms); None if the machine was too busy."""
    sleep = shutil.which("sleep")
    assert sleep is not None
    first = start([sleep, "600"], groups)
    ref = ProcessRef(first.pid, psutil.Process(first.pid).create_time(), how="launched")
    first.kill()
    first.wait()
    time.sleep(0.012)  # past the first's clock tick (10 ms at 100 Hz)
    NS_LAST_PID.write_text(str(ref.pid - 1))
    second = start([sleep, "600"], groups)
    later = psutil.Process(second.pid).create_time() - ref.create_time
    if second.pid == ref.pid and 0 < later < 0.05:
        return ref, second
    second.kill()
    second.wait()
    return None


def test_a_pid_reused_within_50_ms_is_not_signalled(tmp_path: Path, groups: list[int]) -> None:
    """(d) create_time must equal the remembered one exactly."""
    if os.geteuid() != 0 or not os.access(NS_LAST_PID, os.W_OK):
        pytest.skip("choosing the next pid needs root and a writable ns_last_pid")
    reused = None
    for _ in range(100):
        reused = reuse_pid_soon(groups)
        if reused is not None:
            break
    if reused is None:
        pytest.skip("the pid was not reused within 50 ms in 100 tries (a busy machine)")
    ref, second = reused
    controller = ProcessController(log_path=tmp_path / "actions.jsonl")
    assert controller.status(ref) == "gone"
    for act in (controller.kill, controller.pause):
        result = act(ref, "test", "test")
        assert not result.ok and result.pids == () and "reused" in result.message
    assert psutil.Process(second.pid).status() not in (psutil.STATUS_STOPPED, "zombie")
    assert second.poll() is None and not gone(second.pid)


@pytest.mark.parametrize(
    ("exe", "argv", "expected"),
    [
        ("{home}/.local/share/claude/versions/2.0.14", ["claude", "-p", "x"], "claude"),
        ("/opt/homebrew/Caskroom/claude-code/2.0.14/claude", ["claude"], "claude"),
        (
            "{npm}/lib/node_modules/@openai/codex/vendor/x86_64-unknown-linux-musl/codex/codex",
            ["codex", "exec"],
            "codex",
        ),
        ("{home}/.vscode/extensions/openai.chatgpt-0.4.1/bin/linux-x86_64/codex", [], "codex"),
        ("/usr/bin/node", ["node", "{npm}/bin/claude", "--resume"], "claude"),
        ("/usr/bin/node", ["node", "--no-warnings", "{npm}/bin/codex"], "codex"),
        ("/usr/bin/node", ["node", "{npm}/bin/gemini"], "gemini"),
        ("/usr/local/bin/bun", ["bun", "run", "{npm}/bin/opencode"], "opencode"),
        ("/usr/bin/node", ["node", "{npm}/bin/openclaw", "gateway"], "openclaw"),
        ("/usr/bin/node", ["claude", "", "", ""], "claude"),  # process.title over its argv
        ("/usr/bin/node", ["codex"], ""),  # exec -a codex node: an argv, not a title
        ("/usr/bin/python3.11", ["python3", "claude.py"], ""),
        ("/usr/bin/python3.11", ["python3", "{home}/claude"], ""),
        ("/usr/bin/sleep", ["claude", "600"], ""),  # exec -a claude sleep
        ("{home}/bin/claude", ["claude"], ""),  # a binary merely named claude
        ("/usr/bin/node", ["node", "{home}/claude.js"], ""),
        ("/usr/bin/node", ["claude", "server.js"], ""),  # exec -a claude node server.js
        ("/usr/bin/node", ["node", "-e", "{npm}/bin/claude"], ""),
        ("/usr/bin/python3", ["python3", "-m", "tokentop.demo.agent"], ""),  # demo: writers only
    ],
)
def test_agents_are_recognised_by_install_layout_not_by_name(
    tmp_path: Path, exe: str, argv: list[str], expected: str
) -> None:
    from tokentop.processes.installs import agent_install

    npm = tmp_path / "npm"
    body = fake_agents.SLEEPER
    fake_agents.npm_package(npm, "@anthropic-ai/claude-code", "cli.js", "claude", body)
    fake_agents.npm_package(npm, "@openai/codex", "bin/codex.js", "codex", body)
    fake_agents.npm_package(npm, "@google/gemini-cli", "dist/index.js", "gemini", body)
    fake_agents.npm_package(npm, "opencode-ai", "bin/opencode", "opencode", body)
    fake_agents.npm_package(npm, "openclaw", "openclaw.mjs", "openclaw", body)
    where = {"home": str(tmp_path / "home"), "npm": str(npm)}
    cmdline = [arg.format(**where) for arg in argv]
    assert agent_install(exe.format(**where), cmdline, str(tmp_path)) == expected


def test_run_never_acts_for_a_session_another_agent_runs_in_its_cwd(
    tmp_path: Path, groups: list[int]
) -> None:
    """`tokentop run` links new transcripts of its cwd; one that the hook records for another
    live agent is not its child's, so its budget stops neither."""
    from test_runner import Sandbox

    box = Sandbox(tmp_path)
    other = start([str(fake_agents.native_claude(tmp_path / "home")), "600"], groups, cwd=box.work)
    started = psutil.Process(other.pid).create_time()
    registry = box.data / "tokentop" / "sessions.jsonl"
    append(registry, SessionRecord("claude", SESSION_B, other.pid, started, "hook", time.time()))
    child = [sys.executable, "-c", "import time; time.sleep(4)"]
    run = box.start("--budget-tokens", "1000", "--on-budget", "kill", agent=child)
    groups.append(run.pid)
    assert wait_until(lambda: bool(psutil.Process(run.pid).children()))
    claude_session(box.claude, SESSION_B, box.work, 9_000)  # written by the other agent
    _, err = run.communicate(timeout=TIMEOUT)
    assert run.returncode == 0, err  # its own child ended by itself
    assert f"not acted: claude:{SESSION_B} runs in pid {other.pid}" in err
    assert other.poll() is None
    assert [r.how for r in box.launched()] == ["hook"]  # not claimed as run's own session


def test_hook_escalation_never_kills_a_recorded_process_that_is_no_agent(
    tmp_path: Path, groups: list[int]
) -> None:
    """An ignored soft stop escalates to kill only a known agent install: a hook record that
    names `python3 claude.py` (as an older tokentop could write) is not acted on."""
    from claude_lines import write_transcript as write
    from test_hook import CWD, SESSION, hook_json, run_hook
    from tokentop.processes.registry import SoftStopRecord, read

    transcript = tmp_path / "claude" / "projects" / "-home-dev-shop" / f"{SESSION}.jsonl"
    write(transcript, SESSION, CWD, [response(SESSION, CWD, 3_000, f"t{i}") for i in range(3)])
    (tmp_path / "claude.py").write_text("import time\ntime.sleep(600)\n")
    script = start([shutil.which("python3") or sys.executable, "claude.py"], groups, cwd=tmp_path)
    started = psutil.Process(script.pid).create_time()
    registry = tmp_path / "registry.jsonl"
    append(registry, SessionRecord("claude", SESSION, script.pid, started, "hook", time.time()))
    config = (
        "[budgets]\ntokens = 5000\n"
        "[policy.soft_stop]\nthen = 'kill'\nafter_responses = 1\nafter_s = 0\n"
    )
    assert run_hook(tmp_path, config, hook_json(tmp_path)).returncode == 2
    with transcript.open("a") as fh:  # the agent ignored the stop
        fh.write("\n".join(response(SESSION, CWD, 3_000, "one more")) + "\n")
    assert run_hook(tmp_path, config, hook_json(tmp_path)).returncode == 2  # still blocked
    states = [r.state for r in read(registry)[0] if isinstance(r, SoftStopRecord)]
    assert states == ["blocked"]  # not escalated
    time.sleep(1.0)  # an escalation helper, had one been started, acts within this
    assert script.poll() is None


def test_the_confirm_says_plainly_when_a_process_is_a_guess() -> None:
    """From the keys a person may act on a guess, after a confirm that says it is one."""
    from tokentop.ui.process_actions import Step, confirm_body
    from ui_fakes import FakeRef, make_session

    session = make_session("s1")

    def body(how: str, confident: bool) -> str:
        ref = FakeRef(7, 1.0, ("claude",), how, confident)
        return confirm_body([Step("kill", session, ref)], []).plain

    assert "guess" not in body("hook", True) and "guess" not in body("open-file", True)
    alone = body("heuristic", True)
    assert "This process is a guess" in alone and "Ambiguous" not in alone
    assert "Ambiguous: another live session" in body("heuristic", False)


@fake_agents.needs_node
def test_an_npm_agent_that_sets_its_title_is_still_found(tmp_path: Path, groups: list[int]) -> None:
    """Claude Code sets process.title = "claude": its argv then no longer names cli.js."""
    body = "process.title = 'claude';\n" + fake_agents.SLEEPER
    agent = start(fake_agents.npm_claude(tmp_path / "npm", body), groups, cwd=tmp_path)
    from tokentop.processes.finding import find_agent_processes

    def titled() -> bool:
        return psutil.Process(agent.pid).cmdline()[0] == "claude"

    assert wait_until(titled)
    found = {ref.pid: ref.agent for ref in find_agent_processes()}
    assert found.get(agent.pid) == "claude"


@fake_agents.needs_node
def test_a_stock_node_under_exec_a_holding_a_rollout_is_no_agent(
    tmp_path: Path, groups: list[int]
) -> None:
    """`bash -c "exec -a codex node >> rollout-….jsonl"`: a stock node reading its program
    from a pipe, with argv exactly `codex` and the rollout open for append. Its argv is all
    it has of an agent, so it is neither an agent nor the rollout's mapped process."""
    from tokentop.processes.finding import find_agent_processes, is_agent

    rollout = tmp_path / "sessions" / "rollout-2026-12-02T10-00-00-0199a1b2.jsonl"
    rollout.parent.mkdir(parents=True)
    rollout.write_text("")
    shell = f'exec -a codex {fake_agents.NODE} >> "{rollout}"'
    look_alike = start(["bash", "-c", shell], groups, stdin=subprocess.PIPE)
    assert wait_until(lambda: psutil.Process(look_alike.pid).cmdline() == ["codex"])
    assert not is_agent(look_alike.pid)
    assert find_by_open_file(rollout) is None
    assert look_alike.pid not in {ref.pid for ref in find_agent_processes()}
