"""A ledger's dedupe tables: every response key and tool call id it has counted.

They come in three ages, and a slot (a counted response's place) numbers them in order:

- **base**: the cache's index on disk (`DedupeIndex`), with the slots that grew since in
  `updates`; nothing of it is in memory but its sorted hashes.
- **sealed**: hashed keys in memory (`KeyTable`, 20 bytes a key) and their slots' counters
  in arrays: a cold scan's merged batches, or fresh tables grown past `SEAL_KEYS`.
- **fresh**: exact strings in dicts, what the ledger counts now at dict speed; sealed on a
  merge, an export and past `SEAL_KEYS`.

A cold scan reads each batch into a ledger of its own and merges it here by hash, so the
parent never holds a history's keys as strings (they were ~150 bytes each).
"""

from __future__ import annotations

import sys
from array import array
from pathlib import Path

import msgspec

from tokentop.engine import dedupe_index, dedupe_write
from tokentop.engine.dedupe_index import KINDS, DedupeIndex, Delta, Slot, key_digest, key_digests
from tokentop.engine.key_table import DIGEST, KeyTable
from tokentop.engine.ledger_state import LedgerState, PackedDedupe, names_of
from tokentop.engine.slot_columns import SPILL_SLOTS, Columns, SpilledColumns

SEAL_KEYS = 1 << 16
"""Fresh keys and calls held as strings before they are sealed (a ledger reading a long
history in one process keeps its memory bounded)."""


class NameList:
    """Names (sessions, models, call marks) stored once, referred to by index."""

    __slots__ = ("index", "names")

    def __init__(self) -> None:
        self.names: list[str] = []
        self.index: dict[str, int] = {}

    def of(self, name: str) -> int:
        at = self.index.get(name)
        if at is None:
            at = self.index[name] = len(self.names)
            self.names.append(sys.intern(name))
        return at

    def mapped(self, names: list[str], idx: bytes) -> array[int]:
        """Indexes into `names` (packed `idx`) as indexes into this list."""
        to_mine = [self.of(n) for n in names]
        if to_mine == list(range(len(to_mine))):
            return array("I", idx)  # the same names in the same order: nothing to map
        return array("I", [to_mine[i] for i in array("I", idx)])


