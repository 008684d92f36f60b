"""The dedupe tables as the cache keeps them: hashed keys in sorted arrays, counters on disk.

A long history has 100k's of response keys and tool call ids. Held as Python strings in dicts
they took ~150 bytes each and most of a second to load, yet a restart that reads one changed
file needs only the few keys its new lines repeat. So the cache's side file keeps each key as
a 128-bit blake2b hash in sorted arrays (20 bytes with its slot), read with one `pread` per
array, and the counters of each response (64 bytes a slot: tokens, cost, session, model)
stay in the file, read with a `pread` only when a key turns up again (a later copy of a
response, a resumed session). Keys added since the cache was loaded stay exact strings in
the ledger (`LedgerState.seen`) and are hashed when the cache is next saved.

Why a hash is safe: two different keys merging takes a 128-bit collision. By chance that is
about n²/2^129 (10^-25 for ten million keys); on purpose it takes ~2^64 blake2b evaluations,
far out of reach of anyone who can only write transcripts.

Layout (little-endian): a header (counts), the key hashes (hi, lo: the digest's two halves),
each key's slot, the call hashes and their marks, the names (msgpack), then the slot columns
(tokens 6×int64, cost float64, session and model as indexes into the names), and a trailer:
magic, save id, length and crc32 of everything before it (a crash or power loss leaves a
file whose check fails, and the engine then scans cold).
"""

from __future__ import annotations

import os
import stat
import struct
import weakref
import zlib
from _blake2 import blake2b  # the builtin; `hashlib` also loads OpenSSL
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from tokentop import files

if TYPE_CHECKING:
    Columns = tuple[array[int], array[int], array[int]]
    """Hashes (hi, lo) and one value each, sorted by hi."""

KINDS = 6
MAGIC = b"ttdedup2"
_HEAD = struct.Struct("<QQQ")
"""Keys (= slots), calls, bytes of the names."""
_TRAILER = struct.Struct("<8s16sQI")
"""Magic, save id, bytes before the trailer, their crc32."""
_CHUNK = 1 << 20
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
_SLOT_COLUMNS = (8 * KINDS, 8, 4, 4)
"""Bytes per slot of each column: tokens, cost, session index, model index."""


def key_hash(key: str) -> tuple[int, int]:
    """The two 64-bit halves of a key's 128-bit blake2b digest."""
    digest = blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")


def key_hashes(keys: Iterable[str]) -> tuple[array[int], array[int]]:
    """`key_hash` of many keys as two arrays: the digests are joined and split by C code
    (a first save hashes every key of the history)."""
    if key_hash is not _KEY_HASH:  # replaced (a test forcing collisions): use it per key
        pairs = [key_hash(k) for k in keys]
        return array("Q", [p[0] for p in pairs]), array("Q", [p[1] for p in pairs])
    joined = array("Q")
    left = iter(keys)
    while chunk := list(islice(left, 1 << 16)):  # bounded: one digest object per key meanwhile
        encoded = [k.encode("utf-8", "surrogatepass") for k in chunk]
        joined.frombytes(b"".join([blake2b(k, digest_size=16).digest() for k in encoded]))
    return joined[0::2], joined[1::2]


_KEY_HASH = key_hash


class Names(msgspec.Struct, array_like=True):
    sessions: list[str]
    models: list[str]
    marks: list[str]


class Slot(NamedTuple):
    tokens: list[int]
    cost: float
    session: str
    model: str


class Fresh(NamedTuple):
    """Tables added since the index was loaded, in slot order (`LedgerState`'s fields)."""

    keys: Sequence[str]
    tokens: bytes
    cost: bytes
    sessions: Sequence[str]
    models: Sequence[str]
    calls: dict[str, str]


