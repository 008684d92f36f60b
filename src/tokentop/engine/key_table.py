"""Dedupe keys held in memory as 128-bit hashes: what a ledger has counted, compactly.

A history of millions of responses and tool calls kept every key as a Python string in a
dict: ~150 bytes each, 300 MB on a 4.3 GB history. Here a key is its 16-byte blake2b digest
(the one the cache's index keeps, `dedupe_index.key_digest`) and a 4-byte value (a response's
slot, a tool call's mark), 20 bytes, packed into `bytes` buckets chosen by the digest's top
bits: a lookup is one `bytes.find` in a bucket of a few dozen records. Many keys at once (a
merged batch) are cut into records and sorted into buckets by C code (array slices), which
leaves one step of Python per key.

Few buckets (16384), so on a long history most outgrow 512 bytes and live in the C heap: a
bucket grows by a copy, and the C heap reuses the freed block for the next, larger one.
65536 small buckets lived in Python's pools of fixed sizes, where each outgrown size left
pools pinned by a few other objects: 20 MB of holes on a 4.3 GB history, and no memory
given back when the tables were dropped (`release_freed`).

Why a hash is exact enough: see dedupe_index.py (two keys merge only on a 128-bit
collision). Equal first halves are told apart by the second: records match on all 16 bytes.
"""

from __future__ import annotations

import contextlib
import os
import sys
from array import array
from types import ModuleType
from typing import TYPE_CHECKING

RECORD = 20
"""Bytes per key: the digest, then the value (uint32, little-endian)."""
DIGEST = 16
TOP = 16
"""Bits of a digest (its bytes 6-7) that can choose a bucket."""
SMALL, LARGE = 8, 14
"""Bucket bits: 256 buckets while a table is small, then 16384: past ~400,000 keys most
buckets are over 512 bytes (see the module docstring). 8192 saved 5 MB more on a 4.3 GB
history but cost 3-12 % of its scan's time in longer copies and searches; 65536 cost 17 MB."""
PER_BUCKET = 32
"""Records per bucket past which a small table grows."""


KEYS_NATIVE: ModuleType | None
try:
    from tokentop import _keys_native as KEYS_NATIVE
except ImportError:  # built without a C compiler: the table below
    KEYS_NATIVE = None
if os.environ.get("TOKENTOP_NATIVE") == "0":  # the Python path, to compare or to rule out C
    KEYS_NATIVE = None


