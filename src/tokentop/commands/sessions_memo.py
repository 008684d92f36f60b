"""`tokentop sessions --json` remembered for files that have not changed since.

Scripts poll `sessions --json`. When every session is quiet (its burn rates are zero, and stay
zero however late the next run comes), the output depends only on the counters, which depend
only on the files. So the output is kept next to the cache, tied to the cache's save id, and a
later run that finds every file as the cache left it (same inode, size = offset read) and no
new file prints it without decoding the ledger or building a snapshot. Any change, an active
session, or a cache saved since (by any tokentop process) means computing it again.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import msgspec

from tokentop import files
from tokentop.engine import state_cache as cache_mod
from tokentop.engine.engine import Engine
from tokentop.engine.tracked import whole_file_kinds
from tokentop.model import LedgerSnapshot
from tokentop.sources.wholefile import read_regular

QUIET_MARGIN_S = 120.0
"""Beyond the burn window: minute buckets round down, so one more minute (and some slack)."""


class Remembered(msgspec.Struct):
    cache_id: str
    out: str
    err: str = ""


class _Kind(msgspec.Struct):
    kind: str = ""


_REMEMBERED = msgspec.msgpack.Decoder(Remembered)
_KIND = msgspec.msgpack.Decoder(_Kind)


def output_path(cache_path: Path) -> Path:
    return cache_path.with_suffix(".sessions")


def recall(engine: Engine) -> Remembered | None:
    """The remembered output, if the files are exactly as the cache it belongs to left them."""
    path = engine.cache_path
    if path is None:
        return None
    try:
        remembered = _REMEMBERED.decode(read_regular(output_path(path)))
    except (OSError, *cache_mod.CACHE_ERRORS):
        return None
    head = cache_mod.load_head(path)
    if head is None or head.save_id != remembered.cache_id or head.roots != engine.root_names():
        return None
    whole = whole_file_kinds()
    known: set[str] = set()
    for record in head.files:
        tail = record.tail
        if _KIND.decode(record.parser).kind in whole:
            return None  # rewritten in place: only its parser can tell whether it changed
        try:
            st = os.stat(tail.real_path())
        except OSError:
            return None
        now = (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns)
        if now != (tail.inode, tail.dev, tail.offset, tail.mtime_ns):
            return None
        known.add(tail.real_path())
    if engine.find_transcripts(known):
        return None
    return remembered


def remember(engine: Engine, snapshot: LedgerSnapshot, out: str, err: str) -> None:
    """Keep `out` for the next run if every session is quiet and the cache matches it."""
    path = engine.cache_path
    if path is None or not engine.cache_id:
        return
    horizon = snapshot.taken_at - engine.window_s - QUIET_MARGIN_S
    if any(s.last_ts >= horizon or s.tokens_per_min or s.usd_per_hour for s in snapshot.sessions):
        return
    target = output_path(path)
    try:
        if _REMEMBERED.decode(read_regular(target)).cache_id == engine.cache_id:
            return  # already there
    except (OSError, *cache_mod.CACHE_ERRORS):
        pass
    blob = msgspec.msgpack.encode(Remembered(engine.cache_id, out, err))
    with contextlib.suppress(OSError):  # only a later run's speed depends on it
        files.write_atomic(target, blob)
