"""One hook call, answered by a worker the hook server forked ahead of it.

A spare worker first warms itself (a made-up call in the server's throwaway folder, so the
pages a call touches are its own before a real call comes, and no copy-on-write fault or
first-call work lands on that call's path), then waits on the listening socket. The worker
that takes a connection checks that it comes from a process exactly as privileged as the
server (`hook_peer`: same user, namespaces, root, capabilities, NoNewPrivs, seccomp, LSM label
and interpreter; anything else is closed unread), tells the server (which forks the next
spare), reads the client's request (`commands/hook.py: request`), says it took it, waits
for the client's GO, then becomes the client for the length of the call: its environment
(and time zone), working folder and umask. It answers with `hook_answer.answer`, the agent
looked for among the client's ancestors, and sends back the exit status, stdout and stderr.
A watcher thread ends the worker the moment the client goes, as the hook would have ended.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import sys
import threading
import time

from tokentop.commands import hook_peer
from tokentop.commands import hook_wire as wire

TYPE_CHECKING = False
if TYPE_CHECKING:
    import socket
    from collections.abc import Callable

REQUEST_WAIT_S = 2.0
"""A worker's wait for the request's bytes and for GO: a client sends both at once."""
GONE = select.POLLHUP | select.POLLERR | select.POLLNVAL | select.POLLRDHUP
EXIT_CLIENT_GONE = 3


class Request:
    """A call as the client sent it (fields in `hook.request`'s order)."""

    def __init__(self, reader: wire.FrameReader) -> None:
        self.cwd = reader.field()
        self.umask = int(reader.field() or b"22", 8) & 0o777
        self.registry = os.fsdecode(reader.field())
        self.config = os.fsdecode(reader.field())
        count = int(reader.field())
        if not 0 <= count <= wire.MAX_FIELDS:
            raise ValueError("too many variables")
        self.env = [reader.field() for _ in range(count)]
        self.stdin = reader.field()


Stamps = dict[str, tuple[int, int, int]]
PREFAULT_BYTES = 2 << 20
"""Heap a spare touches and frees while it waits, so a call's allocations (a session's cached
keys and counters, ~2 MB for 12,000 responses) find faulted-in pages instead of ~500 fresh
ones (~1 ms on the call's path)."""


class Spare:
    """A worker waiting for one call (`run` returns its exit status)."""

    def __init__(
        self, listener: socket.socket, reports: int, life: int, stamps: Stamps, warm_dir: str
    ) -> None:
        self.listener = listener
        self.reports = reports
        self.life = life
        self.stamps = stamps
        self.warm_dir = warm_dir

    def run(self, context: bytes) -> int:
        """`context`: the server's privilege context, which a client must have."""
        with contextlib.suppress(Exception):  # a failed warm-up only costs the call time
            warm_up(self.warm_dir, calls=1)
            _prefault_heap()
        self.listener.setblocking(False)  # every spare polls it: one accepts, others go on
        taken = self._accept(context)
        if taken is None:
            return 0  # the server has gone
        conn, client = taken
        os.write(self.reports, b"took %d\n" % os.getpid())
        self.listener.close()
        stale = source_stamps(self.stamps) != self.stamps
        code = work(conn, client, stale)
        if stale:
            os.write(self.reports, b"stale\n")  # the server leaves; the client starts anew
        return code

    def _accept(self, context: bytes) -> tuple[socket.socket, int] | None:
        """The next connection from a process exactly as privileged as the server
        (`hook_peer`) and that process's pid; None once the server has gone (a call already
        queued is still taken). Any other connection is closed before a byte is read."""
        while True:
            ready = select.select([self.listener.fileno(), self.life], [], [])[0]
            try:
                conn, _ = self.listener.accept()
            except BlockingIOError:
                if self.life in ready:
                    return None
                continue  # another spare took it
            conn.setblocking(True)
            pid = hook_peer.trusted_peer(conn, context)
            if pid is not None:
                return conn, pid
            conn.close()  # another user's, a sandbox's, or one we cannot see: unanswered


def warm_up(folder: str, calls: int) -> None:
    """Answer made-up calls in `folder` (an empty transcript, an empty config), so a worker
    starts where a process's second call would: msgspec has resolved its types' annotations,
    the regexes are compiled, the code's pages are this process's own."""
    import json

    from tokentop.commands.hook_answer import answer

    if not os.path.isdir(folder):
        return  # the server is leaving and removed it: a spare must not make it again
    saved = dict(os.environ)
    try:
        for name in ("XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME"):
            os.environ[name] = os.path.join(folder, name.lower())
            os.makedirs(os.path.join(folder, name.lower(), "tokentop"), exist_ok=True)
        open(os.path.join(folder, "xdg_config_home", "tokentop", "config.toml"), "a").close()
        transcript = os.path.join(folder, "warm.jsonl")
        open(transcript, "a").close()
        event = {"session_id": "warm", "transcript_path": transcript}
        raw = json.dumps(event | {"hook_event_name": "PreToolUse"}).encode()
        for _ in range(calls):
            answer(raw, os.path.join(folder, "registry.jsonl"), None, io.StringIO())
    finally:
        os.environ.clear()
        os.environ.update(saved)
    first = threading.Thread(target=int)  # a process's first thread costs the most to start
    first.start()
    first.join()  # and none may run when the server forks


def _prefault_heap() -> None:
    raised = bytes(PREFAULT_BYTES)  # calloc'd, so never touched; freeing it raises glibc's
    del raised  # mmap threshold to its size, so the pieces below come from the heap
    pieces = [bytearray(PREFAULT_BYTES // 2) for _ in range(2)]  # zeroed: faulted in here
    del pieces  # and kept by the heap for the call


def source_stamps(like: Stamps | None = None) -> Stamps:
    """(inode, mtime, size) of every file the answer depends on that is not Python's own
    (or of those `like` names): any change means new code or data (`stamped_files`)."""
    paths = list(like) if like is not None else stamped_files()
    stamps: Stamps = {}
    for path in paths:
        try:
            st = os.stat(path)
            stamps[path] = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError:
            stamps[path] = (0, 0, 0)
    return stamps


def stamped_files() -> list[str]:
    """The files of every module loaded from outside Python's standard library (tokentop's,
    msgspec's, psutil's: an upgrade of any changes them), the folders on the import path
    outside it (installing or removing a package changes its folder), and tokentop's data
    files (the bundled prices, read once and kept). The standard library changes only with
    Python, and a new Python has a server of its own (`hook_wire.identity`)."""
    import tokentop

    modules = [getattr(module, "__file__", None) for module in list(sys.modules.values())]
    paths = [path for path in [*modules, *sys.path] if isinstance(path, str) and _ours(path)]
    data = os.path.join(os.path.dirname(os.path.abspath(tokentop.__file__)), "data")
    with contextlib.suppress(OSError), os.scandir(data) as entries:
        paths += [entry.path for entry in entries if entry.is_file()]
    return paths


def _ours(path: str) -> bool:
    """Not the standard library's (site-packages may be inside its folder)."""
    stdlib = os.path.dirname(os.__file__) + os.sep
    inside = (path + os.sep).startswith(stdlib)
    return bool(path) and (not inside or "-packages" in path[len(stdlib) :])


def work(conn: socket.socket, client_pid: int, stale: bool = False) -> int:
    """The worker's exit status (0: answered, or nothing to answer)."""
    try:
        request = take(conn, stale)
    except (OSError, ValueError):
        return 0  # the client went (or gave up) before the call was ours: it answers itself
    if request is None:
        return 0
    watch(conn)
    become(request)
    code, out, err = answer(request, client_pid, lambda: still_waiting(conn))
    conn.sendall(wire.frame([b"%d" % code, out, err]))
    return 0


def take(conn: socket.socket, stale: bool) -> Request | None:
    """The call, once the client has said it still waits for it (GO); None when there is
    nothing to answer (a client of another version, a `stale` server's code).

    The whole request is read before any reply: closing a Unix socket with bytes unread
    resets it, and the client would lose the reply (STALE, so it starts a new server)."""
    reader = wire.FrameReader(conn, time.monotonic() + REQUEST_WAIT_S, wire.MAX_FIELD_BYTES)
    if reader.field() != wire.PROTOCOL:
        conn.sendall(wire.STALE)
        return None
    ident, verb = reader.field(), reader.field()
    request = Request(reader) if verb == b"answer" else None
    if request is None or stale or ident != wire.identity():
        conn.sendall(wire.STALE)
        return None
    conn.sendall(wire.ACCEPTED)
    return request if reader.byte() == wire.GO else None


def answer(
    request: Request, client_pid: int, waiting: Callable[[], bool]
) -> tuple[int, bytes, bytes]:
    """`hook_answer.answer` with stdout and stderr caught, as the client's would be written."""
    from tokentop.commands.hook_answer import Asker
    from tokentop.commands.hook_answer import answer as answer_call

    out, err = io.StringIO(), io.StringIO()
    sys.stdout, sys.stderr = out, err
    asker = Asker(client_pid, waiting)
    code = answer_call(request.stdin, request.registry, request.config, err, asker)
    return code, _encoded(out), _encoded(err)


def _encoded(text: io.StringIO) -> bytes:
    return text.getvalue().encode("utf-8", "backslashreplace")  # as Python's stderr writes


def become(request: Request) -> None:
    """Take the client's environment, time zone, umask and working folder."""
    os.environ.clear()
    for entry in request.env:
        name, eq, value = entry.partition(b"=")
        if eq and name:
            os.environb[name] = value
    time.tzset()
    os.umask(request.umask)
    if request.cwd:
        with contextlib.suppress(OSError):  # a folder removed since: options resolve from "/"
            os.chdir(request.cwd)


def still_waiting(conn: socket.socket) -> bool:
    """Whether the client still holds the connection (it does until it has our answer)."""
    return not client_gone(conn, 0)


def client_gone(conn: socket.socket, timeout_ms: int | None) -> bool:
    """Whether the client hung up or shut its end (waiting up to `timeout_ms`; None: until
    it does). A peer's half-close shows as POLLRDHUP, which must be asked for."""
    poller = select.poll()
    poller.register(conn.fileno(), select.POLLRDHUP)
    return any(events & GONE for _, events in poller.poll(timeout_ms))


def watch(conn: socket.socket) -> None:
    """End this worker the moment the client goes (killed, or no longer waiting)."""

    def run() -> None:
        while not client_gone(conn, None):
            pass
        os._exit(EXIT_CLIENT_GONE)

    threading.Thread(target=run, name="tokentop-hook-client", daemon=True).start()