class PyKeyTable:
    """Digest -> uint32, in 2^bits buckets of packed records. Where the C table is built
    (`_keys_native.KeyTable`: the same methods, a hash table whose inserts cost the same
    at any size) `KeyTable` is that one; this one is its reference and fallback."""

    __slots__ = ("_shift", "buckets", "count")

    def __init__(self, bits: int = SMALL) -> None:
        self._shift = TOP - bits
        self.buckets: list[bytes] = [b""] * (1 << bits)
        self.count = 0

    def __len__(self) -> int:
        return self.count

    @property
    def nbytes(self) -> int:
        """Bytes the records take (20 a key)."""
        return sum(len(bucket) for bucket in self.buckets)

    def get(self, digest: bytes) -> int:
        """The value stored for `digest`, or -1."""
        bucket = self.buckets[(digest[7] << 8 | digest[6]) >> self._shift]
        at = _at(bucket, digest)
        return int.from_bytes(bucket[at + DIGEST : at + RECORD], "little") if at >= 0 else -1

    def put(self, digest: bytes, value: int) -> None:
        """Store `value` for `digest`, replacing what was stored."""
        self._grow(1)
        i = (digest[7] << 8 | digest[6]) >> self._shift
        bucket = self.buckets[i]
        at = _at(bucket, digest)
        if at >= 0:
            tail = bucket[at + RECORD :]
            self.buckets[i] = bucket[: at + DIGEST] + value.to_bytes(4, "little") + tail
        else:
            self.buckets[i] = bucket + digest + value.to_bytes(4, "little")
            self.count += 1

    def add_new(
        self, digests: bytes, values: array[int], offset: int = 0, *, check: bool = False
    ) -> bool:
        """Store joined digests with `values` (+ `offset`). With `check`, False (and nothing
        stored) if one is stored already; without, the caller knows none is."""
        self._grow(len(values))
        joined = _records(digests, values, offset)
        buckets = self.buckets
        indexes = self._indexes(joined, RECORD)
        records = _cut(joined, RECORD)
        if check:
            for n, (ix, record) in enumerate(zip(indexes, records, strict=True)):
                bucket = buckets[ix]
                if record[:DIGEST] in bucket and _at(bucket, record[:DIGEST]) >= 0:
                    self._pop(indexes[:n])
                    return False
                buckets[ix] = bucket + record
        else:
            for ix, record in zip(indexes, records, strict=True):
                buckets[ix] += record
        self.count += len(values)
        return True

    def remove_last(self, digests: bytes) -> None:
        """Take out the joined digests that the last `add_new` stored."""
        self._pop(self._indexes(digests, DIGEST))
        self.count -= len(digests) // DIGEST

    def _pop(self, indexes: array[int]) -> None:
        buckets = self.buckets
        for ix in reversed(indexes):
            buckets[ix] = buckets[ix][:-RECORD]

    def columns(self) -> tuple[bytes, array[int]]:
        """Every digest (joined) and its value, in bucket order; copied by C code, not a
        Python step per key (a first save of a long history holds millions)."""
        words = array("I", b"".join(self.buckets))  # 5 words a record: digest, value
        digests = array("I", bytes(DIGEST * self.count))
        for k in range(4):
            digests[k::4] = words[k::5]
        values = words[4::5]
        if sys.byteorder == "big":
            values.byteswap()
        return digests.tobytes(), values

    def _indexes(self, joined: bytes, width: int) -> array[int]:
        """The bucket of each digest (records `width` bytes apart): bytes 6-7 of each are
        the top of its first half."""
        top = array("H", memoryview(joined).cast("H")[3 :: width // 2].tobytes())
        if sys.byteorder == "big":
            top.byteswap()
        shift = self._shift
        return array("H", [t >> shift for t in top]) if shift else top

    def _grow(self, extra: int) -> None:
        """Before `extra` more keys: past PER_BUCKET a bucket, spread a small table over the
        large number of buckets (done before adding, so `remove_last` finds its records)."""
        small = self._shift > TOP - LARGE
        if small and self.count + extra > PER_BUCKET << (TOP - self._shift):
            digests, values = self.columns()
            self._shift, self.buckets = TOP - LARGE, [b""] * (1 << LARGE)
            self.count = 0
            self.add_new(digests, values)


if TYPE_CHECKING:
    KeyTable = PyKeyTable
else:
    KeyTable = KEYS_NATIVE.KeyTable if KEYS_NATIVE is not None else PyKeyTable


def _at(bucket: bytes, digest: bytes) -> int:
    """Where `digest` starts a record of `bucket`, or -1 (a match across two records, which
    takes a 2^-128 chance, is passed over)."""
    at = bucket.find(digest)
    while at >= 0 and at % RECORD:
        at = bucket.find(digest, at + 1)
    return at


def _cut(joined: bytes, width: int) -> list[bytes]:
    return [joined[i : i + width] for i in range(0, len(joined), width)]


def _records(digests: bytes, values: array[int], offset: int) -> bytes:
    """Digests and values interleaved into records, by array slice assignment."""
    if offset:
        values = array("I", [v + offset for v in values])
    elif sys.byteorder == "big":
        values = array("I", values)
    if sys.byteorder == "big":
        values.byteswap()
    words = array("I", bytes(RECORD * len(values)))
    digest_words = array("I", digests)
    for k in range(4):
        words[k::5] = digest_words[k::4]
    words[4::5] = values
    return words.tobytes()


RELEASE_MIN_KEYS = 1 << 16
"""Keys (1.3 MB) below which dropped tables are not worth `release_freed`."""


def release_freed() -> None:
    """Give the C heap's free pages back to the system (glibc keeps them): a table's
    buckets are blocks of the C heap, which Python's own small objects (a snapshot's,
    say) never reuse, so freed tables would otherwise still count in the RSS."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):  # not glibc (musl has no trim)
            ctypes.CDLL(None).malloc_trim(0)
