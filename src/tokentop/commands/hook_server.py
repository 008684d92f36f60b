"""`python -m tokentop.commands.hook_server SOCKET`: this user's resident hook server.

`commands/hook.py` starts it (detached, in a session of its own, stdio on /dev/null) when a
hook call found none. It imports what answering needs once, then listens on SOCKET (in the
private runtime folder, see `hook_wire`) and keeps `SPARES` forked workers waiting, each
warmed by a made-up call. A worker takes one call: the client's environment, working folder
and umask, and `hook_answer.answer` run exactly as the client would have run it, the agent
looked for among the *client's* ancestors (its pid from SO_PEERCRED); it sends back the exit
status and output, and exits. One process per call keeps calls independent (one session's
slow first read never holds another's; no state or memory carries over) and exact (each sees
its own environment, as in-process); forking it ahead keeps the fork off the call's path.

Safety, beside the client's own checks:
- one server per socket: it holds an exclusive lock on `hook-<key>.lock` for its life, and
  replaces only a leftover socket at its path (a dead server's);
- only this user's processes are answered (SO_PEERCRED); another's connection is closed;
- a worker acts only after the client says it still waits (GO), and exits at once when the
  client goes (killed, or tired of waiting), as an in-process hook killed with it would;
- out of date: when a tokentop module it loaded changed on disk (an upgrade, an edit), the
  call gets STALE (the client answers itself and starts a new server) and the server exits;
- it exits after `TOKENTOP_HOOK_IDLE_S` seconds (default `IDLE_S`) with no call, when its
  socket is removed or replaced, on SIGTERM, and on `tokentop hook stop`; waiting workers
  exit with it (they watch a pipe only it holds), a worker in a call finishes the call.
Its own failures go to `hook-<key>.log` beside the socket; the hook then answers in-process.
"""

from __future__ import annotations

import contextlib
import os
import select
import stat
import sys
import time

from tokentop.commands import hook_peer
from tokentop.commands import hook_wire as wire

TYPE_CHECKING = False  # typing, socket and the worker are imported once the spawner is gone
if TYPE_CHECKING:
    import socket

IDLE_S = 600.0
IDLE_ENV = "TOKENTOP_HOOK_IDLE_S"
SPARES = 2
"""Workers waiting for a call: two calls at once start at once; a third waits for a fork."""
MAX_WORKERS = 16
"""Workers in calls or waiting; beyond it a call waits (and past ACK_WAIT_S answers itself)."""
MAX_SPARE_DEATHS = 5
"""Workers that died waiting, in a row: something is broken, so the server leaves."""
LOCK_WAIT_S = 2.0
"""How long a new server waits for an exiting one to let go of the lock."""
POLL_S = 1.0
SPARE_EXIT_WAIT_S = 2.0
"""How long a leaving server waits for its spares (a warm-up takes ~20 ms)."""
SPAWNER_WAIT_S = 2.0
LOG_MAX_BYTES = 64 << 10
WARM_MODULES = (
    "tokentop.commands.hook_answer",
    "tokentop.commands.hook_escalation",
    "tokentop.commands.hook",
    "tokentop.engine.engine",
    "tokentop.engine.state_cache",
    "tokentop.sources.claude_code",
    "tokentop.config",
    "tokentop.pricing",
    "tokentop.policy.watchdog",
    "tokentop.clock",
    "tokentop.history.session_budgets",
    "tokentop.processes.finding",
    "tokentop.processes.control",
    "hashlib",
    "subprocess",
    "tomllib",
    "sqlite3",
)
"""What a call may import lazily: imported once here, so no worker pays for it."""


