"""opencode source: legacy per-message JSON samples, the SQLite store read read-only and
incrementally (new rows, in-progress rows updated in place, a reused rowid), dedupe across
the two stores."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from source_helpers import by_id, engine_for
from tokentop.engine.engine import Engine
from tokentop.model import Event, TokenCounts
from tokentop.pricing import PriceTable
from tokentop.sources.opencode import OpencodeDbParser, OpencodeSource

FIXTURES = Path(__file__).parent / "fixtures" / "opencode"
TOKSCALE = FIXTURES / "samples"  # storage/message/ses_test001/msg_test001.json
AGENT_SESSIONS = FIXTURES / "samples" / "agent-sessions-v2"
SCHEMA = """
CREATE TABLE session (id TEXT PRIMARY KEY, project_id TEXT NOT NULL, parent_id TEXT,
  directory TEXT NOT NULL, title TEXT NOT NULL, time_created INTEGER, time_updated INTEGER);
CREATE TABLE message (id TEXT PRIMARY KEY, session_id TEXT NOT NULL, time_created INTEGER,
  time_updated INTEGER, data TEXT NOT NULL);
"""
T0 = 1_777_629_600_000  # ms


def assistant(
    tokens: tuple[int, int, int, int, int] | None,
    *,
    cost: float = 0.0,
    done: bool = True,
    model: str = "claude-sonnet-4-5",
) -> dict[str, Any]:
    """An assistant message's `data` (no id/sessionID: those are columns)."""
    data: dict[str, Any] = {
        "role": "assistant",
        "modelID": model,
        "providerID": "anthropic",
        "time": {"created": T0, **({"completed": T0 + 5000} if done else {})},
        "cost": cost,
        "path": {"cwd": "/work/app", "root": "/work/app"},
    }
    if tokens is not None:
        i, o, r, cr, cw = tokens
        data["tokens"] = {
            "input": i,
            "output": o,
            "reasoning": r,
            "cache": {"read": cr, "write": cw},
        }
    return data


class Db:
    """A writer standing in for opencode: WAL mode, a connection kept open."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.executescript(SCHEMA)

    def session(self, sid: str, directory: str, parent: str | None = None) -> None:
        self.conn.execute(
            "INSERT INTO session VALUES (?, 'p', ?, ?, 't', ?, ?)", (sid, parent, directory, T0, T0)
        )
        self.conn.commit()

    def put(self, mid: str, sid: str, data: dict[str, Any] | str) -> None:
        text = data if isinstance(data, str) else json.dumps(data)
        self.conn.execute(
            "INSERT INTO message VALUES (?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET data = ?",
            (mid, sid, T0, T0, text, text),
        )
        self.conn.commit()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "opencode"


def scan(data: Path) -> Engine:
    engine = engine_for(OpencodeSource(dirs=[data]))
    engine.scan()
    return engine


# -- legacy JSON samples ----------------------------------------------------------------------


def test_legacy_samples() -> None:
    """tokscale's msg_test001: 1000 in, 500 out, 200 cache read, 100 cache write, 0 reasoning
    (1800 total). agent-sessions' assistant message has no tokens yet: listed, zero tokens."""
    engine = engine_for(OpencodeSource(dirs=[TOKSCALE, AGENT_SESSIONS]))
    engine.scan()
    sessions = by_id(engine.snapshot())
    assert sessions["ses_test001"].tokens == TokenCounts(1000, 500, 200, 100)
    assert sessions["ses_test001"].tokens.total == 1800
    assert [m.model for m in sessions["ses_test001"].models] == ["claude-3-5-sonnet-20241022"]
    assert sessions["s_stage0_small"].tokens.total == 0


def test_legacy_file_rewritten_with_usage(tmp_path: Path) -> None:
    """opencode rewrites a message file as the message completes."""
    folder = tmp_path / "storage/message/ses_x"
    folder.mkdir(parents=True)
    msg = folder / "msg_a.json"
    body = {"id": "msg_a", "sessionID": "ses_x", **assistant(None, done=False)}
    msg.write_text(json.dumps(body))
    engine = scan(tmp_path)
    assert by_id(engine.snapshot())["ses_x"].tokens.total == 0
    body.update(assistant((10, 20, 0, 0, 0)))
    msg.write_text(json.dumps(body, indent=2))
    assert engine.process([msg])
    assert by_id(engine.snapshot())["ses_x"].tokens == TokenCounts(10, 20)


