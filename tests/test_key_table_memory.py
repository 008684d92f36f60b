"""A history's dedupe keys, once forgotten, leave the process's memory: the tables are
large blocks of the C heap (not Python's small-object pools, which other objects allocated
meanwhile pin), and the heap's free pages go back to the system."""

from __future__ import annotations

import subprocess
import sys

import pytest

GROW_AND_FREE = """
import os, sys
from array import array
from tokentop.engine import key_table

def rss():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

table, kept, before = key_table.KeyTable(), [], rss()
for batch in range(200):  # merged batches, with other objects made between them
    table.add_new(os.urandom(16 * 4000), array("I", range(4000)))
    kept.extend(f"{batch}-{n}" * 3 for n in range(800))
grown = rss() - before
keys_bytes = table.nbytes
del table
key_table.release_freed()
print(grown, keys_bytes, rss() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc, trims glibc")
def test_forgotten_tables_are_given_back() -> None:
    out = subprocess.run(
        [sys.executable, "-c", GROW_AND_FREE], check=True, capture_output=True, text=True
    ).stdout
    grown, keys_bytes, left = map(int, out.split())
    assert keys_bytes == 800_000 * 20  # 49 keys a bucket: what a long history holds
    assert grown >= keys_bytes  # the keys and the strings kept beside them
    assert grown - left >= 0.8 * keys_bytes  # what the keys took is no longer resident
