"""What the hook's client and its resident server share: stdin, the socket's place, framing.

Stdlib only, and only modules a bare `python` has already loaded (plus `select` and, on use,
`_socket`): `python -m tokentop.commands.hook` imports this before every tool call, and each
import is start-up time (see `commands/hook.py`). `_socket` is the C module under `socket`;
`socket.py` itself would add its enums (~10 ms) for nothing the hook uses.

The server listens on `hook-<key>.sock` in a private runtime folder: `$XDG_RUNTIME_DIR/tokentop`,
else `$TMPDIR/tokentop-<uid>` (or /tmp's). It must be a real folder (no symlink) owned by this
user with mode 0700: one that is not (a stranger made it first in /tmp) is never used.
`<key>` hashes what makes two hooks the same code: the interpreter, the tokentop package's
folder, Python's version and its import path variables; another install or venv gets a
server of its own.

A request is a list of netstrings (`<length>:<bytes>,`); so is the answer.
"""

from __future__ import annotations

import os
import select
import stat
import sys
import time

TYPE_CHECKING = False  # not typing's: importing typing costs the client ~4 ms (and `re`)
if TYPE_CHECKING:
    import _socket
    from typing import TextIO

MAX_INPUT_BYTES = 4 << 20
"""Claude Code's hook JSON carries the tool's input (a whole file for Write): ample room."""
INPUT_WAIT_S = 1.0
"""How long the hook waits for its input: an agent that keeps stdin open after its JSON (or
sends nothing) must not hold its tool call; the hook answers within 2 s whatever stdin does."""
PROTOCOL = b"tokentop-hook/1"
SERVER_ENV = "TOKENTOP_HOOK_SERVER"
"""`off`: never use or start a server; every call answers in its own process."""
ACK_WAIT_S = 0.5
"""A server that has not taken the request by then (stopped, hung, overloaded) is skipped:
the client answers itself. Taking a request is an accept, a fork and one read: ~1-2 ms."""
ANSWER_WAIT_S = 20.0
"""Once taken, the request's own work: a first read of a long transcript takes seconds; the
client would take as long itself (and Claude Code stops waiting for a hook at 30 s)."""
MAX_FIELD_BYTES = MAX_INPUT_BYTES + 1
MAX_FIELDS = 4096
MAX_REQUEST_BYTES = 2 * MAX_FIELD_BYTES
"""Bounds a server puts on a request: the environment's variables, a field, the whole."""

ACCEPTED, GO, STALE = b"A", b"G", b"S"
"""The server took the request / the client still waits for it / the server is out of date
(it exits; start a new one)."""


def read_stdin(limit: int, wait_s: float) -> bytes:
    """Stdin up to its end, `limit` bytes, one whole JSON object, or `wait_s` seconds,
    whichever comes first."""
    data = b""
    end = time.monotonic() + wait_s
    try:
        fd = sys.stdin.fileno()
        while len(data) < limit and (left := end - time.monotonic()) > 0:
            if not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, min(1 << 16, limit - len(data)))
            data += chunk
            if not chunk or whole_json(data):
                break
    except (OSError, ValueError):
        pass  # no stdin at all: the input is what was read (nothing)
    return data


def whole_json(data: bytes) -> bool:
    """Whether `data` is one JSON object: it ends its braces and brackets where it ends,
    outside any string. Cheap (a step per string), and only says when to stop reading; the
    answerer still decodes it, so a malformed object is reported there."""
    body = data.strip()
    if not (body.startswith(b"{") and body.endswith(b"}")):
        return False
    depth, at = 0, 0
    while at < len(body):
        quote = body.find(b'"', at)
        plain = body[at:] if quote < 0 else body[at:quote]
        depth += plain.count(b"{") + plain.count(b"[") - plain.count(b"}") - plain.count(b"]")
        if quote < 0:
            break
        at = _string_end(body, quote)
        if at < 0:
            return False
    return depth == 0


def _string_end(body: bytes, quote: int) -> int:
    """Just past the string opened at `quote`, or -1 if it is not closed."""
    at = quote + 1
    while (at := body.find(b'"', at)) >= 0:
        slashes = at
        while body[slashes - 1] == 0x5C:  # a quote after an odd run of backslashes is escaped
            slashes -= 1
        if (at - slashes) % 2 == 0:
            return at + 1
        at += 1
    return -1


def import_msgspec() -> None:
    """Import msgspec without `typing_extensions`: ~8 ms of an in-process hook call's
    start (and of the server's), most of it the `inspect` module that one imports.

    msgspec imports `get_type_hints`, `Required` and `NotRequired` from `typing_extensions`
    when it can and from `typing` when it cannot. On Python 3.11+ `typing` has all three with
    the same behaviour for what tokentop decodes (its Structs use only `typing`), so the
    result is the same. The hook's processes and the command line do this (`sessions` pays
    the same ~5 ms of its start); the block is lifted once msgspec is in (a later
    `import typing_extensions` works), and a msgspec that cannot
    import without it is imported as usual."""
    if "msgspec" in sys.modules or "typing_extensions" in sys.modules:
        return
    sys.modules["typing_extensions"] = None  # type: ignore[assignment]  # "not installed"
    try:
        import msgspec  # noqa: F401
    except ImportError:
        for name in [n for n in sys.modules if n.partition(".")[0] == "msgspec"]:
            del sys.modules[name]  # half imported: the caller's own import starts afresh
    finally:
        if "typing_extensions" in sys.modules and sys.modules["typing_extensions"] is None:
            del sys.modules["typing_extensions"]


