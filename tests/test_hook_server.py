"""The resident hook server, with real processes: `python -m tokentop.commands.hook` as Claude
Code runs it, the server it starts, its forked workers, real Unix sockets.

Whether a call was served is read from the client itself: it runs with `-X importtime`, and a
call answered in-process imports msgspec, a served one does not.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psutil
import pytest

import fake_agents
import proc_helpers
from claude_lines import response, write_transcript
from tokentop.commands.hook_wire import whole_json
from tokentop.processes.control import read_action_log
from tokentop.processes.finding import launch
from tokentop.processes.registry import SessionRecord, SoftStopRecord, append, read

SESSION = "5b0e1d2c-3a4b-4c5d-8e6f-7a8b9c0d1e2f"
CWD = "/home/dev/shop"
OVER = "[budgets]\ntokens = 5000\n"
wait_until = partial(proc_helpers.wait_until, timeout=20.0)


@dataclass
class Home:
    """One Claude Code session (three ~3k-token responses) with tokentop's files beside it."""

    root: Path
    runtime: str
    session: str = SESSION

    @property
    def transcript(self) -> Path:
        return self.root / "claude" / "projects" / "-home-dev-shop" / f"{self.session}.jsonl"

    @property
    def registry(self) -> Path:
        return self.root / "registry.jsonl"

    @property
    def config(self) -> Path:
        return self.root / "config.toml"

    @property
    def actions(self) -> Path:
        return self.root / "data" / "tokentop" / "actions.jsonl"

    def env(self, **extra: str) -> dict[str, str]:
        dirs = {"XDG_CACHE_HOME": "cache", "XDG_DATA_HOME": "data", "XDG_CONFIG_HOME": "cfg"}
        env = {**os.environ, **{k: str(self.root / v) for k, v in dirs.items()}}
        return env | {"XDG_RUNTIME_DIR": self.runtime} | extra

    def event(self, name: str = "PreToolUse") -> bytes:
        payload = {
            "session_id": self.session, "transcript_path": str(self.transcript), "cwd": CWD,
            "hook_event_name": name, "tool_name": "Bash", "tool_input": {"command": "ls"},
        }  # fmt: skip
        return json.dumps(payload).encode()

    def argv(self) -> list[str]:
        hook = [sys.executable, "-X", "importtime", "-m", "tokentop.commands.hook"]
        return [*hook, "--registry", str(self.registry), "--config", str(self.config)]


def make_home(root: Path, runtime: str, config: str = OVER, session: str = SESSION) -> Home:
    home = Home(root, runtime, session)
    lines = [response(session, CWD, 3_000, f"t{i}") for i in range(3)]
    write_transcript(home.transcript, session, CWD, lines)
    if config is not None:
        home.config.write_text(config)
    return home


@dataclass
class Answer:
    code: int
    err: str
    """The hook's own stderr, without the import-time lines."""
    served: bool


def answered(done: subprocess.CompletedProcess[bytes]) -> Answer:
    lines = done.stderr.decode(errors="replace").splitlines(keepends=True)
    imports = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}
    err = "".join(line for line in lines if not line.startswith("import time:"))
    return Answer(done.returncode, err, "msgspec" not in imports)


def call(home: Home, event: str = "PreToolUse", **env: str) -> Answer:
    argv, stdin = home.argv(), home.event(event)
    done = subprocess.run(argv, input=stdin, capture_output=True, env=home.env(**env),
                          cwd=home.root, timeout=60)  # fmt: skip
    return answered(done)


def start_call(home: Home) -> subprocess.Popen[bytes]:
    popen = subprocess.Popen(home.argv(), stdin=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=home.env(), cwd=home.root)  # fmt: skip
    assert popen.stdin is not None
    popen.stdin.write(home.event())
    popen.stdin.close()
    popen.stdin = None  # sent: communicate() only reads
    return popen


def finished(popen: subprocess.Popen[bytes]) -> Answer:
    _, err = popen.communicate(timeout=60)
    return answered(subprocess.CompletedProcess(popen.args, popen.returncode, b"", err))


