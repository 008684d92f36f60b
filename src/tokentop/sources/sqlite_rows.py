"""A SQLite database of session rows, queried read-only whenever it (or its `-wal`) changes.

Goose and Crush keep one row per session with running totals, updated in place, so there
is nothing to tail: the parser re-queries the table on each change and emits the sessions
whose totals moved (see `opencode.py` for the same read-only, never-blocking open). Every
value read is untrusted: a count that is not an integer in 0..MAX_COUNT makes that row a bad
record, and the rows read per query are bounded.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import closing
from pathlib import Path

from tokentop.model import Event
from tokentop.sources.base import MAX_COUNT, name_text
from tokentop.sources.opencode import connect_ro
from tokentop.sources.wholefile import Signature, WholeFileParser, is_regular, settled, signature

MAX_ROWS = 200_000
"""Sessions read per query: far more than anyone keeps, few enough to bound the work."""


class SqliteRowsParser(WholeFileParser):
    """Re-queries the database on change; subclasses implement `read`."""

    wal_seen: Signature | None = None

    def refresh(self, out: list[Event]) -> bool:
        path = self.fs_path()
        sig, wal = signature(path), signature(path + "-wal")
        if sig is None:
            return False
        if not all(is_regular(p) for p in (path, path + "-wal", path + "-shm") if _exists(p)):
            self.bad_lines, self.seen = 1, None  # SQLite's open() would block on a FIFO
            self.last_error = "not a regular file (FIFO, device or socket), skipped"
            return False
        wal_quiet = wal == self.wal_seen and (wal is None or settled(wal, wal, self.read_at_ns))
        if settled(sig, self.seen, self.read_at_ns) and wal_quiet:
            return False
        self.seen, self.wal_seen, self.read_at_ns, self.size = sig, wal, time.time_ns(), sig[0]
        before = len(out)
        try:
            with closing(connect_ro(path)) as db:
                db.row_factory = sqlite3.Row
                self.read(db, out)
        except sqlite3.Error as exc:
            self.seen = None  # try again on the next change, but count the failure once
            reason = f"cannot read the database: {exc}"
            if self.last_error != name_text(reason[:200]):
                self.bad(reason)
            return False
        return len(out) > before

    def read(self, db: sqlite3.Connection, out: list[Event]) -> None:
        raise NotImplementedError


def _exists(path: str) -> bool:
    return Path(path).exists() or Path(path).is_symlink()


def columns(db: sqlite3.Connection, table: str) -> set[str]:
    """The table's column names (schemas grow by migration; older files lack some)."""
    return {row[1] for row in db.execute(f"PRAGMA table_info({table})")}


def count(row: sqlite3.Row, column: str) -> int:
    """A token count from a row: 0 when absent or NULL; ValueError when it is not one."""
    value = cell(row, column)
    if value is None:
        return 0
    if type(value) is not int or not 0 <= value <= MAX_COUNT:
        raise ValueError(f"{column} = {str(value)[:40]!r} is not a token count")
    return value


def money(row: sqlite3.Row, column: str) -> float | None:
    """A recorded cost above zero, or None (absent, NULL, zero, negative or not a number)."""
    value = cell(row, column)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e12:
        return None
    return float(value)


def text(row: sqlite3.Row, column: str) -> str:
    value = cell(row, column)
    return value if isinstance(value, str) else ""


def cell(row: sqlite3.Row, column: str) -> object:
    """The row's value in `column`, None when an older schema has no such column."""
    try:
        value: object = row[column]
    except IndexError:
        return None
    return value
