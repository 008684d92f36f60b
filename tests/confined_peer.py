"""A process of this user, exactly as privileged as its parent but for one confinement, that
calls a hook server's socket or listens on it, as a sandboxed process sharing /tmp could.

    python confined_peer.py MODE call SOCKET < REQUEST   # sends REQUEST and GO; prints the reply
    python confined_peer.py MODE listen SOCKET           # poses as the server; prints what came

MODE: `none` (the control: not confined), `no_new_privs`, `seccomp` (an allow-all filter),
`capability` (CAP_SYS_ADMIN dropped from the bounding set), `chroot` (into a folder holding a
hard link to SOCKET), `interpreter` (run this script with another python binary: nothing to
do here), or a namespace (`mnt`, `user`, `net`, `ipc`, `uts`, `cgroup`, `pid`, `time`; the
last two apply to children, so the peer forks). Each is applied with the kernel's own calls
(prctl, unshare, chroot; root needs no NoNewPrivs for seccomp). Stdlib only.
"""

from __future__ import annotations

import ctypes
import os
import socket
import struct
import sys

CLONE = {
    "mnt": 0x00020000, "cgroup": 0x02000000, "uts": 0x04000000, "ipc": 0x08000000,
    "user": 0x10000000, "pid": 0x20000000, "net": 0x40000000, "time": 0x00000080,
}  # fmt: skip
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, PR_CAPBSET_DROP = 38, 22, 24
SECCOMP_MODE_FILTER, SECCOMP_RET_ALLOW, CAP_SYS_ADMIN = 2, 0x7FFF0000, 21
ALLOW = b'{"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": "allow"}}'
libc = ctypes.CDLL(None, use_errno=True)


def check(result: int) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, os.strerror(errno))


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def allow_all_seccomp() -> None:
    program = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, SECCOMP_RET_ALLOW))
    prog = SockFprog(1, ctypes.addressof(program))
    check(libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0))


def confine(mode: str, path: str) -> str:
    """Apply `mode`; the path to SOCKET from inside it."""
    if mode == "no_new_privs":
        check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
    elif mode == "seccomp":
        allow_all_seccomp()
    elif mode == "capability":
        check(libc.prctl(PR_CAPBSET_DROP, CAP_SYS_ADMIN, 0, 0, 0))
    elif mode == "chroot":
        jail = os.path.join(os.path.dirname(os.path.dirname(path)), "jail")
        os.makedirs(jail, exist_ok=True)
        if not os.path.exists(os.path.join(jail, "s.sock")):
            os.link(path, os.path.join(jail, "s.sock"))  # a socket is found by its inode
        os.chroot(jail)
        os.chdir("/")
        return "/s.sock"
    elif mode in CLONE:
        check(libc.unshare(CLONE[mode]))
        if mode in ("pid", "time") and (child := os.fork()):  # the child is in it
            os._exit(os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]))
    elif mode not in ("none", "interpreter"):
        raise SystemExit(f"unknown mode {mode}")
    return path


def call(path: str, request: bytes) -> bytes:
    sock = socket.socket(socket.AF_UNIX)
    sock.settimeout(20)
    sock.connect(path)
    got = b""
    try:
        sock.sendall(request + b"G")
        while chunk := sock.recv(65536):
            got += chunk
    except OSError:
        pass  # closed on us, unread: nothing was answered
    return got


def listen(mode: str, path: str) -> int:
    """Pose as the server: answer "allow" at once, then count what the client sends."""
    sock = socket.socket(socket.AF_UNIX)
    if mode == "chroot":  # bound outside, listening inside
        sock.bind(path)
        confine(mode, path)
    else:
        sock.bind(confine(mode, path))
    sock.listen(4)
    print("listening", flush=True)
    sock.settimeout(30)
    conn, _ = sock.accept()
    conn.settimeout(5)
    got = 0
    try:
        conn.sendall(b"A" + b"".join(b"%d:%s," % (len(f), f) for f in (b"0", ALLOW, b"")))
        while chunk := conn.recv(65536):
            got += len(chunk)
    except OSError:
        pass
    return got


def main() -> None:
    mode, verb, path = sys.argv[1:4]
    if verb == "call":
        request = sys.stdin.buffer.read()
        print(repr(call(confine(mode, path), request)), flush=True)
    else:
        print(listen(mode, path), flush=True)


if __name__ == "__main__":
    main()
