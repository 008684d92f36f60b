"""Offsets, parser states and counters kept between runs, so a restart reads only new bytes.

One msgpack file per set of roots, replaced atomically. A cache that is missing, corrupt or
from another version is ignored (with a reason) and the engine does a cold scan.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import msgspec
import platformdirs

from tokentop.ledger import LedgerState
from tokentop.tail import TailState

CACHE_VERSION = 1


class FileRecord(msgspec.Struct, array_like=True):
    """One transcript: which source reads it, where reading stopped, and its parser state.

    The parser state stays encoded (Raw) here; the engine decodes it with the parser type of
    the file's source, so adding a source needs no change in this module.
    """

    agent: str
    tail: TailState
    parser: msgspec.Raw


class CacheFile(msgspec.Struct):
    version: int
    roots: list[str]
    files: list[FileRecord]
    ledger: LedgerState


_DECODER = msgspec.msgpack.Decoder(CacheFile)


def default_cache_dir() -> Path:
    return Path(platformdirs.user_cache_dir("tokentop"))


def cache_path(cache_dir: Path, roots: list[str]) -> Path:
    """One cache per distinct set of roots, so --claude-dir runs don't clobber the default."""
    digest = hashlib.sha1("\0".join(sorted(roots)).encode()).hexdigest()[:16]
    return cache_dir / f"state-{digest}.msgpack"


def load(path: Path) -> tuple[CacheFile | None, str]:
    """The cache at `path`, or None and the reason it can't be used."""
    try:
        blob = path.read_bytes()
    except FileNotFoundError:
        return None, "no cache yet"
    except OSError as exc:
        return None, f"cache unreadable: {exc.strerror}"
    try:
        data = _DECODER.decode(blob)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        return None, f"cache ignored ({exc})"
    if data.version != CACHE_VERSION:
        return None, "cache from another version ignored"
    return data, ""


def save(path: Path, data: CacheFile) -> None:
    """Write atomically: a crash leaves the old cache or the new one, never half of one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    blob = msgspec.msgpack.encode(data)
    fd, tmp = tempfile.mkstemp(prefix=".state-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(blob)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