def main(argv: list[str]) -> int:
    if len(argv) not in (1, 2):
        sys.stderr.write("usage: python -m tokentop.commands.hook_server SOCKET [SPAWNER]\n")
        return 2
    path = argv[0]
    spawner = int(argv[1]) if len(argv) == 2 and argv[1].isdigit() else 0
    os.chdir("/")  # never keep the agent's folder busy
    context = ours(path)
    if context is None:
        return 0  # not the socket of this install and context in our private folder
    lock = take_lock(path.removesuffix(".sock") + ".lock")
    if lock is None:
        return 0  # another server has it
    wait_for_spawner(spawner)
    wire.import_msgspec()
    log = Log(path.removesuffix(".sock") + ".log")
    try:
        server = HookServer(path, lock, log, context)
    except Exception as error:
        log.write(f"cannot start: {error!r}")
        return 1
    return server.serve(idle_seconds())


def ours(path: str) -> bytes | None:
    """Our privilege context, if `path` is the socket for it, this install, and this user's
    private folder, and the kernel can name a client exactly (`hook_peer`); else None."""
    import _socket

    context = hook_peer.own_context()
    folder = wire.runtime_dir()
    if context is None or folder != os.path.dirname(path) or not hook_peer.supported():
        return None
    if wire.socket_path(folder, wire.server_key(context)) != path:
        return None
    mine, theirs = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        return context if hook_peer.trusted_peer(mine, context) is not None else None
    finally:
        mine.close()
        theirs.close()


def wait_for_spawner(spawner: int) -> None:
    """Let the hook call that started us (pid `spawner`) exit before we import (~0.1 s of
    CPU): on a busy machine our start would otherwise slow the very call Claude Code is
    waiting for."""
    deadline = time.monotonic() + SPAWNER_WAIT_S
    while spawner and os.getppid() == spawner and time.monotonic() < deadline:
        time.sleep(0.005)


def idle_seconds() -> float:
    try:
        return max(0.1, float(os.environ.get(IDLE_ENV, "") or IDLE_S))
    except ValueError:
        return IDLE_S


def take_lock(path: str) -> int | None:
    """An exclusive lock held by the returned descriptor for the server's life; None if a
    live server holds it past LOCK_WAIT_S."""
    import fcntl

    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o600)
    except OSError:
        return None
    deadline = time.monotonic() + LOCK_WAIT_S
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                return None
            time.sleep(0.05)


class Log:
    """One line per failure of the server or a worker (the hook still answers in-process).

    Opened once, through no symlink, and used only if it is a regular file of ours with no
    other name (another process of this user may plant a link at its name): truncated and
    written through the descriptor, never by path."""

    def __init__(self, path: str) -> None:
        self.fd = -1
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY
        try:
            fd = os.open(path, flags | os.O_CLOEXEC | os.O_NONBLOCK, 0o600)
        except OSError:
            return  # a link, a FIFO without a reader: no log
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid() or st.st_nlink != 1:
            os.close(fd)
            return
        if st.st_size > LOG_MAX_BYTES:
            os.ftruncate(fd, 0)
        self.fd = fd

    def write(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} pid {os.getpid()}: {message}\n"
        with contextlib.suppress(OSError):
            os.write(self.fd, line.encode("utf-8", "backslashreplace")[:4000])


