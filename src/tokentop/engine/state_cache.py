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

CACHE_VERSION = 7

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
    """Names the side file holding the ledger's dedupe index (see `save`)."""
    delta_id: str = ""
    """Names the delta beside the index ("" when the index holds everything)."""
    save_id: str = ""
    """New on every save: what a result computed from this cache refers to (sessions_cache)."""


class CacheHead(msgspec.Struct):
    """A CacheFile with the ledger left encoded: enough to tell whether anything changed."""

    version: int
    roots: list[str]
    files: list[FileRecord]
    ledger: msgspec.Raw
    dedupe_id: str = ""
    delta_id: str = ""
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


def delta_path(path: Path) -> Path:
    return path.with_suffix(".delta")


def load(path: Path) -> tuple[CacheFile | None, str]:
    """The cache at `path`, or None and the reason it can't be used.

    The dedupe tables are in a side file (engine/dedupe_index.py), loaded by `resume`.
    """
    make_private(path)
    make_private(dedupe_path(path))
    make_private(delta_path(path))
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


IndexWriter = Callable[[Path, Path, str], tuple[str, str]]
"""(index path, delta path, a new id) -> the ids the index and its delta carry."""


def save(path: Path, data: CacheFile, write_index: IndexWriter) -> None:
    """Write atomically: a crash leaves the old cache or the new one, never half of one.

    The dedupe index and its delta go to side files written first (`write_index`, which
    returns the ids they carry: an unchanged index is kept), tagged with ids that the main
    file names; a crash between the writes leaves a mismatch that the loader detects.
    """
    files.make_private_dir(path.parent)
    data = msgspec.structs.replace(data, save_id=data.save_id or os.urandom(16).hex())
    dedupe_id, delta_id = write_index(dedupe_path(path), delta_path(path), os.urandom(16).hex())
    data = msgspec.structs.replace(data, dedupe_id=dedupe_id, delta_id=delta_id)
    files.write_atomic(path, msgspec.msgpack.encode(data))
