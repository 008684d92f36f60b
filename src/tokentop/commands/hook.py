"""`python -m tokentop.commands.hook`: the command Claude Code runs before every tool call.

A lean client. It reads the hook's JSON from stdin and hands it, with its environment, working
folder and options, to this user's resident hook server (`commands/hook_server.py`) over a
Unix socket in a private runtime folder, then prints and exits with what the server answers.
Each call is taken by a worker the server forked ahead, which runs exactly the in-process
answer (`commands/hook_answer.py`) and exits, so a call costs Python's start and a round trip
instead of importing msgspec, the engine and the policy (~40 ms) every time.

It never makes the hook slower or less safe than answering itself: when there is no server, or
it is another user's, out of date, slow to take the call (`ACK_WAIT_S`: stopped, hung, every
worker busy) or dies before answering, this process answers in-process as before and starts
a server for next time (detached, its stdio on /dev/null, at most once per
`SPAWN_BACKOFF_S`; at once when the old one was out of date). `TOKENTOP_HOOK_SERVER=off`
answers every call in-process and starts nothing. Anything but the plain call (`install`,
`stop`, `escalate`, `--help`, a terminal on stdin) runs the full command.

Imports: only `hook_wire` and what a bare interpreter has loaded (`tests/test_startup_imports`).
"""

from __future__ import annotations

import io
import os
import sys

from tokentop.commands import hook_peer
from tokentop.commands import hook_wire as wire

SPAWN_BACKOFF_S = 10.0
"""A server that cannot start (or exits at once) is not started again before this."""
OPTIONS = ("--registry", "--config")
"""The options a plain call may carry (each with a value); the server honours them."""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    options = plain_call_options(argv)
    if options is None or not wire.server_wanted() or _stdin_is_terminal():
        wire.import_msgspec()
        from tokentop.commands.hook_answer import main as full_main

        return full_main(argv)
    raw = wire.read_stdin(wire.MAX_INPUT_BYTES + 1, wire.INPUT_WAIT_S)
    call = Call(raw, options)
    path = call.socket_path()
    answer = ask_server(path, call) if path is not None else None
    if isinstance(answer, tuple):
        code, out, err = answer
        _write(1, out)
        _write(2, err)
        return code
    code = answer_in_process(raw, options)
    if path is not None:
        start_server(path, replacing=answer == wire.STALE)
    return code


class Call:
    """A plain call as the server would get it, and the privilege context it runs in."""

    def __init__(self, raw: bytes, options: dict[str, str]) -> None:
        self.raw = raw
        self.context = hook_peer.own_context()
        try:
            self.cwd = os.getcwdb()
        except OSError:
            self.cwd = b""  # a deleted folder
        self.options = absolute(options, self.cwd)
        """None when an option is relative to a folder that is gone: answered in-process."""

    def socket_path(self) -> str | None:
        """Where this call's server listens; None when the call must answer in-process."""
        folder = wire.runtime_dir()
        if folder is None or self.context is None or self.options is None:
            return None
        return wire.socket_path(folder, wire.server_key(self.context))


def absolute(options: dict[str, str], cwd: bytes) -> dict[str, bytes] | None:
    """The options' paths from "/": the server's worker must open what this process would,
    even when it cannot enter the folder (it would resolve them from "/")."""
    paths = {name: os.fsencode(value) for name, value in options.items()}
    if any(not os.path.isabs(path) for path in paths.values()) and not cwd:
        return None
    return {name: os.path.join(cwd, path) for name, path in paths.items()}


def plain_call_options(argv: list[str]) -> dict[str, str] | None:
    """`--registry FILE` / `--config FILE` (or `=FILE`), each at most once; None for anything
    else, which the full command parses (and reports) as before."""
    options: dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if not eq:
            value = next(args, "")
        if name not in OPTIONS or name in options or not value or value.startswith("-"):
            return None
        options[name] = value
    return options


def _stdin_is_terminal() -> bool:
    try:
        return os.isatty(0)
    except OSError:
        return False


