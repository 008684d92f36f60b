"""The SQLite store: upserts, actions, events, schema versions, concurrency, crash, restart."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import msgspec
import pytest

from tokentop.config import Config
from tokentop.history.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreError, migrate
from tokentop.history.summary import SessionSummary, build_summary
from tokentop.model import SessionKey, SessionSnapshot, TokenCounts, ToolStat
from tokentop.policy.detectors import Decision
from tokentop.processes.control import ActionResult


def snapshot(session_id: str, cost: float = 1.5, tools: int = 2, start: float = 1000.0):
    return SessionSnapshot(
        key=SessionKey("claude", session_id),
        cwd="/work/proj",
        branch="main",
        first_ts=start,
        last_ts=start + 600,
        tokens=TokenCounts(100, 50, 1000, 10),
        cost_usd=cost,
        unpriced_models=(),
        models=(),
        model_timeline=(),
        responses=7,
        tokens_per_min=0.0,
        usd_per_hour=0.0,
        burn_series=(),
        tool_calls=tools,
        tool_errors=0,
        tools=tuple(ToolStat(f"Tool{i}", 1, 0) for i in range(tools)),
        recent_tools=(),
        files=(),
        bad_lines=0,
    )


def summary(session_id: str, cost: float = 1.5, tools: int = 2, start: float = 1000.0):
    snap = snapshot(session_id, cost, tools, start)
    return build_summary(snap, now=start + 700, reason="idle", config=Config())


def test_new_store_is_private_wal_and_versioned(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "tokentop.db"
    with Store(path) as store:
        store.record_summary(summary("a"))
        mode = store.conn.execute("PRAGMA journal_mode").fetchone()[0]
        version = store.conn.execute("PRAGMA user_version").fetchone()[0]
    assert (mode, version) == ("wal", SCHEMA_VERSION)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    for extra in (path.with_name("tokentop.db-wal"), path.with_name("tokentop.db-shm")):
        if extra.exists():
            assert stat.S_IMODE(extra.stat().st_mode) == 0o600


def test_recording_again_updates_the_same_row(tmp_path: Path) -> None:
    with Store(tmp_path / "t.db") as store:
        store.record_summary(summary("a", cost=1.0))
        store.record_summary(summary("b", cost=2.0, start=5000))
        store.record_summary(summary("a", cost=3.0))
        found, bad = store.summaries()
        assert bad == 0 and store.summary_count() == 2
        assert [(s.session_id, s.cost_usd) for s in found] == [("a", 3.0), ("b", 2.0)]
        assert store.recorded_marks() == {"claude:a": (7, 1160), "claude:b": (7, 1160)}
        assert [s.session_id for s in store.summaries(since=5500)[0]] == ["b"]


def test_summary_lookup_by_key_id_or_prefix(tmp_path: Path) -> None:
    with Store(tmp_path / "t.db") as store:
        for sid in ("abc-1", "abc-2", "xyz_9"):
            store.record_summary(summary(sid))
        assert store.summary("claude:abc-1").session_id == "abc-1"  # type: ignore[union-attr]
        assert store.summary("abc-2").session_id == "abc-2"  # type: ignore[union-attr]
        assert store.summary("xyz").session_id == "xyz_9"  # type: ignore[union-attr]
        assert store.summary("xyz%") is None  # LIKE wildcards are literal
        assert store.summary("nope") is None
        with pytest.raises(StoreError, match="more than one"):
            store.summary("abc")


def test_actions_are_deduplicated_and_the_action_log_imported(tmp_path: Path) -> None:
    act = ActionResult(
        "kill", True, (10, 11), "killed", "loop", "policy:loop", 50.0, 10, "claude:a"
    )
    log = tmp_path / "actions.jsonl"
    other = msgspec.structs.replace(act, action="pause", origin="key:p", timestamp=40.0)
    log.write_bytes(msgspec.json.encode(act) + b"\nnot json\n" + msgspec.json.encode(other) + b"\n")
    with Store(tmp_path / "t.db") as store:
        store.record_action(act)
        assert store.import_action_log(log) == (1, 1)
        assert store.import_action_log(log) == (0, 1)
        actions = store.actions_for("claude:a")
    assert [(a.action, a.origin, a.ok) for a in actions] == [
        ("pause", "key:p", True),
        ("kill", "policy:loop", True),
    ]


def test_detector_events_feed_the_summary(tmp_path: Path) -> None:
    key = SessionKey("claude", "a")
    decision = Decision(key, "loop", "kill", "same call 5 times", 1200.0, 2)
    with Store(tmp_path / "t.db") as store:
        store.record_event(decision)
        store.record_event(decision)  # the same crossing reported twice counts once
        events = store.events_for("claude:a")
        snap = snapshot("a")
        s = build_summary(snap, now=2000, reason="killed", config=Config(), events=events)
        store.record_summary(s)
        [back] = store.summaries()[0]
    assert [(e.detector, e.action, e.level) for e in back.events] == [("loop", "kill", 2)]
    assert back.end_reason == "killed"


def test_migrate_from_empty_and_refuse_newer(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    sqlite3.connect(path).close()
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn) == SCHEMA_VERSION
    assert migrate(conn) == SCHEMA_VERSION  # idempotent
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"summaries", "actions", "events", "budget_overrides"} <= tables
    assert "engine_state" not in tables  # the engine's own state cache is the one format
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)


def test_a_version_2_file_drops_its_engine_state_copy_and_keeps_the_rest(
    tmp_path: Path,
) -> None:
    path = tmp_path / "v2.db"
    conn = sqlite3.connect(path, isolation_level=None)
    for step in MIGRATIONS[:2]:
        step(conn)
    conn.execute(  # as version 1 made it
        "CREATE TABLE engine_state (roots_key TEXT PRIMARY KEY, roots TEXT NOT NULL, "
        "saved_at REAL NOT NULL, blob BLOB NOT NULL)"
    )
    conn.execute("INSERT INTO engine_state VALUES ('k', 'claude:/x', 1.0, x'00')")
    conn.execute("PRAGMA user_version = 2")
    conn.close()
    with Store(tmp_path / "scratch.db") as scratch:
        scratch.record_summary(summary("kept"))
        body = scratch.conn.execute("SELECT * FROM summaries").fetchone()
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"INSERT INTO summaries VALUES ({','.join('?' * len(body))})", body)
    conn.close()
    with Store(path) as store:
        tables = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master")}
        assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
        assert [str(s.key) for s in store.summaries()[0]] == ["claude:kept"]
    assert "engine_state" not in tables and "budget_overrides" in tables
    assert "session_jobs" in tables  # version 5: jobs named by `tokentop run --job`


def test_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match=r"junk\.db"):
        Store(path)


def test_a_reader_is_not_blocked_by_an_open_write(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    writer, reader = Store(path), Store(path, timeout_ms=100)
    writer.record_summary(summary("a"))
    with writer.write() as conn:
        conn.execute("UPDATE summaries SET cost_usd = 9")
        assert reader.summary_count() == 1  # WAL: readers see the last commit
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            reader.record_summary(summary("b"))  # only after the busy timeout
    reader.record_summary(summary("b"))
    assert writer.summary_count() == 2


WRITER = textwrap.dedent(
    """
    import sys
    from tests.test_store import summary
    from tokentop.history.store import Store

    store = Store(__import__("pathlib").Path(sys.argv[1]))
    tag, count, tools = sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    i = 0
    while count < 0 or i < count:
        store.record_summary(summary(f"{tag}-{i % 40}", cost=float(i), tools=tools))
        i += 1
        if i == 5:
            print("writing", flush=True)
    """
)


def integrity_ok(path: Path) -> bool:
    conn = sqlite3.connect(path)
    try:
        return bool(conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok")
    finally:
        conn.close()


def writer(path: Path, tag: str, count: int, tools: int = 3) -> subprocess.Popen[str]:
    cwd = Path(__file__).parent.parent
    argv = [sys.executable, "-c", WRITER, str(path), tag, str(count), str(tools)]
    return subprocess.Popen(argv, cwd=cwd, stdout=subprocess.PIPE, text=True)


def test_concurrent_processes_all_land(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    Store(path).close()
    procs = [writer(path, tag, 120) for tag in ("p", "q", "r")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0, 0]
    with Store(path) as store:
        found, bad = store.summaries()
    assert bad == 0 and len(found) == 120
    assert integrity_ok(path)


def test_kill_9_mid_write_leaves_only_whole_rows(tmp_path: Path) -> None:
    path = tmp_path / "t.db"
    child = writer(path, "k", -1, tools=3000)  # ~100 KB bodies: the kill lands mid-write
    try:
        assert child.stdout is not None and child.stdout.readline() == "writing\n"
        time.sleep(0.3)  # let it record a few more; any moment will do
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
    assert child.returncode == -signal.SIGKILL
    assert integrity_ok(path)
    with Store(path) as store:
        rows = store.conn.execute("SELECT session, cost_usd, body FROM summaries").fetchall()
        found, bad = store.summaries()
    assert rows and bad == 0 and len(found) == len(rows)
    for session, cost, body in rows:
        s = msgspec.json.decode(body, type=SessionSummary)
        assert (str(s.key), s.cost_usd, len(s.tools)) == (session, cost, 3000)


def test_one_crossing_seen_by_several_processes_is_one_event(tmp_path: Path) -> None:
    """The app warns, the run beside it kills, a guard warns again: one event, with the
    action taken; a later crossing of the same level is a new one."""
    from tokentop.policy.detectors import Decision

    key = SessionKey("claude", "s1")
    with Store(tmp_path / "t.db") as store:
        for action, at in (("warn", 1000.0), ("kill", 1000.4), ("warn", 1001.0)):
            store.record_event(Decision(key, "budget", action, f"over ({action})", at, 2))
        store.record_event(Decision(key, "budget", "warn", "80%", 999.0, 1))
        store.record_event(Decision(key, "budget", "warn", "over again", 5000.0, 2))
        events = store.events_for(str(key))
    assert [(e.detector, e.action, e.level) for e in events] == [
        ("budget", "warn", 1),
        ("budget", "kill", 2),
        ("budget", "warn", 2),
    ]


def test_a_batch_is_one_transaction_and_each_write_in_it_all_or_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")

    def add(conn: sqlite3.Connection, session: str, ts: int) -> None:
        conn.execute(
            "INSERT INTO events(session, ts, detector, action, level, reason) "
            "VALUES (?, ?, 'd', 'x', 0, '')",
            (session, ts),
        )

    with store.batch():
        with store.batch(), store.write() as conn:  # a batch inside a batch is part of it
            add(conn, "a", 1)
        with pytest.raises(RuntimeError), store.write() as conn:
            add(conn, "b", 2)
            raise RuntimeError("this write fails: its row goes, the batch goes on")
        with store.write() as conn:  # no "transaction within a transaction"
            add(conn, "c", 3)
        other = sqlite3.connect(tmp_path / "s.db")
        assert other.execute("SELECT count(*) FROM events").fetchone() == (0,)  # not yet
    rows = other.execute("SELECT session FROM events ORDER BY ts").fetchall()
    assert rows == [("a",), ("c",)]
    store.close()
    other.close()


def test_batched_items_share_commits_until_the_batch_has_lasted_its_time(tmp_path: Path) -> None:
    store = Store(tmp_path / "s.db")
    other = sqlite3.connect(tmp_path / "s.db")

    def count() -> int:
        return int(other.execute("SELECT count(*) FROM events").fetchone()[0])

    def add(ts: int) -> None:
        with store.write() as conn:
            conn.execute(
                "INSERT INTO events(session, ts, detector, action, level, reason) "
                "VALUES ('s', ?, 'd', 'x', 0, '')",
                (ts,),
            )

    seen = []
    for ts in store.batched(range(3), seconds=60):  # one batch: committed at the end
        seen.append(count())
        add(ts)
    assert seen == [0, 0, 0] and count() == 3
    seen = []
    for ts in store.batched(range(3, 6), seconds=0):  # a batch (and commit) per item
        seen.append(count())
        add(ts)
    assert seen == [3, 4, 5] and count() == 6
    assert list(store.batched([None, 0], seconds=0)) == [None, 0]  # None is an item
    store.close()
    other.close()
