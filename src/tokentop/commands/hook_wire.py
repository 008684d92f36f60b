"""What the hook's client and its resident server share: stdin, the socket's place, framing.

Stdlib only, and only modules a bare `python` has already loaded (plus `select` and, on use,
`_socket`): `python -m tokentop.commands.hook` imports this before every tool call, and each
import is start-up time (see `commands/hook.py`). `_socket` is the C module under `socket`;
`socket.py` itself would add its enums (~10 ms) for nothing the hook uses.

The server listens on `hook-<key>.sock` in a private runtime folder: `$XDG_RUNTIME_DIR/tokentop`,
else `$TMPDIR/tokentop-<uid>` (/tmp when TMPDIR is unset). It must be a real folder (no
symlink) owned by this user with mode 0700: one that is not (a stranger made it first in /tmp)
is never used. `<key>` hashes what makes two hooks the same code (the interpreter, the
tokentop package's folder, Python's version and its import path variables) and the privilege
context they run in (`hook_peer`): another install, venv, sandbox or container gets a server
of its own. Each side checks the other's context before it sends a byte.

A request is a list of netstrings (`<length>:<bytes>,`); so is the answer.
"""

from __future__ import annotations

import os
import select
import stat
import sys
import time

from tokentop.commands import hook_peer

TYPE_CHECKING = False  # not typing's: importing typing costs the client ~4 ms (and `re`)
if TYPE_CHECKING:
    import _socket

MAX_INPUT_BYTES = 4 << 20
"""Claude Code's hook JSON carries the tool's input (a whole file for Write): ample room."""
INPUT_WAIT_S = 1.0
"""How long the hook waits for its input: an agent that keeps stdin open after its JSON (or
sends nothing) must not hold its tool call; the hook answers within 2 s whatever stdin does."""
PROTOCOL = b"tokentop-hook/2"
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
    whichever comes first; b"" when there is no stdin at all (closed: `<&-`)."""
    chunks: list[bytes] = []
    size, end, deadline = 0, ObjectEnd(), time.monotonic() + wait_s
    try:
        fd = sys.stdin.fileno()  # AttributeError: None when Python started without fd 0
        while size < limit and (left := deadline - time.monotonic()) > 0:
            if not select.select([fd], [], [], left)[0]:
                break
            chunk = os.read(fd, min(1 << 16, limit - size))
            chunks.append(chunk)
            size += len(chunk)
            if not chunk or end.feed(chunk):
                break
    except (OSError, ValueError, AttributeError):
        pass  # no stdin at all: the input is what was read (nothing)
    return b"".join(chunks)


class ObjectEnd:
    """Whether the bytes fed so far are one JSON object: it ends its braces and brackets where
    it ends, outside any string. It only says when to stop reading (the answerer decodes the
    input and reports a malformed one).

    Each byte is looked at once, however the input is cut into reads, and by bytes methods
    (C loops), never byte by byte in Python: a 4 MB Write event full of quotes costs
    milliseconds. (Scanning the whole buffer after each read was quadratic: such an event
    missed the stdin deadline, was cut short, and the soft stop failed open.)"""

    def __init__(self) -> None:
        self.escape = b""
        """A backslash at the end of the last read, escaping the next read's first byte."""
        self.in_string = False
        self.depth = 0
        self.first = self.last = b""
        """The first and last bytes that are not white space."""

    def feed(self, chunk: bytes) -> bool:
        """Take the next read; whether all read so far is one whole object."""
        text = self.escape + chunk
        body = text.rstrip(b"\\")  # a trailing run: its pairs are escaped backslashes
        self.escape = b"\\" if (len(text) - len(body)) % 2 else b""
        plain = body.replace(b"\\\\", b"").replace(b'\\"', b"")  # no escape left in a string
        parts = plain.split(b'"')  # between real quotes: alternately outside and inside strings
        outside = b"".join(parts[1 if self.in_string else 0 :: 2])
        self.in_string ^= len(parts) % 2 == 0
        opened = outside.count(b"{") + outside.count(b"[")
        self.depth += opened - outside.count(b"}") - outside.count(b"]")
        self.first = self.first or text.lstrip()[:1]
        self.last = text.rstrip()[-1:] or self.last
        shut = not self.in_string and not self.escape and self.depth == 0
        return shut and self.first == b"{" and self.last == b"}"


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
    """Linux ≥ 6.5 only (`hook_peer.supported`); elsewhere, or when turned off, calls
    answer in-process."""
    off = os.environ.get(SERVER_ENV, "").strip().lower() in ("off", "0", "no", "false")
    return not off and hook_peer.supported()