def server_wanted() -> bool:
    """Linux only (SO_PEERCRED, /proc); elsewhere, or when turned off, calls answer in-process."""
    off = os.environ.get(SERVER_ENV, "").strip().lower() in ("off", "0", "no", "false")
    return sys.platform.startswith("linux") and not off


def identity() -> bytes:
    """What a server must share with a client to answer for it (see the module docstring)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts = [PROTOCOL, os.fsencode(sys.executable), os.fsencode(package), b"%x" % sys.hexversion]
    parts += [os.environb.get(name, b"") for name in (b"PYTHONPATH", b"PYTHONHOME")]
    return b"\0".join(parts)


def key_of(ident: bytes) -> str:
    """FNV-1a, 64 bits: names the socket (hashlib would cost the client a millisecond)."""
    value = 0xCBF29CE484222325
    for byte in ident:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


def runtime_dir() -> str | None:
    """The private folder for the server's socket, made if missing; None if neither
    candidate is ours and private (then no server is used)."""
    base = os.environ.get("XDG_RUNTIME_DIR", "")
    tmp = os.environ.get("TMPDIR", "")
    candidates = [os.path.join(base, "tokentop")] if os.path.isabs(base) else []
    shared = tmp if os.path.isabs(tmp) else "/tmp"
    candidates.append(os.path.join(shared, f"tokentop-{os.getuid()}"))
    for path in candidates:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            continue  # e.g. a runtime folder named but missing (a container): the next one
        if _private_dir(path):
            return path
    return None


def _private_dir(path: str) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    mine = st.st_uid == os.getuid() and not st.st_mode & 0o077
    return stat.S_ISDIR(st.st_mode) and mine


def socket_path(folder: str, ident: bytes) -> str | None:
    """The server's socket for `ident`; None when the path is too long for a Unix socket."""
    path = os.path.join(folder, f"hook-{key_of(ident)}.sock")
    return path if len(os.fsencode(path)) < 104 else None


def frame(fields: list[bytes]) -> bytes:
    return b"".join(b"%d:%s," % (len(field), field) for field in fields)


class FrameReader:
    """Netstrings from a socket, each at most `limit` bytes and `total` in all, before a
    deadline; a malformed or short stream raises ValueError (the other side died or is
    not ours)."""

    def __init__(
        self, sock: _socket.socket, deadline: float, limit: int, total: int = MAX_REQUEST_BYTES
    ) -> None:
        self.sock = sock
        self.deadline = deadline
        self.limit = limit
        self.left = total
        self.buffer = bytearray()

    def byte(self) -> bytes:
        return self._take(1)

    def field(self) -> bytes:
        digits = bytearray()
        while (char := self._take(1)) != b":":
            digits += char
            if not char.isdigit() or len(digits) > 10:
                raise ValueError("bad frame")
        size = int(digits or b"x")
        self.left -= size
        if size > self.limit or self.left < 0:
            raise ValueError("field too large")
        body = self._take(size)
        if self._take(1) != b",":
            raise ValueError("bad frame")
        return body

    def _take(self, size: int) -> bytes:
        while len(self.buffer) < size:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise ValueError("timed out")
            self.sock.settimeout(left)
            chunk = self.sock.recv(max(1 << 16, size - len(self.buffer)))
            if not chunk:
                raise ValueError("closed")
            self.buffer += chunk
        taken = bytes(self.buffer[:size])
        del self.buffer[:size]
        return taken


def peer(sock: _socket.socket) -> tuple[int, int]:
    """The (pid, uid) of the process at the other end, as the kernel says (SO_PEERCRED)."""
    import _socket

    creds = sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_PEERCRED, 12)
    pid = int.from_bytes(creds[0:4], sys.byteorder, signed=True)
    return pid, int.from_bytes(creds[4:8], sys.byteorder)


def connect(path: str, timeout: float) -> _socket.socket:
    """A connection to the server at `path`, proven to run as this user; raises OSError."""
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        if peer(sock)[1] != os.getuid():
            raise PermissionError(f"{path} is served by another user")
    except BaseException:
        sock.close()
        raise
    return sock


def stop_servers(out: TextIO) -> int:
    """`tokentop hook stop`: ask every hook server of this user (any install) to exit, and
    wait until each has removed its socket."""
    folder = runtime_dir()
    names = sorted(os.listdir(folder)) if folder is not None else []
    paths = [os.path.join(folder or "", n) for n in names if n.startswith("hook-")]
    stopped = [pid for path in paths if path.endswith(".sock") and (pid := _stop(path, out))]
    if not stopped:
        out.write("No tokentop hook server is running.\n")
    return 0


def _stop(path: str, out: TextIO) -> int:
    try:
        sock = connect(path, 2.0)
    except OSError:
        return 0  # a leftover socket: nothing listens
    try:
        server = peer(sock)[0]
        sock.sendall(frame([PROTOCOL, identity(), b"stop"]))
        reader = FrameReader(sock, time.monotonic() + 2.0, 64)
        reply = reader.byte()  # STALE: out of date, and leaving all the same
        if reply not in (ACCEPTED, STALE):
            raise ValueError("refused")
        server = int(reader.field()) if reply == ACCEPTED else server
    except (OSError, ValueError):
        out.write(f"Could not stop the hook server at {path} (pid {server}).\n")
        return 0
    finally:
        sock.close()
    deadline = time.monotonic() + 5.0
    while os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.02)
    out.write(f"Stopped the tokentop hook server (pid {server}).\n")
    return server
