"""Real hostile files for the tests: Claude lines, FIFOs, a thread that must not block, and
running a scan as an unprivileged user."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from tokentop.engine.engine import Engine
from tokentop.model import LedgerSnapshot, TokenCounts
from tokentop.pricing import PriceTable
from tokentop.sources.claude_code import ClaudeCodeSource

SCAN_TIMEOUT_S = 30


def claude_line(sid: str, msg_id: str, out: int, uuid: str = "") -> bytes:
    record = {
        "type": "assistant",
        "sessionId": sid,
        "cwd": "/w",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "uuid": uuid or f"u-{msg_id}",
        "message": {
            "id": msg_id,
            "model": "claude-sonnet-4-20250514",
            "usage": {"input_tokens": 1, "output_tokens": out},
        },
    }
    return json.dumps(record).encode() + b"\n"


def write_session(path: Path, sid: str, outs: list[int]) -> TokenCounts:
    """A transcript of one response per count; returns what it adds up to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(claude_line(sid, f"{sid}-m{i}", n) for i, n in enumerate(outs)))
    return TokenCounts(input=len(outs), output=sum(outs))


def claude_engine(projects: Path, cache_dir: Path | None = None) -> Engine:
    source = ClaudeCodeSource([projects])
    return Engine([source], PriceTable.default().cost, workers=1, cache_dir=cache_dir)


def bounded(fn: Callable[[], object], fifos: list[Path]) -> None:
    """Run `fn` in a thread; if it is still blocked after SCAN_TIMEOUT_S, unblock it (open
    each FIFO for writing) and fail: a FIFO must never block a scan."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(SCAN_TIMEOUT_S)
    blocked = thread.is_alive()
    if blocked:
        for fifo in fifos:
            fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
            os.close(fd)
        thread.join(5)
    assert not blocked, "the scan blocked on a FIFO"
    assert not errors, errors


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def health(snap: LedgerSnapshot, name: str) -> list[str]:
    return [f.last_error for f in snap.files if Path(f.path).name == name and f.bad_lines]


def as_unprivileged(fn: Callable[[], bytes]) -> bytes:
    """`fn()` run by a non-root user: here if we are not root, else in a forked child that
    drops to `nobody` (the result comes back through a pipe)."""
    if os.geteuid() != 0:
        return fn()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, fn())
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return data


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def unescape(text: bytes) -> bytes:
    """The reverse of `name_text`: `\\\\` is a backslash, `\\xNN` the byte NN."""
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i : i + 2] == b"\\\\":
            out += b"\\"
            i += 2
        elif text[i : i + 2] == b"\\x":
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return bytes(out)


@contextmanager
def shared_tmp_dir() -> Iterator[Path]:
    """A temp dir every user can enter (pytest's is root-only when run as root)."""
    path = Path(tempfile.mkdtemp(prefix="tokentop-perm-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for p in [path, *path.rglob("*")]:
            if not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(path)
