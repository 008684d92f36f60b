"""`tokentop sessions --json` remembered for files that have not changed since.

Scripts poll `sessions --json`. When every session has been quiet for longer than the
Watchdog asks processes about (a day), its record is fixed: no burn, no ETA, a state that
changes only at a known time, and no process that could still pause or exit. Then the output
depends on the files, the config and the store's budgets. So it is kept next to the cache,
tied to the cache's save id, to a mark of those other files and to the time its states
hold until, and a later run that finds every file as the cache left it (same inode, size =
offset read) and no new file prints it without decoding the ledger or building a snapshot.
Any change, a recent session, or a cache saved since (by any tokentop process) means
computing it again.
"""

from __future__ import annotations

import argparse
import contextlib
import heapq
import math
import os
import struct
import time
from pathlib import Path

import msgspec

from tokentop import files
from tokentop.commands.common import load_config as engine_config
from tokentop.engine import state_cache as cache_mod
from tokentop.engine.engine import Engine
from tokentop.engine.tracked import whole_file_kinds
from tokentop.policy.watchdog import PROBE_HORIZON_S, Judgement
from tokentop.sources.wholefile import open_regular

QUIET_MARGIN_S = 120.0
"""Beyond the horizon: some slack for clocks."""


class Remembered(msgspec.Struct):
    """The memo file's head; the output's bytes follow it (see `Memo`)."""

    cache_id: str
    out: str = ""
    """Filled in by `recall` from the bytes after the head."""
    err: str = ""
    context: str = ""
    """A mark of the config, the store and the registry when it was computed."""
    valid_until: float = 0.0
    """When the first session's state would change (idle -> ended)."""
    newest: list[tuple[str, int, int, int, int]] = []
    """Path, inode, device, size and mtime of the files written last when it was computed:
    a restart after one of them grew finds out without decoding the cache's file list."""


NEWEST_FILES = 8


def context_mark(args: argparse.Namespace | None) -> str:
    """Size and mtime of what besides the transcripts decides the output: the config (rules,
    budgets), the store (budgets set for a session), the registry and the action log."""
    from tokentop.config import default_path as config_path
    from tokentop.dirs import user_dir
    from tokentop.processes.registry import default_path as registry_path

    store = getattr(args, "db", None) or user_dir("data") / "tokentop.db"
    config = getattr(args, "config", None) or config_path()
    paths = [config, store, Path(f"{store}-wal"), registry_path()]
    paths.append(user_dir("data") / "actions.jsonl")
    marks = []
    for path in paths:
        try:
            st = os.stat(path)
            marks.append(f"{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            marks.append("-")
    return "|".join(marks)


class _Kind(msgspec.Struct):
    kind: str = ""


_REMEMBERED = msgspec.msgpack.Decoder(Remembered)
_KIND = msgspec.msgpack.Decoder(_Kind)


def output_path(cache_path: Path) -> Path:
    return cache_path.with_suffix(".sessions")


_HEAD_SIZE = struct.Struct("<I")
"""The memo file: the head's length, the head (msgpack), then the output as written."""


def read_memo(path: Path, with_output: bool = True) -> Remembered | None:
    """The memo at `path` (its output too if `with_output`: else only its head is read);
    None if missing or damaged, or written in the layout before the head (one msgpack
    object: its length bytes do not fit)."""
    try:
        with open_regular(path) as handle:
            (size,) = _HEAD_SIZE.unpack(handle.read(_HEAD_SIZE.size))
            remembered = _REMEMBERED.decode(handle.read(size))
            if with_output:
                remembered.out = handle.read().decode()
    except (OSError, struct.error, UnicodeDecodeError, *cache_mod.CACHE_ERRORS):
        return None
    return remembered


def recall(engine: Engine, args: argparse.Namespace | None = None) -> Remembered | None:
    """The remembered output, if the files are exactly as the cache it belongs to left them."""
    path = engine.cache_path
    if path is None:
        return None
    remembered = read_memo(output_path(path), with_output=False)
    if remembered is None:
        return None
    if time.time() >= remembered.valid_until or remembered.context != context_mark(args):
        return None
    if any(_changed(*signature) for signature in remembered.newest):
        return None  # the likely case of a change: found before the cache's head is decoded
    head = cache_mod.load_head(path)
    if head is None or head.save_id != remembered.cache_id or head.roots != engine.root_names():
        return None
    whole = whole_file_kinds()
    known: set[str] = set()
    # The files written last are the ones likely written again: asked first, a change is
    # found with one stat instead of after half of them.
    for record in sorted(head.files, key=lambda r: -r.tail.mtime_ns):
        tail = record.tail
        if _KIND.decode(record.parser).kind in whole:
            return None  # rewritten in place: only its parser can tell whether it changed
        real = tail.real_path()
        if _changed(real, tail.inode, tail.dev, tail.offset, tail.mtime_ns):
            return None
        known.add(real)
    if engine.find_transcripts(known):
        return None
    whole_memo = read_memo(output_path(path))
    return whole_memo if whole_memo and whole_memo.cache_id == remembered.cache_id else None


def _changed(path: str, inode: int, dev: int, size: int, mtime_ns: int) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return True
    return (st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns) != (inode, dev, size, mtime_ns)


class Memo:
    """The output being written, kept for the memo file: saved whole or not at all."""

    def __init__(self, target: Path, head: Remembered) -> None:
        self.target = target
        blob = msgspec.msgpack.encode(head)
        self.parts = [_HEAD_SIZE.pack(len(blob)), blob]

    def add(self, chunk: bytes) -> None:
        self.parts.append(chunk)

    def save(self) -> None:
        with contextlib.suppress(OSError):  # only a later run's speed depends on it
            files.write_atomic_parts(self.target, self.parts)
        self.parts = []


def plan(engine: Engine, args: argparse.Namespace, judgement: Judgement, err: str) -> Memo | None:
    """A memo for the output about to be written, if every session is quiet for good and
    the cache matches (and no memo of this cache is there already)."""
    path = engine.cache_path
    if path is None or not engine.cache_id:
        return None
    horizon = judgement.snapshot.taken_at - PROBE_HORIZON_S - QUIET_MARGIN_S
    sessions = [j.session for j in judgement.sessions]
    if any(s.last_ts >= horizon or s.tokens_per_min or s.usd_per_hour for s in sessions):
        return None
    config = engine_config(args)
    turns = [
        t
        for s in sessions
        for t in (s.last_ts + config.live_timeout_s, s.last_ts + config.ended_after_s)
        if t > judgement.snapshot.taken_at
    ]
    valid_until = min(turns, default=math.inf)
    target = output_path(path)
    there = read_memo(target, with_output=False)
    if there is not None and there.cache_id == engine.cache_id:
        return None  # already there
    states = heapq.nlargest(
        NEWEST_FILES, (t.tailer.state for t in engine.files.values()), key=lambda s: s.mtime_ns
    )
    newest = [(s.real_path(), s.inode, s.dev, s.offset, s.mtime_ns) for s in states]
    head = Remembered(engine.cache_id, "", err, context_mark(args), valid_until, newest)
    return Memo(target, head)
