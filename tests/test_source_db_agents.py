"""Goose, Crush and Kilo CLI: SQLite stores read read-only, on real databases built here
from the shared samples (a Goose export's row, Crush's own migration SQL, opencode's
schema under Kilo's name)."""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from source_helpers import by_id, engine_for
from tokentop.model import TokenCounts
from tokentop.sources.crush import CrushSource
from tokentop.sources.goose import GooseSource
from tokentop.sources.kilo import KiloSource

FIXTURES = Path(__file__).parent / "fixtures"
GOOSE_EXPORT = FIXTURES / "goose/samples/session-export/goose_convergeai_chat_history.json"
CRUSH_SQL = sorted((FIXTURES / "crush/samples/schema").glob("*.sql"))


def goose_db(folder: Path) -> Path:
    """sessions.db with Goose's v13 columns, holding the exported session's row."""
    db = folder / "sessions/sessions.db"
    db.parent.mkdir(parents=True)
    row = json.loads(GOOSE_EXPORT.read_text())
    with closing(sqlite3.connect(db)) as con:
        con.execute(
            "CREATE TABLE sessions (id TEXT PRIMARY KEY, name TEXT, working_dir TEXT NOT NULL, "
            "created_at TIMESTAMP, updated_at TIMESTAMP, accumulated_input_tokens INTEGER, "
            "accumulated_output_tokens INTEGER, accumulated_total_tokens INTEGER, "
            "provider_name TEXT, model_config_json TEXT, accumulated_cost REAL)"
        )
        con.execute(
            "INSERT INTO sessions VALUES (?,?,?,?,?,?,?,?,?,?,NULL)",
            (row["id"], row["name"], row["working_dir"], row["created_at"], row["updated_at"],
             row["accumulated_input_tokens"], row["accumulated_output_tokens"],
             row["accumulated_total_tokens"], row["provider_name"],
             json.dumps(row["model_config"])),
        )  # fmt: skip
        con.commit()
    return db


def test_goose_session_totals_and_growth(tmp_path: Path) -> None:
    """The exported session's running totals: 43400 in, 3218 out (46618 in all; Goose keeps
    no cache split), claude-sonnet-4-6. The row then grows by 100/10 in place: the session
    grows by exactly that (one cumulative key per session)."""
    db = goose_db(tmp_path)
    engine = engine_for(GooseSource([tmp_path]))
    engine.scan()
    session = by_id(engine.snapshot())["20260403_20"]
    assert session.tokens == TokenCounts(input=43400, output=3218)
    assert session.cwd == "/Users/sabrinayu/Documents/GitHub/convergeai"
    assert [m.model for m in session.models] == ["claude-sonnet-4-6"]
    with closing(sqlite3.connect(db)) as con:
        con.execute(
            "UPDATE sessions SET accumulated_input_tokens = 43500, "
            "accumulated_output_tokens = 3228, updated_at = '2026-04-03T19:52:00Z'"
        )
        con.commit()
    engine.process([db])
    assert by_id(engine.snapshot())["20260403_20"].tokens == TokenCounts(input=43500, output=3228)


def crush_project(project: Path) -> Path:
    """A project's `.crush/crush.db` made by Crush's own migrations (their Up part)."""
    db = project / ".crush/crush.db"
    db.parent.mkdir(parents=True)
    with closing(sqlite3.connect(db)) as con:
        for sql in CRUSH_SQL:
            con.executescript(sql.read_text().split("-- +goose Down")[0])
        con.commit()
    return db


