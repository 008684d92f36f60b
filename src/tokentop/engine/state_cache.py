"""Offsets, parser states and counters kept between runs, so a restart reads only new bytes.

One msgpack file per set of roots, replaced atomically. A cache that is missing, corrupt or
from another version is ignored (with a reason) and the engine does a cold scan.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from pathlib import Path

import msgspec

from tokentop import files
from tokentop.engine.ledger_state import LedgerState
from tokentop.engine.tail import TailState
from tokentop.files import make_private
from tokentop.sources.wholefile import read_regular

CACHE_VERSION = 5

CACHE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
"""What decoding a damaged or crafted cache file may raise."""


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
    dedupe_id: str = ""
    """Names the side file holding the ledger's packed dedupe tables (see `save`)."""
    save_id: str = ""
    """New on every save: what a result computed from this cache refers to (sessions_cache)."""


class CacheHead(msgspec.Struct):
    """A CacheFile with the ledger left encoded: enough to tell whether anything changed."""

    version: int
    roots: list[str]
    files: list[FileRecord]
    ledger: msgspec.Raw
    dedupe_id: str = ""
    save_id: str = ""


_DECODER = msgspec.msgpack.Decoder(CacheFile)
_HEAD = msgspec.msgpack.Decoder(CacheHead)


def load_head(path: Path) -> CacheHead | None:
    """The cache's file records and save id, without decoding its ledger (~10x faster)."""
    try:
        head = _HEAD.decode(read_regular(path))
    except (OSError, *CACHE_ERRORS):
        return None
    return head if head.version == CACHE_VERSION else None


def default_cache_dir() -> Path:
    from tokentop.dirs import user_dir

    return user_dir("cache")


def cache_path(cache_dir: Path, roots: list[str]) -> Path:
    """One cache per distinct set of roots, so --claude-dir runs don't clobber the default."""
    joined = "\0".join(sorted(roots)).encode()
    digest = f"{zlib.crc32(joined):08x}{zlib.adler32(joined):08x}"
    return cache_dir / f"state-{digest}.msgpack"


def dedupe_path(path: Path) -> Path:
    return path.with_suffix(".dedupe")


def dedupe_header(dedupe_id: str, blob: bytes) -> bytes:
    """The side file's first line: the save's id, the blob's length and its crc32."""
    return f"{dedupe_id} {len(blob)} {zlib.crc32(blob):08x}\n".encode()


def dedupe_loader(path: Path, dedupe_id: str) -> Callable[[], bytes] | None:
    """The side file's dedupe tables, checked against its header; None if it is missing,
    from another save (a crash between the two writes), truncated or damaged (no fsync:
    power loss can leave it short or zero-filled). The caller then scans cold."""
    try:
        data = read_regular(dedupe_path(path))
    except OSError:
        return None
    header, _, blob = data.partition(b"\n")
    if header + b"\n" != dedupe_header(dedupe_id, blob):
        return None
    return lambda: blob


def load(path: Path) -> tuple[CacheFile | None, str]:
    """The cache at `path`, or None and the reason it can't be used.

    The dedupe tables are in a side file (`dedupe_loader`), checked when loaded and decoded
    only when the ledger first needs them: a restart that finds nothing new never decodes
    them, which is most of a large history's cache.
    """
    make_private(path)
    make_private(dedupe_path(path))
    try:
        blob = read_regular(path)
    except FileNotFoundError:
        return None, "no cache yet"
    except OSError as exc:
        return None, f"cache unreadable: {exc.strerror or exc}"
    try:
        data = _DECODER.decode(blob)
    except CACHE_ERRORS as exc:
        return None, f"cache ignored (damaged: {str(exc)[:120]})"
    if data.version != CACHE_VERSION:
        return None, "cache from another version ignored"
    return data, ""


def save(path: Path, data: CacheFile) -> None:
    """Write atomically: a crash leaves the old cache or the new one, never half of one.

    The packed dedupe tables go to a side file written first, tagged with an id that the
    main file names; a crash between the two writes leaves a mismatch that `load` detects.
    """
    files.make_private_dir(path.parent)
    data = msgspec.structs.replace(data, save_id=data.save_id or os.urandom(16).hex())
    if data.ledger.packed:
        dedupe_id = os.urandom(16).hex()
        blob = data.ledger.packed
        files.write_atomic(dedupe_path(path), dedupe_header(dedupe_id, blob) + blob)
        ledger = msgspec.structs.replace(data.ledger, packed=b"")
        data = msgspec.structs.replace(data, ledger=ledger, dedupe_id=dedupe_id)
    files.write_atomic(path, msgspec.msgpack.encode(data))
