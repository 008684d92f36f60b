"""Incremental reader of one append-only file: complete lines only, across truncation,
rotation, deletion and re-creation.

The file is opened for each call and closed again, so thousands of transcripts cost no
descriptors between reads. A cold read of a small file is one open, one fstat, one pread.
"""

from __future__ import annotations

import errno
import os
import stat
from _blake2 import blake2b  # the builtin; `hashlib` also loads OpenSSL

import msgspec

from tokentop.sources import base
from tokentop.sources.base import name_text

DEFAULT_MAX_BYTES = 1024 * 1024
"""Cap on bytes read per call. Bounds memory on multi-GB files, and measured faster than big
reads: 200 MB cold read took ~50-100 ms in 1 MiB pieces against ~600 ms in 32 MiB ones
(large buffers are fresh mmaps that page-fault and fall out of cache)."""

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
"""O_NONBLOCK so a FIFO planted at a transcript path cannot hang the reader."""

_MISSING_ERRNOS = frozenset({errno.ENOENT, errno.ENOTDIR})

HEAD_BYTES = 4096
"""How much of a file's start is fingerprinted: a rewrite in place that keeps the size (and
inode) changes the mtime, and nearly always these bytes too (session ids, timestamps)."""


def head_digest(data: bytes) -> str:
    return blake2b(data, digest_size=8).hexdigest()


class TailState(msgspec.Struct):
    """How far one file has been read; plain fields so the cache can persist it between runs."""

    path: str
    dev: int = 0
    inode: int = 0
    """0 until the file has been opened once."""
    offset: int = 0
    """Bytes consumed: up to and including the last newline handed out (or skipped)."""
    size_seen: int = 0
    """File size at the last successful read."""
    skipping: bool = False
    """Inside an over-long line: bytes up to its newline are dropped, not handed out."""
    missing: bool = False
    """The file vanished after being read; it coming back is a reset even if the inode is reused."""
    mtime_ns: int = 0
    """Modification time at the last read; a change with no growth may be a rewrite."""
    head_len: int = 0
    head: str = ""
    """Digest of the file's first `head_len` bytes (up to HEAD_BYTES) when last read."""
    rewritten: bool = False
    """Rewritten in place since tokentop first read it: what it counted before is still in the
    ledger, so a cache holding this state is not resumed from (the next start scans cold)."""
    failed: bool = False
    """The last read failed (e.g. permission denied); reported as a bad line once."""
    os_path: bytes = b""
    """The name's bytes when it is not valid UTF-8; `path` then holds its escaped text
    (`name_text`), so the state can always be encoded (the cache, a cold-scan worker's pipe)."""

    def __post_init__(self) -> None:
        if not self.os_path and name_text(self.path) != self.path:
            self.os_path, self.path = os.fsencode(self.path), name_text(self.path)

    def real_path(self) -> str:
        """The path to open: `path`, or the exact name when it is not valid UTF-8."""
        return os.fsdecode(self.os_path) if self.os_path else self.path


class ReadResult(msgspec.Struct, frozen=True):
    """What one `Tailer.read_new` call found."""

    data: bytes = b""
    """Only complete lines, each ending in b"\\n"; may be empty."""
    reset: bool = False
    """Truncated or replaced: discard the parser; `data` starts again from byte 0."""
    gone: bool = False
    """Deleted or unreadable; the caller keeps what it has counted."""
    error: str = ""
    """Why the file could not be read (empty for a plain deletion)."""
    more: bool = False
    """The per-call cap was hit; call again to get the rest."""
    skipped_bytes: int = 0
    """Bytes of over-long lines dropped in this call."""
    skipped_lines: int = 0
    """Over-long lines started being skipped in this call (count them as bad lines)."""


