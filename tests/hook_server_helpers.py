"""What the hook server's tests share: a Claude Code session with tokentop's files beside it,
hook calls as Claude Code makes them, and the server's processes as `ps` shows them.

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
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import psutil
import pytest

import proc_helpers
from claude_lines import response, write_transcript
from tokentop.processes.control import read_action_log
from tokentop.processes.registry import read

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
        hook = [sys.executable, "-P", "-X", "importtime", "-m", "tokentop.commands.hook"]
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
    out: bytes = b""


def answered(done: subprocess.CompletedProcess[bytes]) -> Answer:
    lines = done.stderr.decode(errors="replace").splitlines(keepends=True)
    imports = {line.rsplit("|", 1)[-1].strip() for line in lines if line.startswith("import time:")}
    err = "".join(line for line in lines if not line.startswith("import time:"))
    return Answer(done.returncode, err, "msgspec" not in imports, done.stdout or b"")


def call(home: Home, event: str = "PreToolUse", cwd: Path | None = None, **env: str) -> Answer:
    argv, stdin = home.argv(), home.event(event)
    done = subprocess.run(argv, input=stdin, capture_output=True, env=home.env(**env),
                          cwd=cwd or home.root, timeout=60)  # fmt: skip
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
    with runtime_folder() as folder:
        yield folder


@contextlib.contextmanager
def runtime_folder() -> Iterator[str]:
    folder = tempfile.mkdtemp(prefix="tt-hs-", dir="/tmp")
    try:
        yield folder
    finally:
        stop_servers_in(folder)
        for pid in serving(folder):  # a test that failed may leave a worker in a call
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(folder, ignore_errors=True)


def stop_servers_in(folder: str) -> None:
    """Stop the servers whose sockets are in `folder`, and only those: `tokentop hook stop`
    would stop every one of this user's (a developer's own, in /tmp/tokentop-<uid>)."""
    from tokentop.commands.hook_stop import stop_server

    for path in Path(folder).glob("tokentop*/hook-*.sock"):
        stop_server(str(path))


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


def our_socket(runtime: str, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """The private folder in `runtime` and the socket a hook call started from this test
    (same user, same privileges) uses there."""
    from tokentop.commands import hook_peer, hook_wire

    monkeypatch.setenv("XDG_RUNTIME_DIR", runtime)
    folder, context = hook_wire.runtime_dir(), hook_peer.own_context()
    assert folder is not None and context is not None
    path = hook_wire.socket_path(folder, hook_wire.server_key(context))
    assert path is not None
    return folder, path
