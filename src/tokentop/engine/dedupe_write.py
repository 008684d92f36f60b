"""Writing the cache's dedupe index (see dedupe_index.py for its layout and why it is hashed).

A first save hashes and sorts every key of the history; a later one copies the index's
columns in chunks, with the new keys inserted and the grown slots patched, and is written
as it is made (`files.write_atomic_parts`): the index is never held whole in memory.
"""

from __future__ import annotations

import sys
import zlib
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from tokentop import files
from tokentop.engine.dedupe_index import (
    HEAD,
    MAGIC,
    SLOT_COLUMNS,
    TRAILER,
    DedupeIndex,
    Names,
    digest_halves,
    position,
    saved_id,
)
from tokentop.engine.key_table import KEYS_NATIVE
from tokentop.engine.ledger_state import PackedDedupe

if TYPE_CHECKING:
    from tokentop.engine.dedupe_index import Columns


def save(
    path: Path,
    save_id: str,
    base: DedupeIndex | None,
    updates: dict[int, tuple[list[int], float]],
    added: PackedDedupe,
) -> str:
    """Write base + what was counted since (its slots after the base's; with `updates` to
    base slots) as one index, atomically; returns the id the index at `path` carries. With
    nothing new, the base's file is kept as it is (if no other process replaced it since):
    a restart that found no new key rewrites nothing."""
    fresh = added
    unchanged = not (fresh.digests or fresh.call_digests or updates)
    if base is not None and unchanged and base.save_id and saved_id(path) == base.save_id:
        return base.save_id
    names = _names(base, fresh)
    n_base = len(base) if base is not None else 0
    keys = _merged_keys(base, fresh, n_base)
    calls = _merged_calls(base, fresh, names)
    name_blob = msgspec.msgpack.encode(names)
    head = HEAD.pack(len(keys[0]), len(calls[0]), len(name_blob))
    parts: list[bytes | Iterator[bytes]] = [head, *(a.tobytes() for a in keys)]
    parts += [*(a.tobytes() for a in calls), name_blob]
    parts += _slot_columns(base, updates, fresh, names)
    files.write_atomic_parts(path, _with_trailer(parts, save_id))
    return save_id


def _names(base: DedupeIndex | None, fresh: PackedDedupe) -> Names:
    """The base's names with the fresh ones appended: base indexes stay valid."""
    old = base.names if base is not None else Names([], [], [])
    names = Names(list(old.sessions), list(old.models), list(old.marks))
    for listed, new in (
        (names.sessions, fresh.sessions),
        (names.models, fresh.models),
        (names.marks, fresh.call_marks),
    ):
        known = set(listed)
        for name in new:
            if name not in known:
                known.add(name)
                listed.append(name)
    return names


def _merged_keys(base: DedupeIndex | None, fresh: PackedDedupe, n_base: int) -> Columns:
    his, los = digest_halves(fresh.digests)
    if fresh.slots:
        slots = array("I", [s + n_base for s in array("I", fresh.slots)])
    else:
        slots = array("I", range(n_base, n_base + len(his)))
    if base is None:
        return _sorted(his, los, slots)
    return _merge((base.hi, base.lo, base.slots), (his, los, slots))


def _merged_calls(base: DedupeIndex | None, fresh: PackedDedupe, names: Names) -> Columns:
    """Base calls (a fresh mark replaces a base one: its result came) and new ones."""
    all_his, all_los = digest_halves(fresh.call_digests)
    all_marks = _renamed(fresh.call_marks, fresh.call_mark_idx, names.marks)
    if base is None:
        return _sorted(all_his, all_los, all_marks)
    old = (base.call_hi, base.call_lo, array("I", base.call_marks))
    his, los, marks = array("Q"), array("Q"), array("I")
    for hi, lo, mark in zip(all_his, all_los, all_marks, strict=True):
        at = position(old[0], old[1], hi, lo)
        if at >= 0:
            old[2][at] = mark
            continue
        his.append(hi)
        los.append(lo)
        marks.append(mark)
    return _merge(old, (his, los, marks))


