"""The resident hook server, with real processes: `python -m tokentop.commands.hook` as Claude
Code runs it, the server it starts, its forked workers, real Unix sockets
(`hook_server_helpers.py`); what it refuses and survives is in `test_hook_server_safety.py`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

import fake_agents
import proc_helpers
from claude_lines import response
from hook_server_helpers import (
    CWD,
    OVER,
    SESSION,
    Home,
    answered,
    busy_worker,
    call,
    feed_fifo,
    finished,
    logged_action,
    make_home,
    records,
    runtime,
    serve,
    servers,
    socket_file,
    start_call,
    wait_until,
)
from tokentop.commands.hook_wire import ObjectEnd
from tokentop.processes.control import read_action_log
from tokentop.processes.registry import SessionRecord, SoftStopRecord, append, read

__all__ = ["runtime"]  # a fixture
ESCALATION_S = 5.0
"""The helper acts once the worker has exited (well under a second), never PARENT_WAIT_S late."""


def test_a_blocked_call_is_answered_by_the_server_exactly_as_in_process(
    tmp_path: Path, runtime: str
) -> None:
    served = make_home(tmp_path / "a", runtime)
    alone = make_home(tmp_path / "b", runtime)
    serve(make_home(tmp_path / "first", runtime, config=""))
    via_server, in_process = call(served), call(alone, TOKENTOP_HOOK_SERVER="off")
    assert via_server.served and not in_process.served
    assert via_server.code == in_process.code == 2
    assert "over budget: 9,000 of 5,000 tokens" in via_server.err
    assert via_server.err == in_process.err
    assert records(served) == records(alone)
    assert [type(r).__name__ for r in read(served.registry)[0]] == [
        "SessionRecord", "SoftStopRecord",
    ]  # fmt: skip
    logged = [logged_action(home) for home in (served, alone)]
    assert logged[0] == logged[1] and [entry[0] for entry in logged[0]] == ["block"]


@fake_agents.needs_node
def test_session_start_through_the_server_maps_the_agent_above_the_client(
    tmp_path: Path, runtime: str
) -> None:
    """A fake npm `claude` runs the hook through a shell; the server's worker records the
    same agent the in-process hook records: the nearest known agent above the *client*."""
    serve(make_home(tmp_path / "first", runtime, config=""))
    mapped = {}
    for mode in ("on", "off"):
        home = make_home(tmp_path / mode, runtime, config="")
        (home.root / "start.json").write_bytes(home.event("SessionStart"))
        hook = " ".join(home.argv()) + f" < {home.root / 'start.json'} 2> {home.root / 'err'}"
        exe = fake_agents.npm_claude(home.root / "npm", fake_agents.SHELL)
        env = home.env(TOKENTOP_HOOK_SERVER=mode)
        agent = subprocess.Popen([*exe, hook], env=env, start_new_session=True)
        try:
            assert agent.wait(timeout=60) == 0
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(agent.pid, signal.SIGKILL)
        err = (home.root / "err").read_bytes()
        assert answered(subprocess.CompletedProcess([], 0, b"", err)).served == (mode == "on")
        [record] = read(home.registry)[0]
        assert isinstance(record, SessionRecord)
        assert (record.pid, record.how, record.cwd) == (agent.pid, "hook", CWD)
        mapped[mode] = (record.cmdline[1:], record.transcript_path.removeprefix(str(home.root)))
    assert mapped["on"][1] == mapped["off"][1]
    assert [Path(a).name for a in mapped["on"][0]] == [Path(a).name for a in mapped["off"][0]]


def test_a_worker_killed_mid_call_leaves_the_answer_to_the_client(
    tmp_path: Path, runtime: str
) -> None:
    server = serve(make_home(tmp_path / "first", runtime, config=""))
    home = make_home(tmp_path / "h", runtime, config=None)
    os.mkfifo(home.config)  # the worker blocks reading its config until the test writes it
    client = start_call(home)
    assert wait_until(lambda: busy_worker(server, home.root) is not None)
    worker = busy_worker(server, home.root)
    assert worker is not None
    os.kill(worker, signal.SIGKILL)
    assert wait_until(lambda: proc_helpers.gone(worker))
    assert feed_fifo(home.config, OVER)  # now read by the client, answering itself
    answer = finished(client)
    assert (answer.code, answer.served) == (2, False), answer.err
    assert "over budget: 9,000 of 5,000 tokens" in answer.err
    states = [r.state for r in read(home.registry)[0] if isinstance(r, SoftStopRecord)]
    assert states == ["blocked"]
    home.config.unlink()
    home.config.write_text(OVER)
    assert call(home).served  # the server lives on, with a new spare
    assert servers(runtime) == [server]


def test_a_client_killed_mid_call_ends_its_worker(tmp_path: Path, runtime: str) -> None:
    """As an in-process hook killed by Claude Code stops there, so does its worker."""
    server = serve(make_home(tmp_path / "first", runtime, config=""))
    home = make_home(tmp_path / "h", runtime, config=None)
    os.mkfifo(home.config)
    client = start_call(home)
    assert wait_until(lambda: busy_worker(server, home.root) is not None)
    worker = busy_worker(server, home.root)
    assert worker is not None
    client.kill()
    client.communicate(timeout=10)
    assert wait_until(lambda: proc_helpers.gone(worker))
    with pytest.raises(OSError):  # nobody waits on the config any more
        os.open(home.config, os.O_WRONLY | os.O_NONBLOCK)


def test_sessions_are_served_at_once(tmp_path: Path, runtime: str) -> None:
    """One session's call held up (its config is a FIFO) never holds another's; and several
    calls at once are all answered by the server."""
    server = serve(make_home(tmp_path / "first", runtime, config=""))
    held = make_home(tmp_path / "held", runtime, config=None)
    os.mkfifo(held.config)
    slow = start_call(held)
    assert wait_until(lambda: busy_worker(server, held.root) is not None)
    other = make_home(tmp_path / "other", runtime, session="0e6f7a8b-9c0d-4e1f-8a2b-3c4d5e6f7a8b")
    meanwhile = call(other)
    assert (meanwhile.code, meanwhile.served) == (2, True), meanwhile.err
    assert slow.poll() is None  # still held
    assert feed_fifo(held.config, OVER)
    released = finished(slow)
    assert (released.code, released.served) == (2, True), released.err
    homes = [make_home(tmp_path / f"s{i}", runtime, session=f"{i}" * 8) for i in range(4)]
    answers = [finished(popen) for popen in [start_call(home) for home in homes]]
    assert [(a.code, a.served) for a in answers] == [(2, True)] * 4, [a.err for a in answers]


def test_the_server_leaves_when_idle_or_when_its_socket_goes(tmp_path: Path, runtime: str) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    home = make_home(tmp_path / "h", runtime)
    server = serve(home, TOKENTOP_HOOK_IDLE_S="1", TMPDIR=str(scratch))
    assert wait_until(lambda: len(psutil.Process(server).children()) == 2)  # its spares
    workers = [c.pid for c in psutil.Process(server).children()]
    assert [p.suffix for p in Path(runtime, "tokentop").glob("hook-*.warm")] == [".warm"]
    assert wait_until(lambda: proc_helpers.gone(server))
    assert wait_until(lambda: all(proc_helpers.gone(pid) for pid in workers))
    assert socket_file(runtime) is None and not any(Path(runtime, "tokentop").glob("*.warm"))
    assert not any(scratch.iterdir())  # nothing in TMPDIR: the warm-up folder is private
    other = tempfile.mkdtemp(prefix="tt-hs-", dir="/tmp")
    try:
        server = serve(Home(home.root, other))
        socket_path = socket_file(other)
        assert socket_path is not None
        socket_path.unlink()  # e.g. the runtime folder cleaned at logout
        assert wait_until(lambda: proc_helpers.gone(server))
    finally:
        shutil.rmtree(other, ignore_errors=True)


@pytest.mark.parametrize(
    "edited",
    [
        "tokentop/commands/hook_answer.py",
        "tokentop/data/prices.json",
        "msgspec/__init__.py",
        "n.py",
    ],
)
def test_an_out_of_date_server_hands_over_to_a_new_one(
    tmp_path: Path, runtime: str, edited: str
) -> None:
    """An upgrade (here: an edit) of the code a server loaded, of the prices it read once, of
    a dependency, or a module installed on the import path (`n.py`): the next call gets the
    new files in-process at once, and the one after it a new server."""
    import msgspec

    pkg = tmp_path / "pkg"
    for module in (__import__("tokentop"), msgspec):
        source = Path(module.__file__).parent
        shutil.copytree(source, pkg / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    home = make_home(tmp_path / "h", runtime)
    pythonpath = str(pkg)
    old = serve(home, PYTHONPATH=pythonpath)
    assert call(home, PYTHONPATH=pythonpath).served
    with (pkg / edited).open("a") as fh:
        fh.write("\n" if edited.endswith(".json") else "\n# an edit\n")
    stale = call(home, PYTHONPATH=pythonpath)
    assert (stale.code, stale.served) == (2, False), stale.err
    assert wait_until(lambda: proc_helpers.gone(old))
    assert wait_until(
        lambda: len(servers(runtime)) == 1 and call(home, PYTHONPATH=pythonpath).served
    )
    assert servers(runtime) != [old]


def test_hook_stop_stops_the_server_and_its_workers(tmp_path: Path, runtime: str) -> None:
    home = make_home(tmp_path / "h", runtime)
    server = serve(home)
    workers = [c.pid for c in psutil.Process(server).children()]
    argv = [sys.executable, "-m", "tokentop.cli", "hook", "stop"]
    done = subprocess.run(argv, env=home.env(), capture_output=True, text=True, timeout=60)
    assert done.returncode == 0
    assert done.stdout == f"Stopped the tokentop hook server (pid {server}).\n"
    assert proc_helpers.gone(server) or wait_until(lambda: proc_helpers.gone(server))
    assert wait_until(lambda: all(proc_helpers.gone(pid) for pid in workers))
    assert socket_file(runtime) is None
    again = subprocess.run(argv, env=home.env(), capture_output=True, text=True, timeout=60)
    assert again.stdout == "No tokentop hook server is running.\n"


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A native Claude Code install (escalation acts only on a known agent install)."""
    with fake_agents.running_native_claude(tmp_path / "install") as popen:
        yield popen