@pytest.fixture
def runtime() -> Iterator[str]:
    """A private runtime folder (short: a socket's path is < 108 bytes); its servers are
    stopped at the end, and any left are killed by pid."""
    folder = tempfile.mkdtemp(prefix="tt-hs-", dir="/tmp")
    yield folder
    stop = [sys.executable, "-m", "tokentop.commands.hook", "stop"]
    subprocess.run(stop, env={**os.environ, "XDG_RUNTIME_DIR": folder}, capture_output=True)
    for pid in serving(folder):  # a test that failed may leave a worker in a call
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    shutil.rmtree(folder, ignore_errors=True)


def serving(folder: str) -> dict[int, int]:
    """pid -> parent pid of the hook servers and workers serving a socket in `folder`."""
    found = {}
    for proc in psutil.process_iter(["pid", "ppid", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        serves = any(arg.startswith(folder) for arg in cmdline)
        if "tokentop.commands.hook_server" in cmdline and serves:
            found[proc.info["pid"]] = proc.info["ppid"]
    return found


def servers(folder: str) -> list[int]:
    """Hook servers (not their workers) serving a socket in `folder`."""
    found = serving(folder)
    return [pid for pid, parent in found.items() if parent not in found]


def socket_file(folder: str) -> Path | None:
    return next(Path(folder, "tokentop").glob("hook-*.sock"), None)


def serve(home: Home, **env: str) -> int:
    """Start the server as a first call does (that call answers in-process); its pid."""
    first = call(home, **env)
    assert not first.served and first.code in (0, 2), first.err
    assert wait_until(lambda: socket_file(home.runtime) is not None), "no server started"
    [pid] = servers(home.runtime)
    return pid


def busy_worker(server: int, cwd: Path) -> int | None:
    """The worker in a call from a client working in `cwd` (spares wait in "/")."""
    for child in psutil.Process(server).children():
        with contextlib.suppress(psutil.Error):
            if child.cwd() == str(cwd):
                return child.pid
    return None


def feed_fifo(fifo: Path, text: str) -> bool:
    """Write `text` into `fifo` once a reader has opened it (False if none does)."""
    fd = -1

    def opened() -> bool:
        nonlocal fd
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError:
            return False
        return True

    if not wait_until(opened):
        return False
    os.write(fd, text.encode())
    os.close(fd)
    return True


def records(home: Home) -> list[tuple[object, ...]]:
    """The registry's records without their times, paths relative to the home."""
    root = str(home.root)
    return [
        tuple(
            value.replace(root, "~") if isinstance(value, str) else value
            for field in r.__struct_fields__
            if field != "timestamp" and (value := getattr(r, field)) is not None
        )
        for r in read(home.registry)[0]
    ]


def logged_action(home: Home) -> list[tuple[object, ...]]:
    return [(a.action, a.ok, a.origin, a.actor, a.reason) for a in read_action_log(home.actions)[0]]


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


def test_a_stopped_server_is_skipped_and_never_acts_late(tmp_path: Path, runtime: str) -> None:
    """A server that does not take the call within ACK_WAIT_S is left behind: the client
    answers itself, and the call it had sent is never acted on when the server wakes."""
    server = serve(make_home(tmp_path / "first", runtime, config=""))
    frozen = [server, *(c.pid for c in psutil.Process(server).children())]
    home = make_home(tmp_path / "h", runtime)
    for pid in frozen:
        os.kill(pid, signal.SIGSTOP)
    try:
        answer = call(home)
    finally:
        moved = [p.rename(p.with_name(p.name + ".seen")) for p in (home.registry, home.actions)]
        for pid in frozen:
            os.kill(pid, signal.SIGCONT)
    assert (answer.code, answer.served) == (2, False), answer.err
    assert [r.state for r in read(moved[0])[0] if isinstance(r, SoftStopRecord)] == ["blocked"]
    assert wait_until(lambda: any(proc_helpers.gone(pid) for pid in frozen[1:]))  # it took it
    time.sleep(0.2)
    assert not home.registry.exists() and not home.actions.exists()  # ...and did nothing


def test_a_leftover_socket_is_replaced_by_a_new_server(tmp_path: Path, runtime: str) -> None:
    home = make_home(tmp_path / "h", runtime)
    server = serve(home)
    os.kill(server, signal.SIGKILL)  # no clean-up: its socket file stays
    assert wait_until(lambda: not servers(runtime))
    leftover = socket_file(runtime)
    assert leftover is not None and leftover.exists()
    lock = leftover.with_suffix(".lock")
    os.utime(lock, (0, 0))  # as if started long ago: the backoff does not apply
    answer = call(home)  # refused by the dead socket: answers itself, starts a new server
    assert (answer.code, answer.served) == (2, False), answer.err
    assert wait_until(lambda: len(servers(runtime)) == 1 and call(home).served)
    assert servers(runtime) != [server]


ROOT_ONLY = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
NOBODY = 65534
LISTENER = """
import os, socket, sys
sock = socket.socket(socket.AF_UNIX)
sock.bind(sys.argv[1])
os.chmod(sys.argv[1], 0o777)
os.setgroups([]); os.setresgid(*[{id}] * 3); os.setresuid(*[{id}] * 3)
sock.listen(4)
print("listening", flush=True)
conn, _ = sock.accept()
got = b""
while chunk := conn.recv(65536):
    got += chunk
print(len(got), flush=True)
""".replace("{id}", str(NOBODY))
CALLER = """
import os, socket, sys
os.setgroups([]); os.setresgid(*[{id}] * 3); os.setresuid(*[{id}] * 3)
sock = socket.socket(socket.AF_UNIX)
sock.connect(sys.argv[1])
sock.settimeout(10)
try:
    sock.sendall(sys.stdin.buffer.read())
    print(repr(sock.recv(100)), flush=True)
except (BrokenPipeError, ConnectionResetError):  # closed on us: nothing was answered
    print(repr(b""), flush=True)
""".replace("{id}", str(NOBODY))


@ROOT_ONLY
def test_another_users_listener_gets_nothing_and_another_users_call_no_answer(
    tmp_path: Path, runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tokentop.commands import hook_wire

    home = make_home(tmp_path / "h", runtime)
    monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
    folder = hook_wire.runtime_dir()
    assert folder is not None
    path = hook_wire.socket_path(folder, hook_wire.identity())
    assert path is not None
    fake = subprocess.Popen([sys.executable, "-c", LISTENER, path], stdout=subprocess.PIPE)
    assert fake.stdout is not None and fake.stdout.readline() == b"listening\n"
    answer = call(home)  # sees uid 65534, sends nothing, answers itself, starts our server
    assert fake.stdout.readline() == b"0\n"
    fake.wait(timeout=10)
    assert (answer.code, answer.served) == (2, False), answer.err
    assert wait_until(lambda: len(servers(runtime)) == 1 and call(home).served)
    [server] = servers(runtime)
    for opened in (runtime, folder, path):  # so that another user can reach the socket
        os.chmod(opened, 0o777 if opened == path else 0o711)
    try:
        request = nobody_request(home, monkeypatch)
        caller = subprocess.run([sys.executable, "-c", CALLER, path], input=request,
                                capture_output=True, timeout=30)  # fmt: skip
    finally:
        for opened in (runtime, folder):
            os.chmod(opened, 0o700)
    assert caller.stdout.strip() == b"b''", caller.stderr  # closed unanswered
    assert not (home.root / "nobody.jsonl").exists()
    assert servers(runtime) == [server]


def nobody_request(home: Home, monkeypatch: pytest.MonkeyPatch) -> bytes:
    from tokentop.commands.hook import request

    for name, value in home.env().items():
        monkeypatch.setenv(name, value)
    return request(home.event(), {"--registry": str(home.root / "nobody.jsonl")})


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
    assert any(scratch.iterdir())  # its warm-up folder
    assert wait_until(lambda: proc_helpers.gone(server))
    assert wait_until(lambda: all(proc_helpers.gone(pid) for pid in workers))
    assert socket_file(runtime) is None and not any(scratch.iterdir())
    other = tempfile.mkdtemp(prefix="tt-hs-", dir="/tmp")
    try:
        server = serve(Home(home.root, other))
        socket_path = socket_file(other)
        assert socket_path is not None
        socket_path.unlink()  # e.g. the runtime folder cleaned at logout
        assert wait_until(lambda: proc_helpers.gone(server))
    finally:
        shutil.rmtree(other, ignore_errors=True)


def test_an_out_of_date_server_hands_over_to_a_new_one(tmp_path: Path, runtime: str) -> None:
    """An upgrade (here: an edit) of the code a server loaded: the next call gets the new
    code in-process at once, and the one after it a new server."""
    source = Path(__import__("tokentop").__file__).parent
    copy = tmp_path / "pkg" / "tokentop"
    shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__", "data"))
    (copy / "data").symlink_to(source / "data")
    home = make_home(tmp_path / "h", runtime)
    pythonpath = str(tmp_path / "pkg")
    old = serve(home, PYTHONPATH=pythonpath)
    assert call(home, PYTHONPATH=pythonpath).served
    with (copy / "commands" / "hook_answer.py").open("a") as fh:
        fh.write("\n# an edit\n")
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
    popen, _ = launch([str(fake_agents.native_claude(tmp_path / "install")), "120"])
    yield popen
    with contextlib.suppress(ProcessLookupError):
        os.killpg(popen.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        popen.wait(timeout=5)


def test_an_ignored_soft_stop_escalates_through_the_server(
    tmp_path: Path, runtime: str, agent: subprocess.Popen[bytes]
) -> None:
    """The helper started by a worker acts once that worker has exited (the agent is never
    its ancestor), as it does once an in-process hook has exited."""
    serve(make_home(tmp_path / "first", runtime, config=""))
    config = OVER + "[policy.soft_stop]\nthen = 'kill'\nafter_responses = 1\nafter_s = 0\n"
    home = make_home(tmp_path / "h", runtime, config=config)
    started = psutil.Process(agent.pid).create_time()
    append(home.registry, SessionRecord("claude", SESSION, agent.pid, started, "hook", time.time()))
    first = call(home)
    assert (first.code, first.served) == (2, True), first.err
    assert agent.poll() is None
    with home.transcript.open("a") as fh:  # ...but it answered with another tool call
        fh.write("\n".join(response(SESSION, CWD, 3_000, "one more")) + "\n")
    second = call(home)
    assert (second.code, second.served) == (2, True), second.err
    assert wait_until(lambda: agent.poll() is not None), "the agent was not killed"
    kills = lambda: [a for a in read_action_log(home.actions)[0] if a.action == "kill"]  # noqa: E731
    assert wait_until(lambda: bool(kills()))
    log = read_action_log(home.actions)[0]
    assert [(a.action, a.ok, a.pid, a.actor) for a in log] == [
        ("block", True, agent.pid, "hook"),
        ("kill", True, agent.pid, "hook"),
    ]


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
    assert whole_json(data) is whole


def test_a_runtime_folder_that_is_not_private_is_never_used(tmp_path: Path) -> None:
    """A folder that is a symlink, or open to others (a stranger's in /tmp), is never used:
    every call answers in-process and no server starts."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    runtime, shared = tmp_path / "run", tmp_path / "tmp"
    runtime.mkdir()
    shared.mkdir()
    (runtime / "tokentop").symlink_to(private)
    (shared / f"tokentop-{os.getuid()}").mkdir(mode=0o755)
    home = make_home(tmp_path / "h", str(runtime))
    for _ in range(2):
        answer = call(home, TMPDIR=str(shared))
        assert (answer.code, answer.served) == (2, False), answer.err
    time.sleep(0.5)  # a server, had one been started, would have made its socket by now
    assert not any(private.iterdir()) and not any((shared / f"tokentop-{os.getuid()}").iterdir())
    assert not serving(str(runtime)) and not serving(str(private)) and not serving(str(shared))
