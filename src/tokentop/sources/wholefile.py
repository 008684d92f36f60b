"""Parsers for files that are rewritten rather than appended: whole-file JSON and SQLite.

The tailer hands out appended lines, which says nothing useful about a file rewritten in
place (Gemini's legacy session `.json`, opencode's per-message JSON, a SQLite database). The
engine therefore calls `refresh` on these parsers whenever their path is reported dirty (and
on every scan), and the parser decides itself whether the file changed and re-reads it.

Change detection is git's "racy clean" rule: a file whose (size, mtime_ns, inode) equal
what was read, and whose mtime is older than the read by more than `RACY_NS`, is unchanged.
A file modified within `RACY_NS` of being read is re-read on the next call (and compared by
content hash), so a same-size rewrite within one coarse mtime tick (FAT, SMB: 2 s) is not
missed as long as a change notification arrives for it.
"""

from __future__ import annotations

import os
import stat
import time
from _blake2 import blake2b  # the builtin; `hashlib` also loads OpenSSL
from typing import BinaryIO, TypeVar

import msgspec

from tokentop.model import Event
from tokentop.sources.base import MAX_LINE_BYTES, FileParser, name_text

T = TypeVar("T")

RACY_NS = 2_000_000_000
"""Coarsest mtime granularity in use (FAT, some network filesystems)."""

Signature = tuple[int, int, int]
"""(size, mtime_ns, inode)."""


def signature(path: str) -> Signature | None:
    """The file's (size, mtime_ns, inode), or None when it cannot be stat'ed."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns, st.st_ino


def os_name(path: str | os.PathLike[str]) -> bytes:
    """The name's bytes when it is not valid UTF-8 (the parser's `path` then holds its escaped
    text, see `base.name_text`), else b"" (the path is the name)."""
    text = os.fspath(path)
    return b"" if name_text(text) == text else os.fsencode(text)


def is_regular(path: str) -> bool:
    """False for a FIFO, device, socket or folder at `path` (or nothing there)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def read_regular(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a regular file; a FIFO or device raises OSError instead of blocking
    (opened non-blocking, and its type checked on the open descriptor)."""
    with open_regular(path) as handle:
        return handle.read()


def open_regular(path: str | os.PathLike[str]) -> BinaryIO:
    """A regular file opened for reading, as `read_regular` opens it (for a part of it)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    handle = os.fdopen(fd, "rb")
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        handle.close()
        raise OSError("not a regular file (FIFO, device or socket), skipped")
    return handle


def settled(sig: Signature | None, seen: Signature | None, read_at_ns: int) -> bool:
    """True when a file known as `seen` at `read_at_ns` certainly has not changed since."""
    return sig is not None and sig == seen and sig[1] + RACY_NS < read_at_ns


class WholeFileParser(FileParser):
    """A file read whole on every change; subclasses implement `parse_whole`.

    Events must be keyed so that re-reading the same content emits the same dedupe keys
    (the ledger keeps each key once, at its largest total), so a re-read adds only growth.
    """

    size: int = 0
    """Bytes of the last read (shown as bytes read)."""
    os_path: bytes = b""
    """The file's name as bytes when it is not valid UTF-8 (`path` is then its escaped text)."""
    seen: Signature | None = None
    read_at_ns: int = 0
    digest: str = ""

    def fs_path(self) -> str:
        """The path to open (`path` itself unless the name is not valid UTF-8)."""
        return os.fsdecode(self.os_path) if self.os_path else self.path

    def feed(self, data: bytes, out: list[Event]) -> None:
        """If a tailer drives this parser after all, the bytes are ignored: re-read instead."""
        self.refresh(out)

    def refresh(self, out: list[Event]) -> bool:
        """Re-read the file if it may have changed; True when new content was parsed."""
        sig = signature(self.fs_path())
        if sig is None or settled(sig, self.seen, self.read_at_ns):
            return False  # a vanished file keeps what it counted
        if sig[0] > MAX_LINE_BYTES * 4:
            self.bad(f"{sig[0]} bytes: too large to read whole, skipped")
            self.seen, self.read_at_ns = sig, time.time_ns()
            return False
        try:
            data = read_regular(self.fs_path())
        except OSError as exc:  # unreadable or not a file: one bad record, retried later
            self.bad_lines, self.digest = 1, ""
            self.last_error = f"cannot read: {exc.strerror or exc}"
            return False
        self.seen, self.read_at_ns, self.size = sig, time.time_ns(), len(data)
        digest = blake2b(data, digest_size=16).hexdigest()
        if digest == self.digest:
            return False
        error = self.parse_whole(data, out)
        # A file caught half-rewritten fails to parse: its digest is forgotten so the next
        # change re-reads it, and it counts as one bad record only while it stays broken.
        self.digest = "" if error else digest
        self.bad_lines = 1 if error else 0
        self.last_error = error[:200]
        return not error

    def parse_whole(self, data: bytes, out: list[Event]) -> str:
        """Append the file's events to `out`; return "" or why the content is unusable."""
        raise NotImplementedError


MAX_SIDE_FILE_BYTES = 1024 * 1024
"""A small metadata file beside a transcript (a session's state, a project list) larger
than this is not one: it is ignored rather than read."""


def read_side_file(path: str | os.PathLike[str], decoder: msgspec.json.Decoder[T]) -> T | None:
    """A small JSON file beside a transcript, decoded; None when it is missing, too big, not
    a regular file or not what `decoder` expects (its transcript still counts)."""
    try:
        if os.path.getsize(path) > MAX_SIDE_FILE_BYTES:
            return None
        return decoder.decode(read_regular(path))
    except (OSError, msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