def identity() -> bytes:
    """What a server must share with a client to answer for it (see the module docstring)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parts = [PROTOCOL, os.fsencode(sys.executable), os.fsencode(package), b"%x" % sys.hexversion]
    parts += [os.environb.get(name, b"") for name in (b"PYTHONPATH", b"PYTHONHOME")]
    return b"\0".join(parts)


def server_key(context: bytes) -> str:
    """Names the socket of the server for this install and privilege context: each context
    has its own, so a sandbox's hooks and the ones outside it never fight over one."""
    return key_of(identity() + b"\0" + context)


def key_of(ident: bytes) -> str:
    """FNV-1a, 64 bits: names the socket (hashlib would cost the client a millisecond)."""
    value = 0xCBF29CE484222325
    for byte in ident:
        value = ((value ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{value:016x}"


def runtime_dir() -> str | None:
    """The private folder for the server's socket, made if missing; None if neither
    candidate is ours and private (then no server is used)."""
    for path in _candidates()[:2]:
        try:
            os.mkdir(path, 0o700)
        except FileExistsError:
            pass
        except OSError:
            continue  # e.g. a runtime folder named but missing (a container): the next one
        if private_dir(path):
            return path
    return None


def runtime_dirs() -> list[str]:
    """Every existing private folder a server of this user may be in (none is made): the
    ones `runtime_dir` picks from with this environment, /run/user/<uid>'s and /tmp's."""
    found: list[str] = []
    for path in [*_candidates(), f"/run/user/{os.getuid()}/tokentop", _shared("/tmp")]:
        if path not in found and private_dir(path):
            found.append(path)
    return found


def _candidates() -> list[str]:
    base, tmp = os.environ.get("XDG_RUNTIME_DIR", ""), os.environ.get("TMPDIR", "")
    ours = [os.path.join(base, "tokentop")] if os.path.isabs(base) else []
    return [*ours, _shared(tmp if os.path.isabs(tmp) else "/tmp")]


def _shared(tmp: str) -> str:
    return os.path.join(tmp, f"tokentop-{os.getuid()}")


def private_dir(path: str) -> bool:
    """A real folder (no symlink) of this user's that no one else may enter."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    mine = st.st_uid == os.getuid() and not st.st_mode & 0o077
    return stat.S_ISDIR(st.st_mode) and mine


def socket_path(folder: str, key: str) -> str | None:
    """The server's socket for `key`; None when the path is too long for a Unix socket."""
    path = os.path.join(folder, f"hook-{key}.sock")
    return path if len(os.fsencode(path)) < 104 else None


CHILD_ENV = ("HOME", "PATH", "LANG", "TZ", "TMPDIR", "USER", "LOGNAME")
CHILD_ENV_PREFIXES = ("XDG_", "LC_", "PYTHON", "TOKENTOP_")


def child_env() -> dict[str, str]:
    """What the server and the escalation helper inherit: where the user's files are, the
    locale and Python's own settings; not the agent's secrets (API keys)."""
    return {
        name: value
        for name, value in os.environ.items()
        if name in CHILD_ENV or name.startswith(CHILD_ENV_PREFIXES)
    }


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


def connect(path: str, timeout: float, context: bytes) -> _socket.socket:
    """A connection to the server at `path`, proven to run in this privilege `context`
    (ours: `hook_peer`) before a byte is sent; raises OSError."""
    import _socket

    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        sock.connect(path)
        if hook_peer.trusted_peer(sock, context) is None:
            raise PermissionError(f"{path} is served by a process not exactly as privileged")
    except BaseException:
        sock.close()
        raise
    return sock
