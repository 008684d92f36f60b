"""A state cache turned back into a ledger and the files it followed, and followed files
into cache records: what `Engine.load_cache`, `save_cache` and the cold scan's workers share.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NamedTuple

import msgspec

from tokentop.engine import dedupe_index
from tokentop.engine import state_cache as cache_mod
from tokentop.engine.ledger import CostFn, Ledger
from tokentop.engine.tail import Tailer, rewritten_in_place
from tokentop.engine.tracked import Tracked, parser_decoder
from tokentop.sources.base import FileParser, Source


class Resumed(NamedTuple):
    ledger: Ledger
    files: dict[str, Tracked]
    save_id: str
    """The cache's save id: what a result computed from it refers to."""


def resume(path: Path, sources: Sequence[Source], cost_fn: CostFn) -> tuple[Resumed | None, str]:
    """The state cached at `path`, or None and why it is not used (the scan is then cold)."""
    data, why = cache_mod.load(path)
    if data is None:
        return None, why
    base = dedupe_index.load(cache_mod.dedupe_path(path), data.dedupe_id)
    delta = None
    if base is not None and data.delta_id:
        delta = dedupe_index.load_delta(cache_mod.delta_path(path), data.delta_id, len(base))
    if base is None or (data.delta_id and delta is None):
        return None, "cache ignored (its dedupe tables are missing, stale or damaged)"
    try:
        ledger = Ledger.restore(data.ledger, cost_fn, base, delta)
    except (OverflowError, ValueError) as exc:  # counters out of int64 range
        return None, f"cache ignored (damaged: {exc})"
    files = tracked_from(data.files, sources)
    if files is None:
        return None, "cache ignored (parser state changed)"
    changed = next((p for p, t in files.items() if rewritten_in_place(t.tailer.state)), "")
    if changed:
        return None, f"cache ignored ({changed!r} was rewritten in place)"
    return Resumed(ledger, files, data.save_id), why


def tracked_from(
    records: list[cache_mod.FileRecord], sources: Sequence[Source]
) -> dict[str, Tracked] | None:
    """Followed files from their records; None if a parser state no longer decodes."""
    by_name = {s.name: s for s in sources}
    files: dict[str, Tracked] = {}
    decode = parser_decoder().decode
    for rec in records:
        source = by_name.get(rec.agent)
        if source is None:
            continue
        try:
            parser: FileParser = decode(rec.parser)
        except cache_mod.CACHE_ERRORS:
            return None
        files[rec.tail.real_path()] = Tracked(source, Tailer(rec.tail), parser)
    return files


def file_records(files: Iterable[Tracked]) -> list[cache_mod.FileRecord]:
    """Where reading stopped in each file, with its parser state encoded."""
    return [
        cache_mod.FileRecord(
            t.source.name, t.tailer.state, msgspec.Raw(msgspec.msgpack.encode(t.parser))
        )
        for t in files
    ]
