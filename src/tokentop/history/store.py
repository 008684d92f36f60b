"""The embedded store: session summaries, actions, detector events and budgets (SQLite).

Several tokentop processes (the app, `guard`, `hook`, `run`) may share one file, so: WAL mode
(readers never block the writer), a busy timeout, and every write a short `BEGIN IMMEDIATE`
transaction of one or a few statements. A summary is one row written by one statement, so a
crash (even `kill -9`) leaves the old row or the new one, never half of one. The file is
created with mode 0600: it holds what your agents worked on. The schema is versioned with
`PRAGMA user_version`; `migrate` brings an older file up to date.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

import msgspec
import platformdirs

from tokentop.config import Budget, SessionBudget
from tokentop.files import make_private, make_private_dir
from tokentop.history.session_budgets import budget_rows
from tokentop.history.summary import ActionRecord, EventRecord, SessionSummary
from tokentop.model import SessionKey

T = TypeVar("T")
_END = object()
"""What `batched` takes from an exhausted iterator (an item may be None)."""

if TYPE_CHECKING:
    from tokentop.processes.action_log import ActionResult

BUSY_TIMEOUT_MS = 5000
"""How long a writer waits for another process's write transaction (each lasts milliseconds)."""
INT64_MAX = 2**63 - 1
"""SQLite's INTEGER limit: the `tokens` column saturates there (the JSON body keeps the exact
total; sources cap each count at 10**15, but a hostile file may hold many of them)."""
SCHEMA_VERSION = 5
EVENT_SAME_S = 600.0
"""Two decisions of one detector at one level on one session this close are one crossing,
seen by two tokentop processes (a budget raised and crossed again takes longer)."""
ACTION_RANK = {"none": 0, "warn": 1, "pause": 2, "kill": 3}

_V1 = """
CREATE TABLE summaries (
    session TEXT PRIMARY KEY,           -- "agent:session_id"
    agent TEXT NOT NULL,
    session_id TEXT NOT NULL,
    project TEXT NOT NULL,
    cwd TEXT NOT NULL,
    start_ts REAL NOT NULL,
    end_ts REAL NOT NULL,
    tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    label TEXT NOT NULL,
    recorded_at REAL NOT NULL,
    body BLOB NOT NULL                  -- the SessionSummary as JSON
);
CREATE INDEX summaries_end ON summaries (end_ts);
CREATE TABLE actions (
    id INTEGER PRIMARY KEY,
    session TEXT NOT NULL,
    ts REAL NOT NULL,
    action TEXT NOT NULL,
    ok INTEGER NOT NULL,
    origin TEXT NOT NULL,
    reason TEXT NOT NULL,
    message TEXT NOT NULL,
    pid INTEGER NOT NULL,
    UNIQUE (session, ts, action, origin, pid)
);
CREATE INDEX actions_session ON actions (session, ts);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    session TEXT NOT NULL,
    ts REAL NOT NULL,
    detector TEXT NOT NULL,
    action TEXT NOT NULL,
    level INTEGER NOT NULL,
    reason TEXT NOT NULL,
    UNIQUE (session, ts, detector, level)
);
CREATE INDEX events_session ON events (session, ts);
"""


def _create_v1(conn: sqlite3.Connection) -> None:
    # Statement by statement: executescript() would commit the migration's transaction.
    for statement in _V1.split(";"):
        if statement.strip():
            conn.execute(statement)


def _create_v2(conn: sqlite3.Connection) -> None:
    """Budgets set per session with `b`, so that every front-end honours them."""
    conn.execute(
        "CREATE TABLE budget_overrides (session TEXT PRIMARY KEY, "  # "agent:session_id"
        "usd REAL, tokens INTEGER, set_at REAL NOT NULL)"
    )


def _drop_engine_state(conn: sqlite3.Connection) -> None:
    """Version 1 also kept a copy of the engine's state for `report`; the engine's own state
    cache is now the one on-disk format for it, so the copy goes (a new file never had it)."""
    conn.execute("DROP TABLE IF EXISTS engine_state")


def _budget_origin(conn: sqlite3.Connection) -> None:
    """Who set a session's budget (`b` in an app, `run --budget`): every process shows it."""
    conn.execute("ALTER TABLE budget_overrides ADD COLUMN origin TEXT NOT NULL DEFAULT 'app'")


