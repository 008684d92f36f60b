"""The dedupe tables as the cache keeps them: hashed keys in sorted arrays, counters on disk.

A long history has 100k's of response keys and tool call ids. Held as Python strings in dicts
they took ~150 bytes each and most of a second to load, yet a restart that reads one changed
file needs only the few keys its new lines repeat. So the cache's side file keeps each key as
a 128-bit blake2b hash in sorted arrays (20 bytes with its slot), read with one `pread` per
array, and the counters of each response (64 bytes a slot: tokens, cost, session, model)
stay in the file, read with a `pread` only when a key turns up again (a later copy of a
response, a resumed session). Keys added since the cache was loaded stay exact strings in
the ledger (`LedgerState.seen`) and are hashed when the cache is next saved.

Rewriting the whole index for every save would cost ~1 ms per MB of it, however few keys
were new, so a save with few new keys (below `delta_limit`) writes only a delta beside it:
those keys as exact strings (ledger_state.pack) and the base slots that grew. A save past
the limit writes a new index with everything, and no delta.

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
import sys
import weakref
import zlib
from _blake2 import blake2b  # the builtin; `hashlib` also loads OpenSSL
from array import array
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import msgspec

from tokentop import files
from tokentop.engine.key_table import KEYS_NATIVE

if TYPE_CHECKING:
    Columns = tuple[array[int], array[int], array[int]]
    """Hashes (hi, lo) and one value each, sorted by hi."""

KINDS = 6
MAGIC = b"ttdedup2"
HEAD = struct.Struct("<QQQ")
"""Keys (= slots), calls, bytes of the names."""
TRAILER = struct.Struct("<8s16sQI")
"""Magic, save id, bytes before the trailer, their crc32."""
_CHUNK = 1 << 20
_DECODE_ERRORS = (msgspec.DecodeError, msgspec.ValidationError, RecursionError)
SLOT_COLUMNS = (8 * KINDS, 8, 4, 4)
"""Bytes per slot of each column: tokens, cost, session index, model index."""
RECORD_BYTES = 8 + 8 + 4
"""Bytes per key and per call in the sorted sections: the hash's two halves and a value."""


def key_hash(key: str) -> tuple[int, int]:
    """The two 64-bit halves of a key's 128-bit blake2b digest."""
    digest = blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:], "little")


_KEY_HASH = key_hash


