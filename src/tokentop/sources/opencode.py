"""opencode sessions: the SQLite store `opencode.db` and the legacy per-message JSON files.

Current builds keep messages in `<data>/opencode.db`, table `message(id, session_id, data)`
(`data` is the message JSON without its id and session id). The database is opened
read-only (`file:...?mode=ro`) on each change of the file or its `-wal`, and read
incrementally: rows past the highest rowid seen, plus the assistant rows still in progress
(no `time.completed`), whose tokens are filled in by an UPDATE that keeps their rowid.

Legacy builds wrote `storage/message/<session>/msg_<id>.json`, one JSON document per
message, rewritten as the message updates; each is read whole on change (`wholefile`).

Every assistant message is keyed `opencode:<message id>` in both stores, so a message
migrated from JSON into the database counts once. Token kinds are disjoint as opencode
stores them (input excludes cache reads and writes; reasoning is separate from output).
A recorded `cost` above zero is used; zero (opencode could not price it) falls back to the
price table.
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.parse
from collections.abc import Mapping
from contextlib import closing
from pathlib import Path
from typing import ClassVar

import msgspec

from tokentop.model import Event, SessionInfo, SessionKey, TokenCounts, UsageEvent
from tokentop.sources.base import Count, DirSource, FileParser, bounded_ts, env_dirs, name_text
from tokentop.sources.jsonlines import DECODE_ERRORS
from tokentop.sources.wholefile import (
    Signature,
    WholeFileParser,
    is_regular,
    os_name,
    settled,
    signature,
)

AGENT = "opencode"
MAX_OPEN_ROWS = 500
"""In-progress messages re-checked on each change; older stuck ones are dropped."""
QUERY_TIMEOUT_S = 0.5
"""How long a query waits for a lock."""
QUERY_BUDGET_S = 5.0
"""How long one read of the database may run (SQLite's progress handler stops it): a crafted
file (a recursive VIEW named `message`) must not hold the engine for ever."""


class _Cache(msgspec.Struct, gc=False):
    read: Count = 0
    write: Count = 0


class _Tokens(msgspec.Struct, gc=False):
    input: Count = 0
    output: Count = 0
    reasoning: Count = 0
    cache: _Cache | None = None


class _Time(msgspec.Struct, gc=False):
    created: float = 0.0
    completed: float | None = None


class _ModelRef(msgspec.Struct, gc=False):
    modelID: str = ""


class _Path(msgspec.Struct, gc=False):
    cwd: str = ""


class _Message(msgspec.Struct, gc=False):
    id: str = ""
    sessionID: str = ""
    role: str = ""
    modelID: str | None = None
    model: _ModelRef | None = None
    time: _Time | None = None
    tokens: _Tokens | None = None
    cost: float = 0.0
    path: _Path | None = None
    error: msgspec.Raw | None = None


_MESSAGE = msgspec.json.Decoder(_Message)


class OpencodeSource(DirSource):
    """The database (and its `-wal`) and the legacy message folder of every data dir."""

    name: ClassVar[str] = AGENT
    suffixes: ClassVar[tuple[str, ...]] = (".json",)
    db_stem: ClassVar[str] = "opencode"
    """The database's name without `.db` (forks keep the schema under their own name)."""

    @staticmethod
    def default_dirs(env: Mapping[str, str]) -> list[Path]:
        return opencode_dirs(env)

    def roots_in(self, folder: Path) -> list[Path]:
        stem = self.db_stem
        dbs = sorted({folder / f"{stem}.db", *folder.glob(f"{stem}-*.db")})
        return [*(p for db in dbs for p in (db, Path(f"{db}-wal"))), folder / "storage" / "message"]

    def is_transcript(self, path: Path) -> bool:
        if path.name.endswith((".db", ".db-wal")):
            return path.name.startswith(self.db_stem)
        return path.suffix == ".json" and path.parent.parent.name == "message"

    def tracked_path(self, path: Path) -> Path:
        """A change to `opencode.db-wal` is a change to the database itself."""
        return path.with_name(path.name[: -len("-wal")]) if path.name.endswith("-wal") else path

    def new_parser(self, path: Path) -> FileParser:
        if path.suffix == ".db":
            return OpencodeDbParser(path=name_text(path), os_path=os_name(path), agent=self.name)
        return OpencodeMessageParser(
            path=name_text(path),
            os_path=os_name(path),
            session_id=name_text(path.parent.name),
            agent=self.name,
        )


def opencode_dirs(env: Mapping[str, str]) -> list[Path]:
    """`$OPENCODE_DATA_DIR` (comma list, as ccusage), else `$XDG_DATA_HOME/opencode`."""
    listed = env_dirs(env, "OPENCODE_DATA_DIR")
    if listed:
        return listed
    home = Path(env.get("HOME") or Path.home())
    return [Path(env.get("XDG_DATA_HOME") or home / ".local" / "share") / "opencode"]


def usage_event(
    msg_id: str, session_id: str, msg: _Message, agent: str = AGENT
) -> UsageEvent | None:
    """The usage of an assistant message, or None if it has none (yet)."""
    t = msg.tokens
    if msg.role != "assistant" or t is None:
        return None
    cache = t.cache or _Cache()
    tokens = TokenCounts(
        input=max(t.input, 0),
        output=max(t.output, 0),
        cache_read=max(cache.read, 0),
        cache_write_5m=max(cache.write, 0),
        reasoning=max(t.reasoning, 0),
    )
    if not tokens.total:
        return None
    ts = created_ts(msg)
    model = msg.modelID or (msg.model.modelID if msg.model else "")
    cwd = msg.path.cwd if msg.path else ""
    cost = msg.cost if msg.cost > 0 else None
    key = SessionKey(agent, session_id)
    return UsageEvent(key, f"{agent}:{msg_id}", ts, model, tokens, cwd, cost_usd=cost)


def created_ts(msg: _Message) -> float:
    """Unix seconds of a message's creation (opencode writes milliseconds)."""
    return bounded_ts((msg.time.created if msg.time else 0.0) / 1000.0)


def in_progress(msg: _Message) -> bool:
    return msg.role == "assistant" and msg.error is None and not (msg.time and msg.time.completed)


class OpencodeMessageParser(WholeFileParser, tag="opencode-json"):
    """A legacy `msg_*.json`; the session is the folder name unless the file says."""

    session_id: str = ""
    agent: str = AGENT

    def parse_whole(self, data: bytes, out: list[Event]) -> str:
        try:
            msg = _MESSAGE.decode(data)
        except DECODE_ERRORS as exc:
            return f"not an opencode message: {exc}"
        self.lines = 1
        session_id = msg.sessionID or self.session_id
        created = created_ts(msg)
        cwd = msg.path.cwd if msg.path else ""
        out.append(SessionInfo(SessionKey(self.agent, session_id), created, cwd))
        event = usage_event(msg.id or Path(self.path).stem, session_id, msg, self.agent)
        if event is not None:
            out.append(event)
        return ""


class OpencodeDbParser(WholeFileParser, tag="opencode-db"):
    """`opencode.db`, queried read-only and incrementally (see the module doc)."""

    watermark: int = 0
    """Highest rowid read."""
    watermark_id: str = ""
    """Message id at `watermark`; if another row holds that rowid now, read all again."""
    open_rows: list[int] = msgspec.field(default_factory=list)
    wal_seen: Signature | None = None
    announced: set[str] = msgspec.field(default_factory=set)
    """Sessions already given a SessionInfo."""
    agent: str = AGENT

    def refresh(self, out: list[Event]) -> bool:
        path = self.fs_path()
        sig, wal = signature(path), signature(path + "-wal")
        if sig is None:
            return False
        if not all(is_regular(p) for p in (path, *_sidecars(path))):  # SQLite's open() blocks
            self.bad_lines, self.seen = 1, None
            self.last_error = "not a regular file (FIFO, device or socket), skipped"
            return False
        wal_quiet = wal == self.wal_seen and (wal is None or settled(wal, wal, self.read_at_ns))
        if settled(sig, self.seen, self.read_at_ns) and wal_quiet:
            return False
        if self.seen is not None and sig[2] != self.seen[2]:
            self.watermark, self.watermark_id, self.open_rows = 0, "", []  # a new file
        self.seen, self.wal_seen, self.read_at_ns, self.size = sig, wal, time.time_ns(), sig[0]
        before = len(out)
        try:
            with closing(connect_ro(path, QUERY_BUDGET_S)) as db:
                self._read(db, out)
        except sqlite3.Error as exc:
            stopped = "interrupted" in str(exc)
            if not stopped or len(out) > before:
                self.seen = None  # try again on the next change (or go on where it stopped)
            reason = f"read stopped after {QUERY_BUDGET_S:g} s" if stopped else str(exc)
            reason = f"cannot read the database: {reason}"
            if self.last_error != name_text(reason[:200]):
                self.bad(reason)
        return len(out) > before  # what was read before a failure counts: the watermark moved

    def _read(self, db: sqlite3.Connection, out: list[Event]) -> None:
        if self.watermark:
            row = db.execute("SELECT id FROM message WHERE rowid = ?", (self.watermark,))
            found = row.fetchone()
            if found is None or found[0] != self.watermark_id:
                self.watermark, self.open_rows = 0, []
        still_open: list[int] = []
        rows = db.execute(
            "SELECT rowid, id, session_id, data FROM message WHERE rowid > ? ORDER BY rowid",
            (self.watermark,),
        )
        for rowid, msg_id, session_id, data in rows:
            self.lines += 1
            self.watermark, self.watermark_id = rowid, msg_id
            if self._row(db, rowid, msg_id, session_id, data, out):
                still_open.append(rowid)
        if self.open_rows:
            marks = ",".join("?" * len(self.open_rows))
            query = f"SELECT rowid, id, session_id, data FROM message WHERE rowid IN ({marks})"
            for rowid, msg_id, session_id, data in db.execute(query, self.open_rows):
                if self._row(db, rowid, msg_id, session_id, data, out):
                    still_open.append(rowid)
        self.open_rows = sorted(set(still_open))[-MAX_OPEN_ROWS:]

    def _row(
        self,
        db: sqlite3.Connection,
        rowid: int,
        msg_id: str,
        session_id: str,
        data: str | bytes,
        out: list[Event],
    ) -> bool:
        """Emit one row's events; True while the message is still being written."""
        try:
            msg = _MESSAGE.decode(data)
        except DECODE_ERRORS as exc:
            self.bad(f"message {msg_id}: {exc}")
            return False
        if session_id not in self.announced:
            self.announced.add(session_id)
            out.append(self._session_info(db, session_id, msg))
        event = usage_event(msg_id, session_id, msg, self.agent)
        if event is not None:
            out.append(event)
        return in_progress(msg)

    def _session_info(self, db: sqlite3.Connection, session_id: str, msg: _Message) -> SessionInfo:
        """The session's directory and parent from the `session` table, when it has them."""
        cwd = msg.path.cwd if msg.path else ""
        parent = ""
        try:
            row = db.execute(
                "SELECT directory, parent_id FROM session WHERE id = ?", (session_id,)
            ).fetchone()
        except sqlite3.Error:
            row = None  # an older schema: the message's own path is all there is
        if row is not None:
            cwd, parent = row[0] or cwd, row[1] or ""
        created = created_ts(msg)
        return SessionInfo(SessionKey(self.agent, session_id), created, cwd, parent=parent)


def _sidecars(path: str) -> list[str]:
    """The database's `-wal` and `-shm` files that exist."""
    return [p for p in (path + "-wal", path + "-shm") if os.path.lexists(p)]


def connect_ro(path: str, budget_s: float | None = None) -> sqlite3.Connection:
    """A read-only connection that never creates the file and waits briefly on locks; with
    `budget_s`, any statement still running that long after connecting is interrupted."""
    uri = f"file:{urllib.parse.quote(os.fsencode(os.path.abspath(path)))}?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=QUERY_TIMEOUT_S, check_same_thread=False)
    if budget_s is not None:
        deadline = time.monotonic() + budget_s
        db.set_progress_handler(lambda: int(time.monotonic() > deadline), 10_000)
    return db
