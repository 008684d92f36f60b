"""`tokentop hook stop`: stop every hook server of this user, and say so only once it is gone.

Servers are looked for in every folder one may be in (`hook_wire.runtime_dirs`: the ones this
environment names, /run/user/<uid>'s and /tmp's; none is made). Each socket's listener is the
process the kernel names for it, pinned by a pidfd (so a pid reused meanwhile is never
signalled), and it is signalled only if it is this user's `tokentop.commands.hook_server`
for that socket. SIGTERM, then SIGCONT (a stopped server acts on SIGTERM only once it runs
again); one still there after `STOP_WAIT_S` is killed. Its waiting workers exit with it;
a worker in a call finishes the call.
"""

from __future__ import annotations

import os
import select
import signal
from typing import TextIO

from tokentop.commands import hook_peer
from tokentop.commands import hook_wire as wire

STOP_WAIT_S = 5.0
SERVER_MODULE = "tokentop.commands.hook_server"


def stop_servers(out: TextIO) -> int:
    """Stop each server found, one line each; returns 1 when one could not be stopped."""
    sockets = [
        os.path.join(folder, name)
        for folder in wire.runtime_dirs()
        for name in sorted(os.listdir(folder))
        if name.startswith("hook-") and name.endswith(".sock")
    ]
    lines = [line for path in sockets if (line := stop_server(path))]
    out.writelines(lines or ["No tokentop hook server is running.\n"])
    return 1 if any(not line.startswith("Stopped") for line in lines) else 0


def stop_server(path: str) -> str:
    """What became of the server listening at `path` ("" when none listens there)."""
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(2.0)
        sock.connect(path)
        pidfd = sock.getsockopt(_socket.SOL_SOCKET, hook_peer.SO_PEERPIDFD)
        pid, uid = hook_peer.peer(sock)
    except OSError:
        return ""  # a leftover socket (nothing listens), or its listener has exited
    finally:
        sock.close()
    try:
        if uid != os.getuid() or not _serves(pid, path):
            return f"Left alone {path}: its listener (pid {pid}) is not a tokentop hook server.\n"
        return _end(pidfd, pid)
    finally:
        os.close(pidfd)


def _serves(pid: int, path: str) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = fh.read().split(b"\0")
    except OSError:
        return False
    return SERVER_MODULE.encode() in argv and os.fsencode(path) in argv


def _end(pidfd: int, pid: int) -> str:
    try:
        for sig in (signal.SIGTERM, signal.SIGCONT):
            signal.pidfd_send_signal(pidfd, sig)
        if _exited(pidfd, STOP_WAIT_S):
            return f"Stopped the tokentop hook server (pid {pid}).\n"
        signal.pidfd_send_signal(pidfd, signal.SIGKILL)
        if _exited(pidfd, STOP_WAIT_S):
            return f"Killed the tokentop hook server (pid {pid}): it did not stop by itself.\n"
    except ProcessLookupError:
        return f"Stopped the tokentop hook server (pid {pid}).\n"
    except OSError as error:
        return f"Could not stop the tokentop hook server (pid {pid}): {error.strerror}.\n"
    return f"Could not stop the tokentop hook server (pid {pid}): it is still running.\n"


def _exited(pidfd: int, wait_s: float) -> bool:
    return bool(select.select([pidfd], [], [], wait_s)[0])