def _create_session_jobs(conn: sqlite3.Connection) -> None:
    """Jobs named where they run (`tokentop run --job NAME`), with how each run ended."""
    conn.execute(
        "CREATE TABLE session_jobs (session TEXT PRIMARY KEY, "  # "agent:session_id"
        "job TEXT NOT NULL, origin TEXT NOT NULL, status TEXT NOT NULL, set_at REAL NOT NULL)"
    )


MIGRATIONS: tuple[Callable[[sqlite3.Connection], None], ...] = (
    _create_v1,
    _create_v2,
    _drop_engine_state,
    _budget_origin,
    _create_session_jobs,
)
"""MIGRATIONS[n] takes a file from user_version n to n + 1."""


class JobTag(msgspec.Struct, frozen=True):
    """A session's job as named where it ran, and how that run ended."""

    job: str
    origin: str
    """"run": `tokentop run --job NAME`."""
    status: str = ""
    """"ok", "error" (the agent exited non-zero), "stopped" (tokentop stopped it), or ""
    while it runs."""


MAX_JOB_NAME = 200
"""A job name is the user's own words on a command line; longer ones are cut."""


class StoreError(Exception):
    """The store cannot be used (unreadable, corrupt, or from a newer tokentop); one line."""


class DecisionLike(Protocol):
    """What the store keeps of a detector decision (policy.Decision fits)."""

    @property
    def session(self) -> SessionKey: ...
    @property
    def detector(self) -> str: ...
    @property
    def action(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def level(self) -> int: ...


def default_path() -> Path:
    return Path(platformdirs.user_data_dir("tokentop")) / "tokentop.db"


_SUMMARY_DECODER = msgspec.json.Decoder(SessionSummary)


class Store:
    """One connection to the store; a lock makes it safe to share between threads."""

    def __init__(self, path: Path | None = None, *, timeout_ms: int = BUSY_TIMEOUT_MS) -> None:
        self.path = path or default_path()
        self._lock = threading.RLock()
        self._batched = False
        _create_private(self.path)
        try:
            self.conn = sqlite3.connect(
                self.path, timeout=timeout_ms / 1000, isolation_level=None, check_same_thread=False
            )
            self.conn.execute(f"PRAGMA busy_timeout = {int(timeout_ms)}")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = NORMAL")
            migrate(self.conn)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: {exc}") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A short write transaction; it takes the write lock up front, so it never deadlocks.
        Inside `batch`, the batch's transaction."""
        with self._lock:
            if self._batched:  # a savepoint: this write is still all or nothing
                self.conn.execute("SAVEPOINT write")
                try:
                    yield self.conn
                except BaseException:
                    self.conn.execute("ROLLBACK TO write")
                    self.conn.execute("RELEASE write")
                    raise
                self.conn.execute("RELEASE write")
                return
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield self.conn
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
            self.conn.execute("COMMIT")

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """The writes of this thread in the block as one transaction: a first report records
        a summary of every session, and a commit each took a third of that time. Keep the
        block short (~50 ms): other tokentop processes wait for its end. A batch inside a
        batch is part of it."""
        with self._lock:
            if self._batched:
                yield
                return
            with self.write():
                self._batched = True
                try:
                    yield
                finally:
                    self._batched = False

    def batched(self, items: Iterable[T], seconds: float) -> Iterator[T]:
        """Each of `items`, handed out inside a `batch` committed once it has lasted
        `seconds` (at least one item a batch): the writes a caller makes for them share
        commits, and other processes wait for the write lock no longer than that."""
        left = iter(items)
        item = next(left, _END)
        while item is not _END:
            with self.batch():
                deadline = time.monotonic() + seconds
                while item is not _END:
                    yield cast(T, item)
                    item = next(left, _END)
                    if time.monotonic() >= deadline:
                        break

    def _rows(self, sql: str, params: Sequence[object] = ()) -> list[Any]:
        with self._lock:
            return self.conn.execute(sql, params).fetchall()

    # -- summaries -------------------------------------------------------------------------

    def record_summary(self, summary: SessionSummary) -> None:
        """Insert or replace the session's row (recording again updates the same row).

        How a session ended is never downgraded: several processes record the same ending
        (the app sees the agent exit, the `run` that killed it records "killed"), so with no
        activity since the row's, the stronger of the two stays, whoever writes last.
        """
        with self.write() as conn:
            found = conn.execute(
                "SELECT json_extract(body, '$.end_reason'), end_ts FROM summaries "
                "WHERE session = ?",
                (str(summary.key),),
            ).fetchone()
            if found is not None and summary.end <= found[1] and _stronger(found[0], summary):
                summary = msgspec.structs.replace(summary, end_reason=found[0])
            self._upsert(conn, summary)

    def _upsert(self, conn: sqlite3.Connection, summary: SessionSummary) -> None:
        row = (
            str(summary.key),
            summary.agent,
            summary.session_id,
            summary.project,
            summary.cwd,
            summary.start,
            summary.end,
            min(summary.tokens.total, INT64_MAX),
            summary.cost_usd,
            summary.label,
            summary.recorded_at,
            msgspec.json.encode(summary),
        )
        conn.execute(
            "INSERT INTO summaries VALUES (?,?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (session) DO "
            "UPDATE SET agent=excluded.agent, session_id=excluded.session_id, "
            "project=excluded.project, cwd=excluded.cwd, start_ts=excluded.start_ts, "
            "end_ts=excluded.end_ts, tokens=excluded.tokens, cost_usd=excluded.cost_usd, "
            "label=excluded.label, recorded_at=excluded.recorded_at, body=excluded.body",
            row,
        )

    def summaries(self, since: float | None = None) -> tuple[list[SessionSummary], int]:
        """Summaries of sessions active since `since`, oldest first; and the unreadable count."""
        rows = self._rows(
            "SELECT body FROM summaries WHERE end_ts >= ? ORDER BY start_ts, session",
            (since if since is not None else float("-inf"),),
        )
        return _decode_summaries(row[0] for row in rows)

    def summary(self, session: str) -> SessionSummary | None:
        """The summary whose "agent:id" or id is `session`, else the one it is a prefix of."""
        rows = self._rows(
            "SELECT body FROM summaries WHERE session = ? OR session_id = ? LIMIT 2",
            (session, session),
        )
        if not rows:
            like = _like_prefix(session)
            rows = self._rows(
                "SELECT body FROM summaries WHERE session_id LIKE ? ESCAPE '\\' "
                "OR session LIKE ? ESCAPE '\\' LIMIT 2",
                (like, like),
            )
        if len(rows) > 1:
            raise StoreError(f"{session!r} matches more than one session; give more of its id")
        found, _ = _decode_summaries([row[0] for row in rows])
        return found[0] if found else None

    def summary_count(self) -> int:
        return int(self._rows("SELECT count(*) FROM summaries")[0][0])

    def recorded_marks(self) -> dict[str, tuple[int, int]]:
        """(responses, total tokens) of every recorded session, so unchanged ones are skipped."""
        rows = self._rows(
            "SELECT session, json_extract(body, '$.responses'), tokens FROM summaries"
        )
        return {row[0]: (int(row[1] or 0), int(row[2])) for row in rows}

    # -- actions and detector events -------------------------------------------------------

    def record_action(self, result: ActionResult) -> None:
        self.record_actions([result])

    def record_actions(self, results: Sequence[ActionResult]) -> int:
        """Append actions (a repeat of the same action is ignored); returns how many were new."""
        rows = [
            (r.session, r.timestamp, r.action, int(r.ok), r.origin, r.reason, r.message, r.pid)
            for r in results
        ]
        with self.write() as conn:
            before = conn.total_changes
            conn.executemany("INSERT OR IGNORE INTO actions VALUES (NULL,?,?,?,?,?,?,?,?)", rows)
            return conn.total_changes - before

    def import_action_log(self, path: Path) -> tuple[int, int]:
        """Copy the JSONL action log (procs.py) in; (new actions, unreadable lines)."""
        from tokentop.processes.action_log import read_action_log

        results, bad = read_action_log(path)
        return (self.record_actions(results) if results else 0), bad

    def actions_for(self, session: str) -> list[ActionRecord]:
        rows = self._rows(
            "SELECT ts, action, ok, origin, reason, message FROM actions WHERE session = ? "
            "ORDER BY ts",
            (session,),
        )
        return [ActionRecord(r[0], r[1], bool(r[2]), r[3], r[4], r[5]) for r in rows]

    def record_event(self, decision: DecisionLike) -> None:
        """Keep a detector's decision. Every tokentop process judges on its own (the app, a
        guard, a run), so the same crossing arrives once from each: one already recorded for
        the session, detector and level within EVENT_SAME_S is that one, not a new one (it
        takes the stronger action: the run that kills beside an app that only warns)."""
        session, ts = str(decision.session), decision.timestamp
        with self.write() as conn:
            same = conn.execute(
                "SELECT id, action FROM events WHERE session = ? AND detector = ? AND level = ? "
                "AND ts BETWEEN ? AND ? LIMIT 1",
                (session, decision.detector, decision.level, ts - EVENT_SAME_S, ts + EVENT_SAME_S),
            ).fetchone()
            if same is None:
                conn.execute(
                    "INSERT OR IGNORE INTO events VALUES (NULL,?,?,?,?,?,?)",
                    (session, ts, decision.detector, decision.action, decision.level,
                     decision.reason),
                )  # fmt: skip
            elif ACTION_RANK.get(decision.action, 0) > ACTION_RANK.get(same[1], 0):
                conn.execute(
                    "UPDATE events SET action = ?, reason = ? WHERE id = ?",
                    (decision.action, decision.reason, same[0]),
                )

    def events_for(self, session: str) -> list[EventRecord]:
        rows = self._rows(
            "SELECT ts, detector, action, reason, level FROM events WHERE session = ? ORDER BY ts",
            (session,),
        )
        return [EventRecord(r[0], r[1], r[2], r[3], r[4]) for r in rows]

    # -- budget overrides ------------------------------------------------------------------

    def set_budget(self, session: SessionKey, budget: Budget | None, origin: str = "app") -> None:
        """Keep the session's own budget, set by `origin` ("app", "run"); None returns it to
        the configured one. The last one set wins, whoever set it."""
        with self.write() as conn:
            if budget is None:
                conn.execute("DELETE FROM budget_overrides WHERE session = ?", (str(session),))
                return
            conn.execute(
                "INSERT OR REPLACE INTO budget_overrides (session, usd, tokens, set_at, origin) "
                "VALUES (?,?,?,?,?)",
                (str(session), budget.usd, budget.tokens, time.time(), origin),
            )

    def budgets(self) -> dict[str, SessionBudget]:
        return budget_rows(
            self._rows("SELECT session, usd, tokens, origin, set_at FROM budget_overrides")
        )

    # -- jobs named where they run ---------------------------------------------------------

    def set_job(self, session: SessionKey, tag: JobTag) -> None:
        """Name the session's job (again: the newest name and status win)."""
        row = (str(session), tag.job[:MAX_JOB_NAME], tag.origin, tag.status, time.time())
        with self.write() as conn:
            conn.execute("INSERT OR REPLACE INTO session_jobs VALUES (?,?,?,?,?)", row)

    def session_jobs(self) -> dict[str, JobTag]:
        """Every named session's job, by "agent:session_id"."""
        rows = self._rows("SELECT session, job, origin, status FROM session_jobs")
        return {r[0]: JobTag(r[1], r[2], r[3]) for r in rows}


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to SCHEMA_VERSION, one step per transaction; returns the version."""
    while True:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store schema {version} is newer than this tokentop ({SCHEMA_VERSION})"
            )
        if version == SCHEMA_VERSION:
            return version
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Another process may have migrated between our read and our lock: re-read.
            if int(conn.execute("PRAGMA user_version").fetchone()[0]) == version:
                MIGRATIONS[version](conn)
                conn.execute(f"PRAGMA user_version = {version + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")


def _create_private(path: Path) -> None:
    """Create the file (and its directory) owner-only before SQLite opens it; WAL and shm
    files then inherit its mode."""
    try:
        make_private_dir(path.parent)
    except OSError as exc:
        raise StoreError(f"cannot make the folder {path.parent}: {exc.strerror}") from None
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        for part in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            make_private(part)  # a db of ours made 0644 elsewhere fills with private data
        return
    except OSError as exc:
        raise StoreError(f"{path}: cannot create: {exc.strerror}") from None
    os.close(fd)


ENDING_RANK = {"killed": 3, "terminated": 3, "paused-then-exited": 2, "exited": 1, "idle": 0}
"""How certain an ending is: an action tokentop took beats the process exiting, which beats
quiet; "open" (a snapshot of a session that may go on) ranks below all."""


def _stronger(recorded: object, summary: SessionSummary) -> bool:
    return ENDING_RANK.get(str(recorded), -1) > ENDING_RANK.get(summary.end_reason, -1)


def _decode_summaries(bodies: Iterator[bytes] | list[bytes]) -> tuple[list[SessionSummary], int]:
    found: list[SessionSummary] = []
    bad = 0
    for body in bodies:
        try:
            found.append(_SUMMARY_DECODER.decode(body))
        except (msgspec.DecodeError, msgspec.ValidationError):
            bad += 1
    return found, bad


def _like_prefix(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + "%"