def test_an_ignored_soft_stop_escalates_through_the_server(
    tmp_path: Path, runtime: str, agent: subprocess.Popen[bytes]
) -> None:
    """The helper started by a worker acts once that worker has exited (the agent is never
    its ancestor), as it does once an in-process hook has exited. It never imports from the
    agent's folder (a `select.py` there: `subprocess` imports `select`)."""
    project, marker = tmp_path / "project", tmp_path / "ran"
    project.mkdir()
    (project / "select.py").write_text(f"open({str(marker)!r}, 'w').close()\n")
    serve(make_home(tmp_path / "first", runtime, config=""))
    config = OVER + "[policy.soft_stop]\nthen = 'kill'\nafter_responses = 1\nafter_s = 0\n"
    home = make_home(tmp_path / "h", runtime, config=config)
    started = psutil.Process(agent.pid).create_time()
    append(home.registry, SessionRecord("claude", SESSION, agent.pid, started, "hook", time.time()))
    first = call(home, cwd=project)
    assert (first.code, first.served) == (2, True), first.err
    assert agent.poll() is None
    with home.transcript.open("a") as fh:  # ...but it answered with another tool call
        fh.write("\n".join(response(SESSION, CWD, 3_000, "one more")) + "\n")
    second = call(home, cwd=project)
    assert (second.code, second.served) == (2, True), second.err
    killed = proc_helpers.wait_until(lambda: agent.poll() is not None, timeout=ESCALATION_S)
    assert killed, "the agent was not killed at once"  # not after the helper's 10 s wait
    kills = lambda: [a for a in read_action_log(home.actions)[0] if a.action == "kill"]  # noqa: E731
    assert wait_until(lambda: bool(kills()))
    log = read_action_log(home.actions)[0]
    assert [(a.action, a.ok, a.pid, a.actor) for a in log] == [
        ("block", True, agent.pid, "hook"),
        ("kill", True, agent.pid, "hook"),
    ]
    assert not marker.exists()


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (b'{"a": 1}', True),
        (b' {"a": {"b": [1, {"c": 2}]}}\n', True),
        (b'{"a": "}"', False),  # the brace is in a string
        (b'{"a": "\\"}"}', True),  # an escaped quote does not end the string
        (b'{"a": "\\\\"}', True),  # an escaped backslash does not escape the quote
        (b'{"a": "x', False),
        (b'{"a": [1, 2}', False),
        (b'{"a": {"b": 1}', False),
        (b"[1]", False),
        (b"", False),
    ],
)
def test_the_client_knows_a_whole_json_object(data: bytes, whole: bool) -> None:
    assert ObjectEnd().feed(data) is whole
