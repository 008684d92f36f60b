"""The counters of each counted response (a slot): tokens, cost, session and model.

A slot is 64 bytes (six int64 token counts, a float64 cost, two uint32 name indexes). The
fresh slots and a modest history's sealed ones sit in arrays (`Columns`); past `SPILL_SLOTS`
the sealed ones move to unlinked temporary files (`SpilledColumns`), since a cold scan only
reads a slot back when a later copy of its response turns up: a 4.3 GB history's million
slots were 61 MB of memory.
"""

from __future__ import annotations

import os
from array import array
from typing import Any

from tokentop.engine.dedupe_index import KINDS, read_chunks
from tokentop.engine.dedupe_index import SLOT_COLUMNS as _WIDTHS

SPILL_SLOTS = 1 << 18
"""Sealed slots kept in memory (16 MB) before they go to files."""


class Columns:
    """Slots' counters (tokens, cost) and names (session, model), one entry a slot."""

    __slots__ = ("cost", "model", "session", "tokens")

    def __init__(self) -> None:
        self.tokens, self.cost = array("q"), array("d")
        self.session, self.model = array("I"), array("I")

    def __len__(self) -> int:
        return len(self.cost)

    def get(self, at: int) -> tuple[list[int], float, int, int]:
        tokens = list(self.tokens[at * KINDS : (at + 1) * KINDS])
        return tokens, self.cost[at], self.session[at], self.model[at]

    def set(self, at: int, counts: list[int], cost: float) -> None:
        self.tokens[at * KINDS : (at + 1) * KINDS] = array("q", counts)
        self.cost[at] = cost

    def extend(self, other: Columns) -> None:
        self.tokens += other.tokens
        self.cost += other.cost
        self.session += other.session
        self.model += other.model

    def column(self, index: int) -> bytes:
        """Tokens, cost, session or model (`index` 0-3) of every slot."""
        columns: list[array[Any]] = [self.tokens, self.cost, self.session, self.model]
        return columns[index].tobytes()


class SpilledColumns:
    """`Columns` in four unlinked temporary files, appended to and read by offset."""

    __slots__ = ("count", "files")

    def __init__(self, columns: Columns) -> None:
        import tempfile  # only past SPILL_SLOTS: ~3 ms of every start otherwise

        self.files = [tempfile.TemporaryFile(buffering=0) for _ in _WIDTHS]  # noqa: SIM115
        self.count = 0
        self.extend(columns)

    def __len__(self) -> int:
        return self.count

    def get(self, at: int) -> tuple[list[int], float, int, int]:
        tokens, cost = array("q", self._read(0, at)), array("d", self._read(1, at))
        session, model = array("I", self._read(2, at)), array("I", self._read(3, at))
        return list(tokens), cost[0], session[0], model[0]

    def set(self, at: int, counts: list[int], cost: float) -> None:
        os.pwrite(self.files[0].fileno(), array("q", counts).tobytes(), at * _WIDTHS[0])
        os.pwrite(self.files[1].fileno(), array("d", [cost]).tobytes(), at * _WIDTHS[1])

    def extend(self, other: Columns) -> None:
        for index, file in enumerate(self.files):
            file.write(other.column(index))
        self.count += len(other)

    def column(self, index: int) -> bytes:
        end = self.count * _WIDTHS[index]
        return b"".join(read_chunks(self.files[index].fileno(), 0, end))

    def _read(self, index: int, at: int) -> bytes:
        width = _WIDTHS[index]
        raw = os.pread(self.files[index].fileno(), width, at * width)
        if len(raw) != width:
            raise ValueError("a spilled dedupe column was cut short")
        return raw