class DedupeIndex:
    """Sorted key hashes of the counted responses and tool calls; slot data read on demand."""

    def __init__(
        self,
        keys: Columns,
        calls: Columns,
        names: Names,
        fd: int,
        columns: tuple[int, int, int, int],
    ) -> None:
        self.hi, self.lo, self.slots = keys
        self.call_hi, self.call_lo, self.call_marks = calls
        self.names = names
        self.fd = fd
        self.save_id = ""
        """The save whose id the file carries (set by `load`)."""
        self.columns = columns
        """Offsets of the slot columns in the file."""
        weakref.finalize(self, os.close, fd)

    def __len__(self) -> int:
        return len(self.slots)

    def find(self, key: str) -> int | None:
        """The slot of a counted response key, or None."""
        at = _position(self.hi, self.lo, *key_hash(key))
        if at < 0:
            return None
        slot = self.slots[at]
        if slot >= len(self.slots):  # checked here, not at load: max() of 10^5 ints is 4 ms
            raise ValueError("dedupe index damaged: a slot out of range")
        return slot

    def find_call(self, call_id: str) -> str | None:
        """The mark (see ledger_state.call_mark) of a known tool call id, or None."""
        at = _position(self.call_hi, self.call_lo, *key_hash(call_id))
        if at < 0:
            return None
        mark = self.call_marks[at]
        if mark >= len(self.names.marks):
            raise ValueError("dedupe index damaged: a call mark out of range")
        return self.names.marks[mark]

    def slot(self, slot: int) -> Slot:
        """What was counted for `slot`: one small read per column."""
        raw = [
            os.pread(self.fd, width, offset + slot * width)
            for offset, width in zip(self.columns, _SLOT_COLUMNS, strict=True)
        ]
        if any(len(r) != w for r, w in zip(raw, _SLOT_COLUMNS, strict=True)):
            raise ValueError("dedupe index truncated since it was loaded")
        session, model = _unpack_u32(raw[2]), _unpack_u32(raw[3])
        if session >= len(self.names.sessions) or model >= len(self.names.models):
            raise ValueError("dedupe index damaged: a name out of range")
        return Slot(
            list(array("q", raw[0])),
            array("d", raw[1])[0],
            self.names.sessions[session],
            self.names.models[model],
        )

    def column(self, index: int) -> Iterator[bytes]:
        """One slot column in chunks (what a save copies into the next file)."""
        start, width = self.columns[index], _SLOT_COLUMNS[index]
        return _chunks(self.fd, start, start + width * len(self), _CHUNK // width * width)


def _unpack_u32(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


def _position(his: array[int], los: array[int], hi: int, lo: int) -> int:
    """Where (hi, lo) is in the sorted arrays, or -1. Equal `hi` (by chance, 2^-64 a pair)
    is told apart by `lo`, in whatever order such entries were stored."""
    at = bisect_left(his, hi)
    end = len(his)
    while at < end and his[at] == hi:
        if los[at] == lo:
            return at
        at += 1
    return -1


def _chunks(fd: int, start: int, end: int, size: int = _CHUNK) -> Iterator[bytes]:
    """Bytes [start, end) of `fd` in pieces of `size` (a whole number of slots)."""
    while start < end:
        data = os.pread(fd, min(size, end - start), start)
        if not data:
            raise ValueError("dedupe index truncated since it was loaded")
        yield data
        start += len(data)


# -- loading ---------------------------------------------------------------------------------


def load(path: Path, save_id: str) -> DedupeIndex | None:
    """The index at `path` if it is whole and from save `save_id`; None otherwise (missing,
    from another save, truncated, damaged), and the caller scans cold."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        index = _load_fd(fd, save_id)
    except (OSError, ValueError, OverflowError, *_DECODE_ERRORS):
        index = None
    if index is None:
        os.close(fd)
    else:
        index.save_id = save_id
    return index


def saved_id(path: Path) -> str:
    """The save id in the trailer of the index at `path` ("" if none can be read): whether
    the file is still the one a ledger loaded."""
    try:
        with open(path, "rb") as fh:
            fh.seek(-_TRAILER.size, os.SEEK_END)
            magic, saved, _, _ = _TRAILER.unpack(fh.read(_TRAILER.size))
    except (OSError, struct.error):
        return ""
    return saved.hex() if magic == MAGIC else ""


def _load_fd(fd: int, save_id: str) -> DedupeIndex | None:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size < _TRAILER.size + _HEAD.size:
        return None
    trailer = os.pread(fd, _TRAILER.size, st.st_size - _TRAILER.size)
    magic, saved_id, length, crc = _TRAILER.unpack(trailer)
    if magic != MAGIC or saved_id != bytes.fromhex(save_id) or length != st.st_size - len(trailer):
        return None
    check = 0
    for chunk in _chunks(fd, 0, length):
        check = zlib.crc32(chunk, check)
    if check != crc:
        return None
    n_keys, n_calls, n_names = _HEAD.unpack(os.pread(fd, _HEAD.size, 0))
    reader = _Reader(fd, _HEAD.size)
    keys = (reader.array("Q", n_keys), reader.array("Q", n_keys), reader.array("I", n_keys))
    calls = (reader.array("Q", n_calls), reader.array("Q", n_calls), reader.array("I", n_calls))
    names = msgspec.msgpack.decode(reader.take(n_names), type=Names)
    columns = reader.columns(n_keys)
    if reader.offset != length:
        return None
    return DedupeIndex(keys, calls, names, fd, columns)


class _Reader:
    """Reads the sections of an index file one after another."""

    def __init__(self, fd: int, offset: int) -> None:
        self.fd, self.offset = fd, offset

    def take(self, size: int) -> bytes:
        data = os.pread(self.fd, size, self.offset)
        if len(data) != size:
            raise ValueError("short index")
        self.offset += size
        return data

    def array(self, code: str, count: int) -> array[int]:
        values = array(code)
        values.frombytes(self.take(values.itemsize * count))
        return values

    def columns(self, count: int) -> tuple[int, int, int, int]:
        starts = []
        for width in _SLOT_COLUMNS:
            starts.append(self.offset)
            self.offset += width * count
        return starts[0], starts[1], starts[2], starts[3]


# -- saving ----------------------------------------------------------------------------------


def save(
    path: Path,
    save_id: str,
    base: DedupeIndex | None,
    updates: dict[int, tuple[list[int], float]],
    fresh: Fresh,
) -> str:
    """Write base + fresh (with `updates` to base slots) as one index, atomically; returns
    the id the index at `path` carries. With nothing new, the base's file is kept as it is
    (if no other process replaced it since): a restart that found no new key rewrites
    nothing."""
    unchanged = not (fresh.keys or fresh.calls or updates)
    if base is not None and unchanged and base.save_id and saved_id(path) == base.save_id:
        return base.save_id
    names = _names(base, fresh)
    n_base = len(base) if base is not None else 0
    keys = _merged_keys(base, fresh.keys, n_base)
    calls = _merged_calls(base, fresh.calls, names)
    name_blob = msgspec.msgpack.encode(names)
    head = _HEAD.pack(len(keys[0]), len(calls[0]), len(name_blob))
    parts: list[bytes | Iterator[bytes]] = [head, *(a.tobytes() for a in keys)]
    parts += [*(a.tobytes() for a in calls), name_blob]
    parts += _slot_columns(base, updates, fresh, names)
    files.write_atomic_parts(path, _with_trailer(parts, save_id))
    return save_id


def _names(base: DedupeIndex | None, fresh: Fresh) -> Names:
    """The base's names with the fresh ones appended: base indexes stay valid."""
    old = base.names if base is not None else Names([], [], [])
    names = Names(list(old.sessions), list(old.models), list(old.marks))
    for listed, new in (
        (names.sessions, fresh.sessions),
        (names.models, fresh.models),
        (names.marks, fresh.calls.values()),
    ):
        known = set(listed)
        for name in new:
            if name not in known:
                known.add(name)
                listed.append(name)
    return names


def _merged_keys(base: DedupeIndex | None, keys: Sequence[str], n_base: int) -> Columns:
    his, los = key_hashes(keys)
    slots = array("I", range(n_base, n_base + len(keys)))
    if base is None:
        return _sorted(his, los, slots)
    return _merge((base.hi, base.lo, base.slots), (his, los, slots))


def _merged_calls(base: DedupeIndex | None, calls: dict[str, str], names: Names) -> Columns:
    """Base calls (a fresh mark replaces a base one: its result came) and new ones."""
    mark_index = {mark: i for i, mark in enumerate(names.marks)}
    all_his, all_los = key_hashes(calls)
    all_marks = array("I", [mark_index[m] for m in calls.values()])
    if base is None:
        return _sorted(all_his, all_los, all_marks)
    old = (base.call_hi, base.call_lo, array("I", base.call_marks))
    his, los, marks = array("Q"), array("Q"), array("I")
    for hi, lo, mark in zip(all_his, all_los, all_marks, strict=True):
        at = _position(old[0], old[1], hi, lo)
        if at >= 0:
            old[2][at] = mark
            continue
        his.append(hi)
        los.append(lo)
        marks.append(mark)
    return _merge(old, (his, los, marks))


def _sorted(his: array[int], los: array[int], values: array[int]) -> Columns:
    """The three columns in the order of `his`. Sorting ints that carry their position in
    the low bits (`hi << 32 | i`) is one C sort with no key function."""
    packed = [hi << 32 | i for i, hi in enumerate(his)]
    packed.sort()
    order = array("I", [p & 0xFFFFFFFF for p in packed])
    del packed
    return (
        array("Q", map(his.__getitem__, order)),
        array("Q", map(los.__getitem__, order)),
        array(values.typecode, map(values.__getitem__, order)),
    )


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
    fresh: Fresh,
    names: Names,
) -> list[bytes | Iterator[bytes]]:
    """The four slot columns: the base's (copied in chunks, updated slots patched), then the
    fresh slots'."""
    sessions = {name: i for i, name in enumerate(names.sessions)}
    models = {name: i for i, name in enumerate(names.models)}
    fresh_columns = (
        fresh.tokens,
        fresh.cost,
        array("I", [sessions[s] for s in fresh.sessions]).tobytes(),
        array("I", [models[m] for m in fresh.models]).tobytes(),
    )
    parts: list[bytes | Iterator[bytes]] = []
    for index, column in enumerate(fresh_columns):
        if base is not None:
            parts.append(_patched(base, index, updates))
        parts.append(column)
    return parts


def _patched(
    base: DedupeIndex, index: int, updates: dict[int, tuple[list[int], float]]
) -> Iterator[bytes]:
    """A base column with the updated slots' tokens (index 0) or cost (1) replaced."""
    width = _SLOT_COLUMNS[index]
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
    yield _TRAILER.pack(MAGIC, bytes.fromhex(save_id), length, crc)