# -- the SQLite store ------------------------------------------------------------------------


def test_database_totals_sessions_and_costs(data_dir: Path) -> None:
    """m1: recorded cost $0.25 is used. m2: cost 0 -> price table. m3: user message (no
    tokens). m4: data is not JSON (one bad row). Session `child` has parent `root`."""
    db = Db(data_dir / "opencode.db")
    db.session("root", "/work/app")
    db.session("child", "/work/app", parent="root")
    db.put("m1", "root", assistant((100, 50, 5, 1000, 200), cost=0.25))
    db.put("m2", "child", assistant((300, 40, 0, 0, 0)))
    db.put("m3", "root", {"role": "user", "time": {"created": T0}})
    db.put("m4", "root", "{not json")
    engine = scan(data_dir)
    sessions = by_id(engine.snapshot())
    assert sessions["root"].tokens == TokenCounts(100, 50, 1000, 200, 0, 5)
    assert sessions["root"].cost_usd == pytest.approx(0.25)
    assert sessions["root"].cwd == "/work/app"
    assert sessions["root"].bad_lines == 1
    priced = PriceTable.default().cost("claude-sonnet-4-5", TokenCounts(300, 40))
    assert sessions["child"].cost_usd == pytest.approx(priced)
    assert sessions["child"].parent == "root"


def test_in_progress_row_updated_in_place_via_wal_change(data_dir: Path) -> None:
    """The assistant row is inserted while streaming (no tokens) and later UPDATEd with its
    usage, keeping its rowid; the change lands in `opencode.db-wal`, which is reported as a
    change of the database. New rows are read past the highest rowid."""
    db = Db(data_dir / "opencode.db")
    db.session("s", "/w")
    db.put("m1", "s", assistant(None, done=False))
    engine = scan(data_dir)
    assert by_id(engine.snapshot())["s"].tokens.total == 0
    db.put("m1", "s", assistant((10, 20, 0, 0, 0)))
    db.put("m2", "s", assistant((1, 2, 0, 0, 0)))
    wal = data_dir / "opencode.db-wal"
    assert wal.exists()
    assert engine.process([wal])
    session = by_id(engine.snapshot())["s"]
    assert session.tokens == TokenCounts(11, 22)
    assert session.responses == 2
    assert list(engine.files) == [str(data_dir / "opencode.db")]  # the -wal is an alias
    parser = engine.files[str(data_dir / "opencode.db")].parser
    assert isinstance(parser, OpencodeDbParser)
    assert (parser.watermark, parser.open_rows) == (2, [])


def test_reused_rowid_is_noticed(data_dir: Path) -> None:
    """The newest row deleted and another inserted under the same rowid: read all again
    (message-id keys make the re-read count only the new row)."""
    db = Db(data_dir / "opencode.db")
    db.session("s", "/w")
    db.put("m1", "s", assistant((1, 1, 0, 0, 0)))
    db.put("m2", "s", assistant((2, 2, 0, 0, 0)))
    engine = scan(data_dir)
    db.conn.execute("DELETE FROM message WHERE id = 'm2'")
    db.put("m3", "s", assistant((3, 3, 0, 0, 0)))
    assert db.conn.execute("SELECT rowid FROM message WHERE id = 'm3'").fetchone() == (2,)
    assert engine.process([data_dir / "opencode.db"])
    assert by_id(engine.snapshot())["s"].tokens == TokenCounts(6, 6)  # m2 was billed too


