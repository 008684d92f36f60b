"""The C dedupe keys (`_keys_native.c`) against their Python reference.

The table must answer every operation as `key_table.PyKeyTable` does (its column order may
differ: both are in bucket order, and their buckets differ), and the digests must be
hashlib's blake2b-128 of each key's UTF-8, so an index written by one is read by the other.
"""

from __future__ import annotations

import hashlib
import os
import random
from array import array

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokentop.engine import dedupe_index, key_table
from tokentop.engine.key_table import KEYS_NATIVE, PyKeyTable

pytestmark = pytest.mark.skipif(KEYS_NATIVE is None, reason="built without the C path")


def test_the_table_in_use_is_the_c_one_where_built() -> None:
    assert key_table.KeyTable is (KEYS_NATIVE.KeyTable if KEYS_NATIVE else PyKeyTable)


def test_digests_are_blake2b_128_of_utf8() -> None:
    assert KEYS_NATIVE is not None
    rng = random.Random(3)
    keys = ["", "a", "claude:msg_1", "é😀", "x" * 127, "y" * 128, "z" * 129, "w" * 1000]
    keys += ["".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(300)))
             for _ in range(300)]  # fmt: skip
    want = b"".join(hashlib.blake2b(k.encode(), digest_size=16).digest() for k in keys)
    assert KEYS_NATIVE.digests(keys) == want
    assert dedupe_index.key_digests(iter(keys)) == want  # any iterable, as the ledger's dicts
    assert KEYS_NATIVE.digests(["a\ud800"]) is None  # a lone surrogate: Python encodes it
    assert dedupe_index.key_digests(["a\ud800"]) == dedupe_index.key_digest("a\ud800")


def digest(n: int) -> bytes:
    return hashlib.blake2b(n.to_bytes(4, "little"), digest_size=16).digest()


Op = tuple[str, list[int], int, bool]


@settings(max_examples=150, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["add", "put", "get", "remove_last"]),
            st.lists(st.integers(0, 3000), max_size=120),
            st.integers(0, 2**20),
            st.booleans(),
        ),
        max_size=40,
    )
)
def test_every_operation_answers_as_the_python_table(ops: list[Op]) -> None:
    assert KEYS_NATIVE is not None
    c_table, py_table = KEYS_NATIVE.KeyTable(), PyKeyTable()
    last_added: bytes | None = None
    for op, numbers, value, check in ops:
        joined = b"".join(digest(n) for n in numbers)
        if op == "add":
            if not check:  # the caller promises none is stored: keep the promise
                numbers = [n + 10_000 + value for n in dict.fromkeys(numbers)]
                joined = b"".join(digest(n) for n in numbers)
                if any(py_table.get(digest(n)) >= 0 for n in numbers):
                    continue
            values = array("I", [(n * 7) & 0xFFFF for n in numbers])
            done = c_table.add_new(joined, values, value, check=check)
            assert done == py_table.add_new(joined, values, value, check=check)
            last_added = joined if done else None
        elif op == "put" and numbers:
            c_table.put(digest(numbers[0]), value)
            py_table.put(digest(numbers[0]), value)
            last_added = None
        elif op == "remove_last" and last_added is not None:
            c_table.remove_last(last_added)
            py_table.remove_last(last_added)
            last_added = None
        for n in [*numbers[:5], value % 3000]:
            assert c_table.get(digest(n)) == py_table.get(digest(n))
        assert len(c_table) == len(py_table) == c_table.count
    assert columns(c_table) == columns(py_table)
    assert c_table.nbytes == py_table.nbytes


def columns(table: PyKeyTable) -> dict[bytes, int]:
    digests, values = table.columns()
    found = {digests[i * 16 : i * 16 + 16]: values[i] for i in range(len(values))}
    assert len(found) == len(values) == len(table)
    return found


def test_a_large_table_finds_every_key_and_no_other() -> None:
    """Past many doublings of its buckets (200,000 keys: 256 buckets to 8192)."""
    assert KEYS_NATIVE is not None
    table = KEYS_NATIVE.KeyTable()
    joined = os.urandom(16 * 200_000)
    for at in range(0, 200_000, 10_000):
        part = joined[at * 16 : (at + 10_000) * 16]
        assert table.add_new(part, array("I", range(at, at + 10_000)), check=True)
    assert len(table) == 200_000
    for i in range(0, 200_000, 997):
        assert table.get(joined[i * 16 : i * 16 + 16]) == i
    assert table.get(os.urandom(16)) == -1
    again = joined[: 16 * 3] + os.urandom(16)
    assert not table.add_new(again, array("I", [1, 2, 3, 4]), check=True)
    assert len(table) == 200_000 and table.get(again[-16:]) == -1  # nothing was stored
    digests, values = table.columns()
    assert len(digests) == 16 * 200_000 and sorted(values) == list(range(200_000))


def test_index_columns_sort_as_the_python_sort(monkeypatch: pytest.MonkeyPatch) -> None:
    from tokentop.engine import dedupe_write

    rng = random.Random(11)
    his = array(
        "Q", [rng.choice([0, 1, 2**63, 2**64 - 1, rng.getrandbits(64)]) for _ in range(5000)]
    )
    los = array("Q", [rng.getrandbits(64) for _ in range(5000)])
    values = array("I", [rng.getrandbits(32) for _ in range(5000)])
    in_c = dedupe_write._sorted(his, los, values)
    monkeypatch.setattr(dedupe_write, "KEYS_NATIVE", None)
    in_python = dedupe_write._sorted(his, los, values)
    assert in_c == in_python
    assert list(in_c[0]) == sorted(his) and in_c[2].typecode == "I"
    monkeypatch.undo()
    assert dedupe_write._sorted(array("Q"), array("Q"), array("I")) == (
        array("Q"), array("Q"), array("I"),
    )  # fmt: skip


def test_a_table_made_without_init_is_empty_and_offsets_stay_in_uint32() -> None:
    assert KEYS_NATIVE is not None
    table = KEYS_NATIVE.KeyTable.__new__(KEYS_NATIVE.KeyTable)  # crashed: no buckets
    assert table.get(bytes(16)) == -1 and len(table) == 0
    for t in (KEYS_NATIVE.KeyTable(), PyKeyTable()):
        with pytest.raises(OverflowError):
            t.add_new(digest(1) + digest(2), array("I", [0, 2**32 - 1]), 1)
        assert len(t) == 0 and t.get(digest(1)) == -1  # nothing stored
