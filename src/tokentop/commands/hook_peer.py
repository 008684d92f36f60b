"""Whether the process at the other end of the hook's socket is exactly as privileged as this one.

The hook's client hands a tool call (its environment, working folder and options) to a server
that acts for it, and trusts the answer it gets back. Running as the same user is not enough:
a sandbox or dev container that shares /tmp or $XDG_RUNTIME_DIR has the same uid but may see
other mounts (a read-only $HOME), run with NoNewPrivs, a seccomp filter or fewer capabilities.
A server acting for it would write where it cannot; a server it started, or one it poses as,
would be trusted by the hooks outside it. So each side acts for, and trusts, only a peer whose
privilege context is the same as its own.

A context, read from /proc/<pid>: the uid, gid and groups lines, the capability sets,
NoNewPrivs, the seccomp mode and filter count (`status`); the namespaces (`ns/*`); the stat of
the root folder (a chroot) and of the executable (the same interpreter); the LSM label
(`attr/current`: AppArmor, SELinux). The peer is the process the kernel names for the socket
(SO_PEERCRED), pinned by a pidfd (SO_PEERPIDFD, Linux 6.5): it is trusted only if it is alive
once its context is read, so its pid cannot have been reused while we read.

Not told apart (README "The hook server"): Landlock applied without NoNewPrivs (possible only
with CAP_SYS_ADMIN), and cgroup limits.

Stdlib only, and only modules the client already has (`commands/hook.py`).
"""

from __future__ import annotations

import os
import select
import sys

TYPE_CHECKING = False  # not typing's: see hook_wire
if TYPE_CHECKING:
    import _socket

NAMESPACES = ("mnt", "pid", "user", "net", "ipc", "uts", "cgroup", "time")
STATUS_KEYS = (
    b"Uid", b"Gid", b"Groups", b"CapInh", b"CapPrm", b"CapEff", b"CapBnd", b"CapAmb",
    b"NoNewPrivs", b"Seccomp", b"Seccomp_filters",
)  # fmt: skip
SO_PEERPIDFD = 77
"""Its number where the kernel uses the generic socket options (`PIDFD_MACHINES`)."""
PIDFD_MACHINES = frozenset(
    {"x86_64", "i386", "i486", "i586", "i686", "aarch64", "aarch64_be", "armv6l", "armv7l",
     "armv8l", "riscv64", "s390x", "ppc64", "ppc64le", "loongarch64"}
)  # fmt: skip
MIN_KERNEL = (6, 5)
"""SO_PEERPIDFD's first release: without it a peer's pid could be another process's by the
time its context is read, so no server is used."""
EINVAL = 22


def supported() -> bool:
    """Whether this kernel can name a peer exactly (Linux ≥ 6.5, generic socket options)."""
    if not sys.platform.startswith("linux"):
        return False
    uname = os.uname()
    numbers = uname.release.partition("-")[0].split(".")
    try:
        release = (int(numbers[0]), int(numbers[1]))
    except (ValueError, IndexError):
        return False
    return uname.machine in PIDFD_MACHINES and release >= MIN_KERNEL


def context(pid: int) -> bytes | None:
    """The privilege context of process `pid` (see the module docstring); None when any part
    of it cannot be read (the process is gone, not ours to inspect, or /proc is missing)."""
    try:
        folder = os.open(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        parts = [_status(folder), _label(folder)]
        parts += [_stat(name, folder) for name in ("root", "exe")]
        parts += [_namespace(name, folder) for name in NAMESPACES]
        return b"\n".join(parts)
    except OSError:
        return None
    finally:
        os.close(folder)


def _status(folder: int) -> bytes:
    fd = os.open("status", os.O_RDONLY | os.O_CLOEXEC, dir_fd=folder)
    try:
        data = b"".join(iter(lambda: os.read(fd, 1 << 16), b""))
    finally:
        os.close(fd)
    lines = [line for line in data.split(b"\n") if line.partition(b":")[0] in STATUS_KEYS]
    if len(lines) < len(STATUS_KEYS) - 1:  # Seccomp_filters is newer than the others
        raise OSError("an incomplete /proc status")
    return b"\n".join(lines)


def _label(folder: int) -> bytes:
    try:
        fd = os.open("attr/current", os.O_RDONLY | os.O_CLOEXEC, dir_fd=folder)
    except FileNotFoundError:
        return b"label -"
    try:
        return b"label " + os.read(fd, 4096)
    except OSError as error:
        if error.errno == EINVAL:
            return b"label -"  # no LSM that labels processes
        raise
    finally:
        os.close(fd)


def _stat(name: str, folder: int) -> bytes:
    st = os.stat(name, dir_fd=folder)
    return b"%s %d:%d" % (name.encode(), st.st_dev, st.st_ino)


def _namespace(name: str, folder: int) -> bytes:
    try:
        return os.fsencode(os.readlink(f"ns/{name}", dir_fd=folder))
    except FileNotFoundError:
        return b"%s:-" % name.encode()  # a namespace type this kernel does not have


def own_context() -> bytes | None:
    """This process's context (the same for its forks and for what it executes: see
    `commands/hook.py: start_server`)."""
    return context(os.getpid())


def peer(sock: _socket.socket) -> tuple[int, int]:
    """The (pid, uid) of the process at the other end, as the kernel says (SO_PEERCRED)."""
    import _socket

    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    pid = int.from_bytes(creds[0:4], sys.byteorder, signed=True)
    return pid, int.from_bytes(creds[4:8], sys.byteorder)


def trusted_peer(sock: _socket.socket, mine: bytes) -> int | None:
    """The pid of the process at the other end when its context is `mine` (ours); else None.

    The pidfd is taken first (it fails for a process already gone) and checked last: a peer
    still alive then was the process behind that pid for the whole read."""
    import _socket

    try:
        pidfd = sock.getsockopt(_socket.SOL_SOCKET, SO_PEERPIDFD)
    except OSError:
        return None  # gone already, or a kernel without SO_PEERPIDFD
    try:
        pid, uid = peer(sock)
        same = uid == os.getuid() and pid > 0 and context(pid) == mine
        return pid if same and alive(pidfd) else None
    finally:
        os.close(pidfd)


def alive(pidfd: int) -> bool:
    """A pidfd turns readable when its process exits."""
    return not select.select([pidfd], [], [], 0)[0]
