"""The hook server's trust boundary, with real confined processes: a process of this user that
is more confined than the hook (a sandbox or dev container sharing /tmp or $XDG_RUNTIME_DIR:
NoNewPrivs, seccomp, fewer capabilities, a chroot, another interpreter, its own namespaces)
neither gets the server to act for it, nor poses as the server to the hook, nor has a server
it started answer the hooks outside it (`commands/hook_peer.py`). The peers are built with
the kernel's own calls in `confined_peer.py`; CI runs as root, which every one of them needs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hook_server_helpers import (
    Home,
    call,
    make_home,
    our_socket,
    runtime,
    runtime_folder,
    serve,
    socket_file,
    wait_until,
)
from tokentop.processes.registry import SessionRecord, read

__all__ = ["runtime"]  # a fixture

PEER = Path(__file__).with_name("confined_peer.py")
NAMESPACES = ["mnt", "user", "net", "ipc", "uts", "cgroup", "pid", "time"]
CONFINED = ["no_new_privs", "seccomp", "capability", "chroot", "interpreter", *NAMESPACES]
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="confining a peer needs root (CI)")


def peer_argv(mode: str, verb: str, path: str, tmp_path: Path) -> list[str]:
    python = sys.executable
    if mode == "interpreter":  # the same Python, from another binary
        python = str(tmp_path / "python3")
        shutil.copy2(os.path.realpath(sys.executable), python)
    return [python, str(PEER), mode, verb, path]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Home, str]]:
    """One server for the module's calls, and its socket."""
    with runtime_folder() as folder, pytest.MonkeyPatch.context() as monkeypatch:
        home = make_home(tmp_path_factory.mktemp("served"), folder, config="")
        serve(home)
        yield home, our_socket(folder, monkeypatch)[1]


@pytest.mark.parametrize("mode", ["none", *CONFINED])
def test_a_more_confined_peer_gets_no_answer_and_nothing_done(
    mode: str, served: tuple[Home, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its request names a file it may not write (its registry: here it stands for
    ~/.bashrc under a read-only $HOME); the server closes the connection unread and writes
    nothing. `none`, a peer exactly as privileged, is answered: the peer does reach it."""
    from tokentop.commands.hook import Call, request

    home, path = served
    target = tmp_path / "bashrc"
    target.write_text("# the user's own\n")
    for name, value in home.env().items():
        monkeypatch.setenv(name, value)
    crafted = request(Call(home.event(), {"--registry": str(target)}))
    peer = subprocess.run(peer_argv(mode, "call", path, tmp_path), input=crafted,
                          capture_output=True, timeout=60)  # fmt: skip
    assert peer.returncode == 0, peer.stderr.decode()
    reply = peer.stdout.strip()
    if mode == "none":
        assert reply.startswith(b"b'A") and target.read_text() != "# the user's own\n"
    else:
        assert reply == b"b''"
        assert target.read_text() == "# the user's own\n"


@pytest.mark.parametrize("mode", ["none", "no_new_privs", "seccomp", "user", "pid", "chroot"])
def test_a_more_confined_process_posing_as_the_server_gets_nothing(
    mode: str, tmp_path: Path, runtime: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It binds the hook's own socket and answers "allow" at once: the hook sends it no byte
    (not its environment, with the agent's API keys, nor its folder) and answers itself.
    `none` (exactly as privileged) shows the pose works on a peer the hook must trust."""
    home = make_home(tmp_path / "h", runtime)
    path = our_socket(runtime, monkeypatch)[1]
    fake = subprocess.Popen(peer_argv(mode, "listen", path, tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    assert fake.stdout is not None and fake.stdout.readline() == b"listening\n", fake.stderr
    answer = call(home, TOKENTOP_TEST_SECRET="sk-not-for-the-sandbox")
    received = int(fake.communicate(timeout=30)[0])
    if mode == "none":
        assert received > 0 and answer.code == 0 and b"allow" in answer.out
        return
    assert received == 0
    assert (answer.code, answer.served, answer.out) == (2, False, b""), answer.err
    assert "over budget: 9,000 of 5,000 tokens" in answer.err


def test_a_server_started_in_a_sandbox_never_answers_outside_it(
    tmp_path: Path, runtime: str
) -> None:
    """A hook in a mount namespace where tokentop's files are hidden (a tmpfs over them)
    starts a server with that view; the hooks outside get their own answers: the soft stop
    still blocks, and a session's mapping lands in the registry they see."""
    home = make_home(tmp_path / "h", runtime)
    (tmp_path / "event.json").write_bytes(home.event())
    hook = " ".join(home.argv())
    inside = f"mount -t tmpfs none {home.root} && exec {hook} < {tmp_path / 'event.json'}"
    sandboxed = subprocess.run(["unshare", "--mount", "sh", "-c", inside], env=home.env(),
                               capture_output=True, cwd="/", timeout=60)  # fmt: skip
    assert sandboxed.returncode == 0, sandboxed.stderr.decode()[-2000:]
    assert b"not a transcript file" in sandboxed.stderr  # it sees no transcript
    assert wait_until(lambda: socket_file(runtime) is not None)  # its server, in its view
    started = call(home, "SessionStart")
    assert started.code == 0, started.err
    assert [type(r) for r in read(home.registry)[0]] == [SessionRecord]
    blocked = call(home)
    assert blocked.code == 2, blocked.err
    assert "over budget: 9,000 of 5,000 tokens" in blocked.err