class HookServer:
    """The listening socket, the workers (waiting or in a call), and what tells it to leave."""

    def __init__(self, path: str, lock: int, log: Log, context: bytes) -> None:
        import importlib

        from tokentop.commands.hook_worker import source_stamps, warm_up

        for name in WARM_MODULES:
            importlib.import_module(name)
        self.path, self.lock, self.log, self.context = path, lock, log, context
        self.warm_dir = path.removesuffix(".sock") + ".warm"
        """In our private folder; a dead server's is removed (we hold the lock)."""
        _remove(self.warm_dir)
        try:
            os.mkdir(self.warm_dir, 0o700)
            warm_up(self.warm_dir, calls=2)  # the second reads what the first cached
            self.stamps = source_stamps()
            self.listener = self._listen()
        except BaseException:
            _remove(self.warm_dir)
            raise
        self.inode = os.stat(path).st_ino
        self.reports, self.report_end = os.pipe()
        """Workers write `took <pid>` when a call reaches them, `stale` for new code."""
        self.life, self.life_end = os.pipe()
        """Only the server holds `life_end`: a waiting worker reads EOF once it is gone."""
        os.set_blocking(self.reports, False)
        self.spares: set[int] = set()
        self.busy: set[int] = set()
        self.spare_deaths = 0

    def _listen(self) -> socket.socket:
        import socket
        import stat

        with contextlib.suppress(FileNotFoundError):
            if not stat.S_ISSOCK(os.lstat(self.path).st_mode):
                raise FileExistsError(f"{self.path} is not a socket")
            os.unlink(self.path)  # a dead server's (we hold the lock: no live one has it)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.path)
        os.chmod(self.path, 0o600)
        listener.listen(64)
        return listener

    def serve(self, idle_s: float) -> int:
        """Answer until idle, replaced, stale or told to stop; returns the exit status."""
        import signal

        signal.signal(signal.SIGTERM, _leave)
        last = time.monotonic()
        try:
            while True:
                took, stale = self._read_reports()
                last = time.monotonic() if took else last
                self._reap()
                if stale or not self._wanted(last, idle_s):
                    break
                self._fill_spares()
                select.select([self.reports], [], [], POLL_S)
        except SystemExit:
            pass
        except Exception as error:
            self.log.write(f"stopped: {error!r}")
            return 1
        finally:
            self.close()
        return 0

    def _wanted(self, last: float, idle_s: float) -> bool:
        if self.spare_deaths >= MAX_SPARE_DEATHS:
            self.log.write(f"{self.spare_deaths} workers died waiting: leaving")
            return False
        if not self.busy and time.monotonic() - last > idle_s:
            return False
        try:
            return os.stat(self.path).st_ino == self.inode
        except OSError:
            return False  # our socket was removed (or its folder): nobody can reach us

    def _read_reports(self) -> tuple[bool, bool]:
        """(a worker took a call, a worker found new code) since the last look."""
        try:
            lines = os.read(self.reports, 1 << 16).split(b"\n")
        except BlockingIOError:
            return False, False
        took = False
        for line in lines:
            verb, _, pid = line.partition(b" ")
            if verb == b"took" and pid.isdigit() and int(pid) in self.spares:
                self.spares.discard(int(pid))
                self.busy.add(int(pid))
                took = True
        return took, b"stale" in lines

    def _fill_spares(self) -> None:
        while len(self.spares) < SPARES and len(self.spares) + len(self.busy) < MAX_WORKERS:
            pid = os.fork()
            if pid == 0:
                os._exit(self._spare())
            self.spares.add(pid)

    def _spare(self) -> int:
        """In the forked worker: wait for one call and answer it."""
        import signal

        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            for fd in (self.lock, self.reports, self.life_end):
                os.close(fd)  # the server's copies keep the lock and the pipes
            from tokentop.commands.hook_worker import Spare

            spare = Spare(self.listener, self.report_end, self.life, self.stamps, self.warm_dir)
            return spare.run(self.context)
        except BaseException as error:
            self.log.write(f"worker failed: {error!r}")
            return 1

    def _reap(self) -> None:
        for pid in self.spares | self.busy:
            with contextlib.suppress(ChildProcessError):
                if os.waitpid(pid, os.WNOHANG)[0] == 0:
                    continue
            if pid in self.spares:
                self.spare_deaths += 1
            elif pid in self.busy:
                self.spare_deaths = 0
            self.spares.discard(pid)
            self.busy.discard(pid)

    def close(self) -> None:
        """Remove our socket (only if it is still ours) and stop listening; waiting workers
        see the life pipe close and exit, workers in a call finish it. The warm-up folder
        goes once no spare can be warming itself in it (it would make it again)."""
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        self.listener.close()
        os.close(self.life_end)
        deadline = time.monotonic() + SPARE_EXIT_WAIT_S
        while self.spares and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.01)
        _remove(self.warm_dir)


def _remove(folder: str) -> None:
    import shutil

    shutil.rmtree(folder, ignore_errors=True)


def _leave(signum: int, frame: object) -> None:
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