def key_digest(key: str) -> bytes:
    """The 16 bytes of `key_hash` (its halves little-endian, as blake2b gives them): what
    a ledger keeps in memory (key_table.py)."""
    if key_hash is not _KEY_HASH:
        hi, lo = key_hash(key)
        return hi.to_bytes(8, "little") + lo.to_bytes(8, "little")
    return blake2b(key.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def key_digests(keys: Iterable[str]) -> bytes:
    """`key_digest` of many keys, joined: in C where built (a cold scan hashes every
    response key and call id; C's blake2b takes a fifth of the time of a call per key)."""
    if key_hash is not _KEY_HASH:
        return b"".join([key_digest(k) for k in keys])
    if KEYS_NATIVE is not None:
        keys = keys if isinstance(keys, list) else list(keys)
        joined: bytes | None = KEYS_NATIVE.digests(keys)
        if joined is not None:
            return joined
    return b"".join(
        [blake2b(k.encode("utf-8", "surrogatepass"), digest_size=16).digest() for k in keys]
    )


def digest_halves(digests: bytes) -> tuple[array[int], array[int]]:
    """Joined digests as (hi, lo) arrays of `key_hash`'s halves."""
    joined = array("Q", digests)
    if sys.byteorder == "big":
        joined.byteswap()
    return joined[0::2], joined[1::2]


class Names(msgspec.Struct, array_like=True):
    sessions: list[str]
    models: list[str]
    marks: list[str]


class Slot(NamedTuple):
    tokens: list[int]
    cost: float
    session: str
    model: str


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
        return self.find_digest(key_digest(key))

    def find_digest(self, digest: bytes) -> int | None:
        """`find` of a key by its `key_digest`."""
        at = position(self.hi, self.lo, *_halves(digest))
        if at < 0:
            return None
        slot = self.slots[at]
        if slot >= len(self.slots):  # checked here, not at load: max() of 10^5 ints is 4 ms
            raise ValueError("dedupe index damaged: a slot out of range")
        return slot

    def knows_any(self, digests: bytes, calls: bytes) -> bool:
        """Whether any of the joined key digests, or of the call digests, is indexed."""
        return _any_at(self.hi, self.lo, digests) or _any_at(self.call_hi, self.call_lo, calls)

    def find_call(self, call_id: str) -> str | None:
        """The mark (see ledger_state.call_mark) of a known tool call id, or None."""
        return self.find_call_digest(key_digest(call_id))

    def find_call_digest(self, digest: bytes) -> str | None:
        """`find_call` of a call id by its `key_digest`."""
        at = position(self.call_hi, self.call_lo, *_halves(digest))
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
            for offset, width in zip(self.columns, SLOT_COLUMNS, strict=True)
        ]
        if any(len(r) != w for r, w in zip(raw, SLOT_COLUMNS, strict=True)):
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
        start, width = self.columns[index], SLOT_COLUMNS[index]
        return read_chunks(self.fd, start, start + width * len(self), _CHUNK // width * width)


def _any_at(his: array[int], los: array[int], digests: bytes) -> bool:
    return any(
        position(his, los, *_halves(digests[i : i + 16])) >= 0 for i in range(0, len(digests), 16)
    )


def _halves(digest: bytes) -> tuple[int, int]:
    return int.from_bytes(digest[:8], "little"), int.from_bytes(digest[8:16], "little")


def _unpack_u32(raw: bytes) -> int:
    return int.from_bytes(raw, "little")


def position(his: array[int], los: array[int], hi: int, lo: int) -> int:
    """Where (hi, lo) is in the sorted arrays, or -1. Equal `hi` (by chance, 2^-64 a pair)
    is told apart by `lo`, in whatever order such entries were stored."""
    at = bisect_left(his, hi)
    end = len(his)
    while at < end and his[at] == hi:
        if los[at] == lo:
            return at
        at += 1
    return -1


def read_chunks(fd: int, start: int, end: int, size: int = _CHUNK) -> Iterator[bytes]:
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
            fh.seek(-TRAILER.size, os.SEEK_END)
            magic, saved, _, _ = TRAILER.unpack(fh.read(TRAILER.size))
    except (OSError, struct.error):
        return ""
    return saved.hex() if magic == MAGIC else ""


def _load_fd(fd: int, save_id: str) -> DedupeIndex | None:
    """The index, its crc checked in the same pass that reads the sections kept in memory
    (a restart read those 11 MB twice on the 859 MB corpus); the slot columns, read on
    demand later, are only summed. Sizes are checked against the file's before anything is
    read, so a damaged head cannot ask for more than the file holds."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_size < TRAILER.size + HEAD.size:
        return None
    trailer = os.pread(fd, TRAILER.size, st.st_size - TRAILER.size)
    magic, saved_id, length, crc = TRAILER.unpack(trailer)
    if magic != MAGIC or saved_id != bytes.fromhex(save_id) or length != st.st_size - len(trailer):
        return None
    reader = _Reader(fd, 0)
    n_keys, n_calls, n_names = HEAD.unpack(reader.take(HEAD.size))
    columns_size = sum(SLOT_COLUMNS) * n_keys
    if HEAD.size + RECORD_BYTES * (n_keys + n_calls) + n_names + columns_size != length:
        return None
    keys = (reader.array("Q", n_keys), reader.array("Q", n_keys), reader.array("I", n_keys))
    calls = (reader.array("Q", n_calls), reader.array("Q", n_calls), reader.array("I", n_calls))
    names_blob = reader.take(n_names)
    columns = reader.columns(n_keys)
    if reader.checked(length) != crc:
        return None
    names = msgspec.msgpack.decode(names_blob, type=Names)
    return DedupeIndex(keys, calls, names, fd, columns)


class _Reader:
    """Reads the sections of an index file one after another, summing their crc32."""

    def __init__(self, fd: int, offset: int) -> None:
        self.fd, self.offset = fd, offset
        self.crc = 0
        self.summed = offset
        """Where the crc has got to (the columns are skipped, then summed by `checked`)."""

    def take(self, size: int) -> bytes:
        data = os.pread(self.fd, size, self.offset)
        if len(data) != size:
            raise ValueError("short index")
        self.offset += size
        self.crc = zlib.crc32(data, self.crc)
        self.summed = self.offset
        return data

    def array(self, code: str, count: int) -> array[int]:
        values = array(code)
        values.frombytes(self.take(values.itemsize * count))
        return values

    def columns(self, count: int) -> tuple[int, int, int, int]:
        starts = []
        for width in SLOT_COLUMNS:
            starts.append(self.offset)
            self.offset += width * count
        return starts[0], starts[1], starts[2], starts[3]

    def checked(self, end: int) -> int:
        """The crc32 of the file's first `end` bytes (what was not read yet, read for it)."""
        crc = self.crc
        for chunk in read_chunks(self.fd, self.summed, end):
            crc = zlib.crc32(chunk, crc)
        return crc


# -- the delta beside the index ----------------------------------------------------------


class Delta(msgspec.Struct, array_like=True):
    """What was added since the index was written: keys as strings, grown base slots."""

    packed: bytes
    """ledger_state.pack of the keys, calls and slots added (slots count from the index's
    last one)."""
    updates: list[tuple[int, list[int], float]]
    """Index slots whose counted copy grew: slot, tokens, cost."""


def delta_limit(indexed: int) -> int:
    """Keys a delta may hold before a save writes a whole new index instead."""
    return max(4096, indexed // 8)


def _delta_header(delta_id: str, blob: bytes) -> bytes:
    return f"{delta_id} {len(blob)} {zlib.crc32(blob):08x}\n".encode()


def save_delta(path: Path, delta_id: str, delta: Delta) -> None:
    blob = msgspec.msgpack.encode(delta)
    files.write_atomic(path, _delta_header(delta_id, blob) + blob)


def load_delta(path: Path, delta_id: str, indexed: int) -> Delta | None:
    """The delta at `path` if it is whole, from save `delta_id` and fits an index of
    `indexed` slots; None otherwise (the caller scans cold)."""
    try:
        with open(path, "rb") as fh:
            header, _, blob = fh.read().partition(b"\n")
        if header + b"\n" != _delta_header(delta_id, blob):
            return None
        delta = msgspec.msgpack.decode(blob, type=Delta)
    except (OSError, *_DECODE_ERRORS):
        return None
    if any(not 0 <= slot < indexed or len(tokens) != KINDS for slot, tokens, _ in delta.updates):
        return None
    return delta
