"""What the hook server refuses and survives, with real processes: a stopped server, a dead
one's socket, another user's listener and calls, a runtime folder that is not private."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from hook_server_helpers import (
    Home,
    call,
    make_home,
    our_socket,
    runtime,
    serve,
    servers,
    serving,
    socket_file,
    wait_until,
)
from tokentop.processes.registry import SoftStopRecord, read

__all__ = ["runtime"]  # a fixture


def test_a_stopped_server_is_skipped_and_never_acts_late(tmp_path: Path, runtime: str) -> None:
    """A server that does not take the call within ACK_WAIT_S is left behind: the client
    answers itself, and the call it had sent is never acted on when the server wakes (its
    client is gone: the worker cannot pin it, and closes the connection unread)."""
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
    other = make_home(tmp_path / "other", runtime)
    assert wait_until(lambda: call(other).served)  # behind the left call in the queue
    time.sleep(0.2)
    assert not home.registry.exists() and not home.actions.exists()  # ...which did nothing


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
    home = make_home(tmp_path / "h", runtime)
    folder, path = our_socket(runtime, monkeypatch)
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
    from tokentop.commands.hook import Call, request

    for name, value in home.env().items():
        monkeypatch.setenv(name, value)
    return request(Call(home.event(), {"--registry": str(home.root / "nobody.jsonl")}))


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