class Tailer:
    """Reads new complete lines from one path, keeping the trailing partial line in memory.

    The carried partial line is not persisted: after a restart it is simply re-read from
    `state.offset`. A line that grows past `sources.base.MAX_LINE_BYTES` without a newline
    is skipped to its end and counted. (A longer line that arrives whole in one read is handed
    out as is; the parser counts it as bad. Either way it is one bad line.)
    """

    def __init__(
        self, state: TailState | str | os.PathLike[str], *, max_bytes: int = DEFAULT_MAX_BYTES
    ) -> None:
        self.state = state if isinstance(state, TailState) else TailState(path=os.fspath(state))
        self.max_bytes = max(1, max_bytes)
        self._carry = bytearray()

    @property
    def pending_bytes(self) -> int:
        """Length of the partial line waiting for its newline."""
        return len(self._carry)

    def read_new(self) -> ReadResult:
        """Return the complete lines added since the last call; never raises for I/O errors."""
        try:
            fd = os.open(self.state.real_path(), _OPEN_FLAGS)
        except OSError as exc:
            return self._failed(exc)
        try:
            return self._read_fd(fd)
        except OSError as exc:
            return self._failed(exc)
        finally:
            os.close(fd)

    def _read_fd(self, fd: int) -> ReadResult:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            self._mark_missing()
            reason = f"{self.state.path}: not a regular file (FIFO, device or socket)"
            return self._failure(reason)
        self.state.failed = False
        reset = self._check_identity(st) or self._check_head(fd, st)
        self.state.size_seen = st.st_size
        self.state.mtime_ns = st.st_mtime_ns
        start = self.state.offset + len(self._carry)
        if st.st_size < start:  # the partial line shrank: re-read it rather than trust the carry
            self._carry.clear()
            start = self.state.offset
        want = min(self.max_bytes, st.st_size - start)
        if want <= 0:
            return ReadResult(reset=reset)
        chunk = os.pread(fd, want, start)
        # A short read is the end, whatever st_size says (a /sys file claims 4096 bytes and
        # holds 23): "more" only after a full read, so a caller's loop always ends.
        more = len(chunk) == want and start + want < st.st_size
        return self._take(chunk, reset, more=more)

    def _check_identity(self, st: os.stat_result) -> bool:
        """Start again from 0 if the path now holds another file or was cut below the offset."""
        state = self.state
        replaced = state.inode != 0 and (
            state.missing or (st.st_dev, st.st_ino) != (state.dev, state.inode)
        )
        truncated = st.st_size < state.offset
        state.dev, state.inode, state.missing = st.st_dev, st.st_ino, False
        if not (replaced or truncated):
            return False
        state.offset = 0
        state.skipping = False
        state.head_len, state.head = 0, ""
        self._carry.clear()
        return True

    def _check_head(self, fd: int, st: os.stat_result) -> bool:
        """Start again from 0 if the file was rewritten in place (same inode, any size): its
        mtime moved and its first bytes differ from what was read. Also records the head."""
        state = self.state
        moved = state.head_len and state.mtime_ns and st.st_mtime_ns != state.mtime_ns
        if moved and head_digest(os.pread(fd, state.head_len, 0)) != state.head:
            state.offset, state.skipping, state.rewritten = 0, False, True
            state.head_len, state.head = 0, ""
            self._carry.clear()
            return True
        want = min(HEAD_BYTES, st.st_size)
        if state.head_len < want:
            state.head_len, state.head = want, head_digest(os.pread(fd, want, 0))
        return False

    def _take(self, chunk: bytes, reset: bool, more: bool) -> ReadResult:
        """Split a chunk into handed-out lines and a carried partial line."""
        pos = skipped_bytes = 0
        if self.state.skipping:
            pos = skipped_bytes = self._skip_to_newline(chunk)
        last = chunk.rfind(b"\n", pos)
        if last < 0:
            self._carry += memoryview(chunk)[pos:]
            data = b""
        else:
            data = self._joined(chunk, pos, last + 1)
            self._carry = bytearray(memoryview(chunk)[last + 1 :])
        self.state.offset += len(data)
        skipped_lines = 0
        if len(self._carry) > base.MAX_LINE_BYTES:
            skipped_bytes += self._start_skipping()
            skipped_lines = 1
        return ReadResult(data, reset, False, "", more, skipped_bytes, skipped_lines)

    def _joined(self, chunk: bytes, start: int, end: int) -> bytes:
        """The carried partial line plus chunk[start:end], copying only when needed."""
        if self._carry:
            self._carry += memoryview(chunk)[start:end]
            return bytes(self._carry)
        if start == 0 and end == len(chunk):
            return chunk
        return chunk[start:end]

    def _skip_to_newline(self, chunk: bytes) -> int:
        """Drop the rest of an over-long line; returns how many bytes of `chunk` it used."""
        newline = chunk.find(b"\n")
        used = len(chunk) if newline < 0 else newline + 1
        self.state.offset += used
        self.state.skipping = newline < 0
        return used

    def _start_skipping(self) -> int:
        dropped = len(self._carry)
        self.state.offset += dropped
        self.state.skipping = True
        self._carry.clear()
        return dropped

    def _mark_missing(self) -> None:
        if self.state.inode:
            self.state.missing = True
        self._carry.clear()

    def _failed(self, exc: OSError) -> ReadResult:
        if exc.errno in _MISSING_ERRNOS:
            self._mark_missing()
            return ReadResult(gone=True)
        self._carry.clear()
        reason = exc.strerror or str(exc)
        return self._failure(f"cannot read {self.state.path}: {reason}")

    def _failure(self, reason: str) -> ReadResult:
        """A path that exists but cannot be read as a file: one bad line per failure, so it is
        listed with the bad lines (`e`, the JSON) rather than skipped without a word."""
        first = not self.state.failed
        self.state.failed = True
        return ReadResult(gone=True, error=reason, skipped_lines=1 if first else 0)


def rewritten_in_place(state: TailState) -> bool:
    """Whether the file `state` describes was rewritten in place since it was read: flagged
    while running, or now holding other first bytes under a new mtime (same inode). A cache
    holding it cannot be resumed from: what the old content counted would stay counted."""
    if state.rewritten:
        return True
    if not state.head_len or not state.mtime_ns:
        return False
    try:
        st = os.stat(state.real_path())  # one stat; the file is opened only if it moved
    except OSError:
        return False
    if not _moved_in_place(st, state):
        return False
    try:
        fd = os.open(state.real_path(), _OPEN_FLAGS)
    except OSError:
        return False
    try:
        return head_digest(os.pread(fd, state.head_len, 0)) != state.head
    except OSError:
        return False
    finally:
        os.close(fd)


def _moved_in_place(st: os.stat_result, state: TailState) -> bool:
    """Same regular file, a new mtime, not cut below what was read (a truncation, which the
    tailer handles by starting again and keeping its count)."""
    same = stat.S_ISREG(st.st_mode) and (st.st_dev, st.st_ino) == (state.dev, state.inode)
    return same and st.st_mtime_ns != state.mtime_ns and st.st_size >= state.offset