class DedupeTables:
    """Base, sealed and fresh dedupe tables (see the module docstring). The ledger adds to
    the fresh ones itself (`seen`, `calls`, `fresh`): that is its hot path."""

    def __init__(
        self,
        state: LedgerState,
        base: DedupeIndex | None = None,
        delta: Delta | None = None,
    ) -> None:
        self.seen = state.seen
        """Fresh response key -> slot (the state's own dict, emptied when sealed)."""
        self.calls = state.tool_calls
        """Fresh call id -> `call_mark(name, outcome)` (the state's own dict)."""
        packed, state.packed = state.packed, b""
        self.base = base
        self.n_base = len(base) if base is not None else 0
        self.updates: dict[int, tuple[list[int], float]] = {}
        """Base slots whose counted copy grew since (tokens, cost), written on the next save."""
        self.packed = packed
        """Sealed tables still encoded (a restart's delta, an export): decoded on first use."""
        if delta is not None:
            self.updates = {slot: (tokens, cost) for slot, tokens, cost in delta.updates}
            self.packed = delta.packed
        self._empty()

    def _empty(self) -> None:
        self.keys: KeyTable | None = None
        self.call_table: KeyTable | None = None
        self.sealed: Columns | SpilledColumns = Columns()
        self.sessions, self.models, self.marks = NameList(), NameList(), NameList()
        """Names of the sealed and fresh slots' sessions and models, and of call marks."""
        self.seen.clear()
        self.fresh = Columns()
        self.calls.clear()

    @property
    def first_fresh(self) -> int:
        return self.n_base + len(self.sealed)

    @property
    def old(self) -> bool:
        """Whether anything is sealed or in a base: a fresh miss then needs a hashed look."""
        sealed = self.keys is not None or self.call_table is not None
        return sealed or self.base is not None or bool(self.packed)

    def added(self) -> int:
        """Keys and calls counted since the base (sealed or fresh)."""
        self.unpack()
        calls = len(self.call_table) if self.call_table is not None else 0
        return len(self.sealed) + calls + len(self.seen) + len(self.calls)

    # -- looking up ------------------------------------------------------------------------

    def find_old(self, key: str) -> int | None:
        """The slot of a sealed or base response key, or None."""
        self.unpack()
        digest = key_digest(key)
        if self.keys is not None and (slot := self.keys.get(digest)) >= 0:
            return slot
        return self.base.find_digest(digest) if self.base is not None else None

    def find_call(self, call_id: str) -> str | None:
        """The mark of a known call (ledger_state.call_mark), or None."""
        mark = self.calls.get(call_id)
        if mark is not None or not self.old:
            return mark
        self.unpack()
        digest = key_digest(call_id)
        if self.call_table is not None and (at := self.call_table.get(digest)) >= 0:
            return self.marks.names[at]
        return self.base.find_call_digest(digest) if self.base is not None else None

    def slot(self, slot: int) -> Slot:
        """What is counted for a response: tokens, cost, session and model."""
        if slot < self.n_base:
            counted = self.base.slot(slot)  # type: ignore[union-attr]
            update = self.updates.get(slot)
            return counted if update is None else counted._replace(tokens=update[0], cost=update[1])
        first = self.first_fresh
        cols = self.sealed if slot < first else self.fresh
        tokens, cost, session, model = cols.get(slot - (self.n_base if slot < first else first))
        return Slot(tokens, cost, self.sessions.names[session], self.models.names[model])

    def set_slot(self, slot: int, counts: list[int], cost: float) -> None:
        if slot < self.n_base:
            self.updates[slot] = (counts, cost)
        elif slot < self.first_fresh:
            self.sealed.set(slot - self.n_base, counts, cost)
        else:
            self.fresh.set(slot - self.first_fresh, counts, cost)

    # -- sealing and merging ---------------------------------------------------------------

    def unpack(self) -> None:
        """Decode the sealed tables still encoded (once)."""
        if self.packed:
            packed, self.packed = self.packed, b""
            if not self.merge(msgspec.msgpack.decode(packed, type=PackedDedupe), check=False):
                raise ValueError("dedupe tables damaged: a key stored twice")

    def seal(self) -> None:
        """Move the fresh tables into the sealed ones, hashed."""
        if not self.seen and not self.calls:
            return
        self.unpack()
        first = self.first_fresh
        keys = self.keys or KeyTable()
        keys.add_new(key_digests(self.seen), array("I", range(first, first + len(self.seen))))
        self.keys = keys
        self._seal_columns(self.fresh)
        calls = self.call_table or KeyTable()
        for call_id, mark in self.calls.items():  # a known call (its result came) is replaced
            calls.put(key_digest(call_id), self.marks.of(mark))
        self.call_table = calls
        self.seen.clear()
        self.calls.clear()
        self.fresh = Columns()

    def merge(self, packed: PackedDedupe, *, check: bool = True) -> bool:
        """Add tables read elsewhere (a worker's batch), numbered after every slot here;
        with `check`, False (and nothing added) if any key or call is already known.
        The fresh tables must be empty (sealed)."""
        n = len(packed.cost) // 8
        if len(packed.digests) != DIGEST * n or len(packed.call_digests) % DIGEST:
            raise ValueError("dedupe tables damaged: digests of the wrong length")
        keys, calls = self.keys or KeyTable(), self.call_table or KeyTable()
        first = self.first_fresh
        slots = array("I", packed.slots) if packed.slots else array("I", range(first, first + n))
        marks = self.marks.mapped(packed.call_marks, packed.call_mark_idx)
        if not keys.add_new(packed.digests, slots, first if packed.slots else 0, check=check):
            return False
        if not calls.add_new(packed.call_digests, marks, check=check):
            keys.remove_last(packed.digests)
            return False
        base = self.base
        if check and base is not None and base.knows_any(packed.digests, packed.call_digests):
            keys.remove_last(packed.digests)
            calls.remove_last(packed.call_digests)
            return False
        self._seal_columns(self._columns(packed, n))
        self.keys = keys if len(keys) else self.keys
        self.call_table = calls if len(calls) else self.call_table
        return True

    def _seal_columns(self, columns: Columns) -> None:
        sealed = self.sealed
        if type(sealed) is Columns and len(sealed) + len(columns) > SPILL_SLOTS:
            self.sealed = sealed = SpilledColumns(sealed)
        sealed.extend(columns)

    def _columns(self, packed: PackedDedupe, n: int) -> Columns:
        cols = Columns()
        cols.tokens.frombytes(packed.tokens)
        cols.cost.frombytes(packed.cost)
        cols.session = self.sessions.mapped(packed.sessions, packed.session_idx)
        cols.model = self.models.mapped(packed.models, packed.model_idx)
        if not (len(cols.tokens) == KINDS * n and len(cols.session) == len(cols.model) == n):
            raise ValueError("dedupe tables damaged: columns of unequal length")
        return cols

    # -- handing on --------------------------------------------------------------------------

    def export(self) -> bytes:
        """Everything sealed and fresh (not the base), packed; slots count from the base's.
        Tables never decoded are handed on as they came."""
        if self.packed and not self.seen and not self.calls:
            return self.packed
        return msgspec.msgpack.encode(self.packed_tables())

    def packed_tables(self) -> PackedDedupe:
        """Everything counted since the base, packed. The fresh tables alone (a cold scan's
        batch) are hashed as they are, without building a sealed table first."""
        if self.keys is None and self.call_table is None and not self.packed:
            return self._pack_fresh()
        self.seal()
        self.unpack()
        digests, slots = self.keys.columns() if self.keys is not None else (b"", array("I"))
        call_digests, marks = (
            self.call_table.columns() if self.call_table is not None else (b"", array("I"))
        )
        sealed, n_base = self.sealed, self.n_base
        rel = array("I", [s - n_base for s in slots]) if n_base else slots
        tokens, cost, session, model = (sealed.column(i) for i in range(4))
        return PackedDedupe(
            digests, rel.tobytes(), tokens, cost, self.sessions.names, session,
            self.models.names, model, call_digests, self.marks.names, marks.tobytes(),
        )  # fmt: skip

    def _pack_fresh(self) -> PackedDedupe:
        fresh = self.fresh
        marks, mark_idx = names_of(list(self.calls.values()))
        return PackedDedupe(
            key_digests(self.seen), b"", fresh.tokens.tobytes(), fresh.cost.tobytes(),
            self.sessions.names, fresh.session.tobytes(), self.models.names,
            fresh.model.tobytes(), key_digests(self.calls), marks, mark_idx,
        )  # fmt: skip

    def save(self, path: Path, delta_path: Path, save_id: str) -> tuple[str, str]:
        """Write the tables beside a cache; returns the ids the index and its delta carry.

        Few keys added since the index was written (up to `delta_limit`): only they go, to
        the delta (the index is kept as it is, if no other process replaced it). Else one
        new index holds everything, and there is no delta; counting goes on from it."""
        base, added = self.base, self.added()
        if (
            base is not None
            and added <= dedupe_index.delta_limit(len(base))
            and dedupe_index.saved_id(path) == base.save_id
        ):
            if not added and not self.updates:
                return base.save_id, ""
            updates = [(slot, tokens, cost) for slot, (tokens, cost) in self.updates.items()]
            dedupe_index.save_delta(delta_path, save_id, Delta(self.export(), updates))
            return base.save_id, save_id
        written = dedupe_write.save(path, save_id, base, self.updates, self.packed_tables())
        self._rebase(dedupe_index.load(path, written))
        return written, ""

    def _rebase(self, index: DedupeIndex | None) -> None:
        """Count on from the index just written (it holds every key): what was sealed is
        dropped, so a long-running process does not keep it, nor write it all again at
        every save. Slot numbers stay: the index keeps them."""
        if index is None or len(index) != self.first_fresh + len(self.fresh):
            return  # replaced meanwhile, or unreadable: keep counting on what is in memory
        self.forget()
        self.base, self.n_base = index, len(index)

    def forget(self) -> None:
        """Drop every table (a ledger that counts nothing more, or rebased on an index)."""
        self.base, self.n_base, self.packed, self.updates = None, 0, b"", {}
        self._empty()