def test_crush_cost_counts_whole_tokens_are_the_last_calls(tmp_path: Path) -> None:
    """Crush's `TrackUsage` adds each call's cost to `sessions.cost` but sets the token
    columns to the last call's. Two calls, each read as it lands: costs $0.02 + $0.03 count
    exactly, tokens 1200/300 + 1500/200 are the two calls (estimated, ≈). A cold scan sees
    only the row: the cost whole ($0.05), the tokens of the last call."""
    project = tmp_path / "proj"
    db = crush_project(project)
    data = tmp_path / "crush-data"
    data.mkdir()
    projects = {"projects": [{"path": str(project), "data_dir": str(project / ".crush")}]}
    (data / "projects.json").write_text(json.dumps(projects))
    with closing(sqlite3.connect(db)) as con:
        con.execute(
            "INSERT INTO sessions (id, title, prompt_tokens, completion_tokens, cost, "
            "updated_at, created_at) VALUES ('s1', 't', 1200, 300, 0.02, 1767225600000, "
            "1767225600000)"
        )
        con.execute(
            "INSERT INTO messages (id, session_id, role, parts, model, created_at, updated_at) "
            "VALUES ('m1', 's1', 'assistant', '[]', 'gpt-5', 1767225600000, 1767225600000)"
        )
        con.commit()
    engine = engine_for(CrushSource([data]))
    engine.scan()
    with closing(sqlite3.connect(db)) as con:
        con.execute("UPDATE sessions SET prompt_tokens=1500, completion_tokens=200, cost=0.05")
        con.commit()
    engine.process([db])
    live = by_id(engine.snapshot())["s1"]
    assert live.tokens == TokenCounts(input=2700, output=500)
    assert live.cost_usd == pytest.approx(0.05)
    assert live.estimated and live.cwd == str(project)
    cold = engine_for(CrushSource([data]))
    cold.scan()
    again = by_id(cold.snapshot())["s1"]
    assert again.tokens == TokenCounts(input=1500, output=200)
    assert again.cost_usd == pytest.approx(0.05)


def test_kilo_reads_opencode_schema_under_its_own_name(tmp_path: Path) -> None:
    """`kilo.db` with opencode's `message` table: an assistant row 100 in / 20 out / 30 cache
    read / 4 cache write / 5 reasoning counts under agent `kilo`, keyed `kilo:<id>`."""
    db = tmp_path / "kilo.db"
    data = {"role": "assistant", "modelID": "claude-sonnet-4-5", "time": {"created": 1767225600000,
            "completed": 1767225601000}, "tokens": {"input": 100, "output": 20, "reasoning": 5,
            "cache": {"read": 30, "write": 4}}, "cost": 0}  # fmt: skip
    with closing(sqlite3.connect(db)) as con:
        con.execute("CREATE TABLE message (id TEXT, session_id TEXT, data TEXT)")
        con.execute("INSERT INTO message VALUES ('m1', 'ses1', ?)", (json.dumps(data),))
        con.commit()
    engine = engine_for(KiloSource([tmp_path]))
    engine.scan()
    [session] = engine.snapshot().sessions
    assert session.key.agent == "kilo" and session.key.session_id == "ses1"
    assert session.tokens == TokenCounts(
        input=100, output=20, cache_read=30, cache_write_5m=4, reasoning=5
    )


@pytest.mark.parametrize("bad", [-5, 10**16, "twelve", 1.5, b"\xff"])
def test_hostile_row_values_are_bad_records_not_crashes(tmp_path: Path, bad: object) -> None:
    """A count that is negative, over the cap, text, fractional or a blob makes that row one
    bad record with the reason (Goose and Crush alike); the good rows still count exactly."""
    db = goose_db(tmp_path / "goose")
    project = tmp_path / "proj"
    crush = crush_project(project)
    with closing(sqlite3.connect(db)) as con:
        con.execute("INSERT INTO sessions (id, working_dir, accumulated_input_tokens, "
                    "accumulated_output_tokens) VALUES ('evil', '/x', ?, 1)", (bad,))  # fmt: skip
        con.commit()
    with closing(sqlite3.connect(crush)) as con:
        con.execute("INSERT INTO sessions (id, title, prompt_tokens, completion_tokens, cost, "
                    "updated_at, created_at) VALUES ('ok', 't', 10, 5, 0.01, 1, 1)")  # fmt: skip
        try:  # Crush's own CHECK refuses a negative count: then only Goose's row is evil
            con.execute(
                "INSERT INTO sessions (id, title, prompt_tokens, completion_tokens, cost, "
                "updated_at, created_at) VALUES ('evil', 't', ?, 5, 0.01, 1, 1)",
                (bad,),
            )
            evil_rows = 2
        except sqlite3.IntegrityError:
            evil_rows = 1
        con.commit()
    engine = engine_for(GooseSource([tmp_path / "goose"]), CrushSource([project]))
    engine.scan()
    snap = engine.snapshot()
    sessions = {(s.key.agent, s.key.session_id): s for s in snap.sessions}
    assert sessions["goose", "20260403_20"].tokens == TokenCounts(input=43400, output=3218)
    assert sessions["crush", "ok"].tokens == TokenCounts(input=10, output=5)
    assert ("goose", "evil") not in sessions or not sessions["goose", "evil"].tokens.total
    assert snap.bad_lines == evil_rows
    assert all("is not a token count" in f.last_error for f in snap.files if f.bad_lines)