def _sorted(his: array[int], los: array[int], values: array[int]) -> Columns:
    """The three columns sorted by (hi, lo): in C where built (`_keys_native`), else each
    row made one 24-byte big-endian record, so a C sort of bytes orders them (a third
    faster than sorting ints that carry their position, and no per-row Python work besides
    cutting the records)."""
    if KEYS_NATIVE is not None and values.itemsize == 4:
        sorted_his, sorted_los, sorted_values = KEYS_NATIVE.sorted_rows(his, los, values)
        return array("Q", sorted_his), array("Q", sorted_los), array(values.typecode, sorted_values)
    rows = array("Q", bytes(24 * len(his)))
    rows[0::3], rows[1::3], rows[2::3] = his, los, array("Q", values)
    if sys.byteorder == "little":
        rows.byteswap()
    joined = rows.tobytes()
    del rows
    records = [joined[i : i + 24] for i in range(0, len(joined), 24)]
    del joined
    records.sort()
    rows = array("Q")
    rows.frombytes(b"".join(records))
    del records
    if sys.byteorder == "little":
        rows.byteswap()
    return rows[0::3], rows[1::3], array(values.typecode, rows[2::3])


def _merge(old: Columns, new: Columns) -> Columns:
    """Sorted `old` with `new` added: one insert each when few are new (a restart), a sort
    of everything when many are (a first save)."""
    if len(new[0]) * 32 > len(old[0]):
        joined = tuple(a + b for a, b in zip(old, new, strict=True))
        return _sorted(joined[0], joined[1], joined[2])
    his, los, values = (array(a.typecode, a) for a in old)
    for hi, lo, value in zip(*new, strict=True):
        at = bisect_right(his, hi)
        his.insert(at, hi)
        los.insert(at, lo)
        values.insert(at, value)
    return his, los, values


def _slot_columns(
    base: DedupeIndex | None,
    updates: dict[int, tuple[list[int], float]],
    fresh: PackedDedupe,
    names: Names,
) -> list[bytes | Iterator[bytes]]:
    """The four slot columns: the base's (copied in chunks, updated slots patched), then the
    fresh slots'."""
    fresh_columns = (
        fresh.tokens,
        fresh.cost,
        _renamed(fresh.sessions, fresh.session_idx, names.sessions).tobytes(),
        _renamed(fresh.models, fresh.model_idx, names.models).tobytes(),
    )
    parts: list[bytes | Iterator[bytes]] = []
    for index, column in enumerate(fresh_columns):
        if base is not None:
            parts.append(_patched(base, index, updates))
        parts.append(column)
    return parts


def _renamed(fresh_names: list[str], idx: bytes, names: list[str]) -> array[int]:
    """Indexes into `fresh_names` as indexes into the index's `names`."""
    where = {name: i for i, name in enumerate(names)}
    to_names = [where[n] for n in fresh_names]
    return array("I", [to_names[i] for i in array("I", idx)])


def _patched(
    base: DedupeIndex, index: int, updates: dict[int, tuple[list[int], float]]
) -> Iterator[bytes]:
    """A base column with the updated slots' tokens (index 0) or cost (1) replaced."""
    width = SLOT_COLUMNS[index]
    if index > 1 or not updates:
        yield from base.column(index)
        return
    start = 0
    for chunk in base.column(index):
        data = bytearray(chunk)
        end = start + len(data) // width
        for slot in sorted(s for s in updates if start <= s < end):
            tokens, cost = updates[slot]
            value = array("q", tokens) if index == 0 else array("d", [cost])
            data[(slot - start) * width : (slot - start + 1) * width] = value.tobytes()
        start = end
        yield bytes(data)


def _with_trailer(parts: list[bytes | Iterator[bytes]], save_id: str) -> Iterator[bytes]:
    length = crc = 0
    for part in parts:
        for chunk in [part] if isinstance(part, bytes) else part:
            length += len(chunk)
            crc = zlib.crc32(chunk, crc)
            yield chunk
    yield TRAILER.pack(MAGIC, bytes.fromhex(save_id), length, crc)