def test_same_message_in_json_and_database_counts_once(data_dir: Path) -> None:
    db = Db(data_dir / "opencode.db")
    db.session("ses_test001", "/w")
    legacy = json.loads((TOKSCALE / "storage/message/ses_test001/msg_test001.json").read_text())
    db.put("msg_test001", "ses_test001", {k: v for k, v in legacy.items() if k != "id"})
    shutil.copytree(TOKSCALE / "storage", data_dir / "storage")
    session = by_id(scan(data_dir).snapshot())["ses_test001"]
    assert session.tokens.total == 1800
    assert session.responses == 1


def test_database_is_never_written(data_dir: Path) -> None:
    db = Db(data_dir / "opencode.db")
    db.session("s", "/w")
    db.put("m1", "s", assistant((1, 1, 0, 0, 0)))
    db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    before = (data_dir / "opencode.db").read_bytes()
    scan(data_dir)
    assert (data_dir / "opencode.db").read_bytes() == before
    parser = OpencodeDbParser(path=str(data_dir / "opencode.db"))
    out: list[Event] = []
    assert parser.refresh(out)
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        from tokentop.sources.opencode import connect_ro

        connect_ro(parser.path).execute("DELETE FROM message")


def test_unreadable_database_is_a_counted_error(data_dir: Path) -> None:
    data_dir.mkdir()
    (data_dir / "opencode.db").write_bytes(b"this is not a database" * 100)
    engine = scan(data_dir)
    health = {f.path: f for f in engine.snapshot().files}
    db_health = health[str(data_dir / "opencode.db")]
    assert db_health.bad_lines == 1
    assert "cannot read the database" in db_health.last_error


def test_roots_names_and_env(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    data = tmp_path / ".local/share/opencode"
    assert OpencodeSource(env=env).roots() == [
        data / "opencode.db",
        data / "opencode.db-wal",
        data / "storage/message",
    ]
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    assert OpencodeSource(env=env).roots()[0] == tmp_path / "xdg/opencode/opencode.db"
    env["OPENCODE_DATA_DIR"] = str(tmp_path / "d")
    (tmp_path / "d").mkdir()
    (tmp_path / "d/opencode-beta.db").touch()
    roots = OpencodeSource(env=env).roots()
    assert tmp_path / "d/opencode-beta.db" in roots
    source = OpencodeSource(dirs=[tmp_path])
    assert source.is_transcript(tmp_path / "opencode.db-wal")
    assert source.tracked_path(tmp_path / "opencode.db-wal") == tmp_path / "opencode.db"
    assert source.is_transcript(tmp_path / "storage/message/ses_1/msg_1.json")
    assert not source.is_transcript(tmp_path / "storage/part/msg_1/prt_1.json")
    assert not source.is_transcript(tmp_path / "opencode.db-shm")


def test_a_query_that_never_ends_is_stopped_by_its_time_budget(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crafted opencode.db whose `message` is a recursive VIEW: the read is stopped by
    SQLite's progress handler, counted as one bad line, and not run again until the file
    changes."""
    import threading
    import time

    from tokentop.sources import opencode

    monkeypatch.setattr(opencode, "QUERY_BUDGET_S", 0.5)
    data_dir.mkdir()
    with sqlite3.connect(data_dir / "opencode.db") as db:
        db.executescript(
            "CREATE TABLE session (id TEXT, parent_id TEXT, directory TEXT);"
            "CREATE VIEW message AS WITH RECURSIVE n(rowid, id, session_id, data) AS"
            " (SELECT 1, 'm', 's', '{}' UNION ALL SELECT rowid + 1, 'm', 's', '{}' FROM n)"
            " SELECT * FROM n WHERE rowid < 0;"  # counts for ever, never finds a row
        )
    engine = engine_for(OpencodeSource(dirs=[data_dir]))
    started = time.monotonic()
    worker = threading.Thread(target=lambda: [engine.scan() for _ in range(3)], daemon=True)
    worker.start()
    worker.join(20)
    assert not worker.is_alive(), "the scan never ended"
    assert time.monotonic() - started < 5.0  # one budget: the unchanged file is not retried
    health = {f.path: f for f in engine.snapshot().files}
    db_health = health[str(data_dir / "opencode.db")]
    assert db_health.bad_lines == 1 and "read stopped after 0.5 s" in db_health.last_error