def ask_server(path: str, call: Call) -> tuple[int, bytes, bytes] | bytes:
    """The server's (exit status, stdout, stderr), or why there is none (a one-byte reply, or
    b"" when there is no server, it is not exactly as privileged as we are, or it died)."""
    import time

    started = time.monotonic()
    try:
        sock = wire.connect(path, wire.ACK_WAIT_S, call.context or b"")  # checked before we send
    except OSError:
        return b""
    try:
        sock.sendall(request(call))
        reader = wire.FrameReader(sock, started + wire.ACK_WAIT_S, wire.MAX_FIELD_BYTES)
        reply = reader.byte()
        if reply != wire.ACCEPTED:
            return reply
        sock.sendall(wire.GO)  # from here the server's worker acts, and we wait for it
        reader.deadline = time.monotonic() + wire.ANSWER_WAIT_S
        code, out, err = reader.field(), reader.field(), reader.field()
        return int(code), out, err
    except (OSError, ValueError):
        return b""  # a worker killed mid-call, a timeout: answer ourselves
    finally:
        sock.close()  # a worker still running sees us gone and exits at once


def request(call: Call) -> bytes:
    """What the server's worker needs to answer exactly as this process would."""
    umask = os.umask(0o077)
    os.umask(umask)
    env = [b"%s=%s" % item for item in os.environb.items()]
    options = call.options or {}
    head = [wire.PROTOCOL, wire.identity(), b"answer", call.cwd, b"%o" % umask]
    head += [options.get(name, b"") for name in OPTIONS]
    return wire.frame([*head, b"%d" % len(env), *env, call.raw])


def answer_in_process(raw: bytes, options: dict[str, str]) -> int:
    """Today's answer, in this process (the server's worker runs the same function)."""
    wire.import_msgspec()
    from tokentop.commands.hook_answer import answer

    err = sys.stderr if sys.stderr is not None else io.StringIO()  # started with fd 2 closed
    return answer(raw, options.get("--registry"), options.get("--config"), err)


def start_server(path: str, replacing: bool = False) -> None:
    """Start the server for next time, unless one was started lately (`replacing`: the old
    one is out of date and leaving, so start a new one now); never raises.

    posix_spawn, not subprocess (~5 ms of imports): a new session, stdio on /dev/null and the
    inheritable descriptors closed, so Claude Code never waits on pipes the server holds."""
    marker = path.removesuffix(".sock") + ".lock"
    try:
        if not replacing and _recently_touched(marker):
            return
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        os.utime(fd)
        os.close(fd)
        actions: list[tuple[int, ...] | tuple[int, int, str, int, int]] = [
            (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDWR, 0),
            (os.POSIX_SPAWN_DUP2, 0, 1),
            (os.POSIX_SPAWN_DUP2, 0, 2),
        ]
        actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in _inheritable_fds()]
        argv = [sys.executable, "-P", "-m", "tokentop.commands.hook_server", path, str(os.getpid())]
        env = wire.child_env()  # the agent's secrets (API keys) stay out of a resident process
        os.posix_spawn(sys.executable, argv, env, file_actions=actions, setsid=True)
    except (OSError, AttributeError, NotImplementedError):
        pass  # no server: every call answers in-process, as before


def _recently_touched(path: str) -> bool:
    import time

    try:
        return time.time() - os.lstat(path).st_mtime < SPAWN_BACKOFF_S
    except OSError:
        return False


def _inheritable_fds() -> list[int]:
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return []
    return [fd for fd in fds if fd > 2 and _inheritable(fd)]


def _inheritable(fd: int) -> bool:
    try:
        return os.get_inheritable(fd)
    except OSError:
        return False  # the listing's own descriptor, closed since


def _write(fd: int, data: bytes) -> None:
    try:
        while data:
            data = data[os.write(fd, data) :]
    except OSError:
        pass  # Claude Code stopped reading: the exit status still says it


def exit_at_once(status: int) -> None:
    """End a hook call without the interpreter's clean-up (~10 ms once the engine has been
    imported): its files are written and closed, no exit handler is pending (the tests
    hold it to that), and Claude Code waits for the exit."""
    for stream in (sys.stdout, sys.stderr):
        try:  # noqa: SIM105 (contextlib would be one more import for the client)
            stream.flush()
        except (OSError, ValueError, AttributeError):  # AttributeError: None (fd closed)
            pass
    os._exit(status)


if __name__ == "__main__":
    status = main()
    if plain_call_options(sys.argv[1:]) is not None:  # not a verb: the hook's own call
        exit_at_once(status)
    sys.exit(status)
