"""Every file tokentop writes goes through here: atomic replacement, private appends, 0600.
(And `read_bounded`: the start or end of a file tokentop reads but does not own.)

Its files hold what agents did and spent, so they are owner-only. A replacement is written to
a temp file created O_EXCL|O_NOFOLLOW with an unpredictable name beside the target, then
renamed over it: a reader sees the old file or the new one, a symlink planted at the temp
name is never written through, and a symlinked file (a dotfiles repo's settings.json) is
updated at its target while the link stays a link.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable
from pathlib import Path

PRIVATE = 0o600
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_APPEND = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC


def write_atomic(
    path: Path, blob: bytes, mode: int | None = PRIVATE, *, durable: bool = False
) -> Path:
    """Replace the file at `path` (its final target, if it is a symlink) with `blob`.

    mode: the new file's mode; None keeps the existing file's (0600 for a new one).
    durable: fsync before the rename (a user's settings; a cache can be rebuilt). Returns
    the path actually written.
    """
    return write_atomic_parts(path, [blob], mode, durable=durable)


def write_atomic_parts(
    path: Path, parts: Iterable[bytes], mode: int | None = PRIVATE, *, durable: bool = False
) -> Path:
    """`write_atomic` of the concatenated `parts`, written as they come: a large file (the
    cache's dedupe index) is never held whole in memory."""
    target = Path(os.path.realpath(path))
    if mode is None:
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            mode = PRIVATE
    tmp = target.with_name(f".{target.name}.{temp_suffix()}.tmp")
    fd = os.open(tmp, _CREATE, PRIVATE)
    try:
        with os.fdopen(fd, "wb") as fh:
            for part in parts:
                fh.write(part)
            fh.flush()
            if durable:
                os.fsync(fh.fileno())
            os.fchmod(fh.fileno(), mode)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def temp_suffix() -> str:
    """Unpredictable, so no one can plant a link at the name in advance (O_EXCL refuses it
    anyway)."""
    return os.urandom(8).hex()


def make_private_dir(path: Path) -> None:
    """Make `path` and each missing folder above it 0700, whatever the umask (`mkdir -p`
    would make the parents 0777 under umask 000); raises OSError."""
    missing: list[Path] = []
    for folder in (path, *path.parents):
        if folder.is_dir():
            break
        missing.append(folder)
    for folder in reversed(missing):
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            if not folder.is_dir():
                raise
            continue  # made meanwhile by another process
        os.chmod(folder, 0o700)  # a umask can take bits off 0700 too


def append_private(path: Path, data: bytes) -> None:
    """Append `data` with one write to a file created 0600 (an existing one of ours is made
    0600 too); raises OSError."""
    make_private_dir(path.parent)
    fd = os.open(path, _APPEND, PRIVATE)
    try:
        _private_fd(fd)
        os.write(fd, data)
    finally:
        os.close(fd)


def make_private(path: Path) -> None:
    """Set an existing file that this user owns to 0600 (best effort: never raises)."""
    with contextlib.suppress(OSError):
        st = os.stat(path)
        if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
            os.chmod(path, stat.S_IMODE(st.st_mode) & 0o700)


def _private_fd(fd: int) -> None:
    st = os.fstat(fd)
    if st.st_uid == os.geteuid() and stat.S_IMODE(st.st_mode) & 0o077:
        os.fchmod(fd, stat.S_IMODE(st.st_mode) & 0o700)


def create_new(path: Path, blob: bytes, mode: int = PRIVATE) -> None:
    """Write `blob` to a file that must not exist yet (never through a symlink)."""
    fd = os.open(path, _CREATE, mode)
    with os.fdopen(fd, "wb") as fh:
        fh.write(blob)


def read_bounded(
    path: str | os.PathLike[str], limit: int, tail: bool = False
) -> tuple[bytes, int] | None:
    """At most `limit` bytes of a regular file (its start, or with `tail` its end) and its
    size; None when it cannot be opened or is not a regular file: a FIFO or device planted
    where a file is expected must not hang the reader (opened non-blocking, checked)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None
        start = max(st.st_size - limit, 0) if tail else 0
        return os.pread(fd, limit, start), st.st_size
    except OSError:
        return None
    finally:
        os.close(fd)
