"""Goose sessions: the SQLite store `~/.local/share/goose/sessions/sessions.db`.

Verified in block/goose @865e4a03 (`crates/goose/src/session/migrations.rs`, schema v13):
table `sessions` with `id`, `working_dir`, `created_at`, `updated_at`,
`accumulated_input_tokens`, `accumulated_output_tokens` (running totals of the session,
no cache split), `provider_name`, `model_config_json` (v6, `{"model_name": …}`),
`accumulated_cost` (v13) and, in newer builds, `parent_session_id`. The shared sample is
`goose session export` output of the same row. Each session is one cumulative event keyed
`goose:<session id>` that grows as the row does (the ledger keeps the largest); Goose's own
`accumulated_cost` is used when above zero. The database is read-only and re-queried only
when it or its `-wal` changes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import msgspec

from tokentop.model import Event, SessionInfo, SessionKey, TokenCounts, UsageEvent
from tokentop.sources.base import DirSource, FileParser, env_dirs, name_text, parse_iso
from tokentop.sources.jsonlines import DECODE_ERRORS
from tokentop.sources.sqlite_rows import MAX_ROWS, SqliteRowsParser, count, money, text
from tokentop.sources.wholefile import os_name

AGENT = "goose"


class _ModelConfig(msgspec.Struct, gc=False):
    model_name: str = ""


_MODEL_CONFIG = msgspec.json.Decoder(_ModelConfig)


class GooseSource(DirSource):
    """`sessions/sessions.db` (and its `-wal`) in every Goose data dir."""

    name: ClassVar[str] = AGENT
    suffixes: ClassVar[tuple[str, ...]] = (".db",)

    @staticmethod
    def default_dirs(env: Mapping[str, str]) -> list[Path]:
        listed = env_dirs(env, "GOOSE_DATA_DIR")
        if listed:
            return listed
        home = Path(env.get("HOME") or Path.home())
        return [Path(env.get("XDG_DATA_HOME") or home / ".local" / "share") / "goose"]

    def roots_in(self, folder: Path) -> list[Path]:
        sessions = folder if folder.name == "sessions" else folder / "sessions"
        db = sessions / "sessions.db"
        return [db, Path(f"{db}-wal")]

    def is_transcript(self, path: Path) -> bool:
        return path.name in ("sessions.db", "sessions.db-wal")

    def tracked_path(self, path: Path) -> Path:
        """A change to `sessions.db-wal` is a change to the database itself."""
        return path.with_name("sessions.db") if path.name.endswith("-wal") else path

    def new_parser(self, path: Path) -> FileParser:
        return GooseDbParser(path=name_text(path), os_path=os_name(path))


class GooseDbParser(SqliteRowsParser, tag="goose-db"):
    """`sessions.db`: one cumulative event per session whose totals moved."""

    totals: dict[str, int] = msgspec.field(default_factory=dict)
    """Tokens last emitted per session (a row whose total did not move is skipped)."""

    def read(self, db: sqlite3.Connection, out: list[Event]) -> None:
        rows = db.execute(f"SELECT * FROM sessions LIMIT {MAX_ROWS}").fetchall()
        self.lines = len(rows)
        for row in rows:
            try:
                self._row(row, out)
            except ValueError as exc:
                self.bad(f"session {text(row, 'id')[:60]}: {exc}")

    def _row(self, row: sqlite3.Row, out: list[Event]) -> None:
        session_id = name_text(text(row, "id"))
        tokens = TokenCounts(
            input=count(row, "accumulated_input_tokens"),
            output=count(row, "accumulated_output_tokens"),
        )
        if not session_id or self.totals.get(session_id) == tokens.total:
            return
        key = SessionKey(AGENT, session_id)
        if session_id not in self.totals:
            parent = name_text(text(row, "parent_session_id"))
            started = utc(text(row, "created_at"))
            out.append(SessionInfo(key, started, text(row, "working_dir"), parent=parent))
        self.totals[session_id] = tokens.total
        if tokens.total:
            ts = utc(text(row, "updated_at")) or utc(text(row, "created_at"))
            model = model_name(text(row, "model_config_json") or text(row, "model_config"))
            cost = money(row, "accumulated_cost")
            cwd = text(row, "working_dir")
            dedupe = f"{AGENT}:{session_id}"
            out.append(UsageEvent(key, dedupe, ts, model, tokens, cwd, cost_usd=cost))


def model_name(config: str) -> str:
    """The model a session's `model_config_json` names ("" when it names none)."""
    try:
        return _MODEL_CONFIG.decode(config).model_name if config else ""
    except DECODE_ERRORS:
        return ""


def utc(stamp: str) -> float:
    """SQLite's `CURRENT_TIMESTAMP` text ("2026-04-03 19:50:29") is UTC without saying so."""
    naive = len(stamp) >= 19 and not stamp.endswith("Z") and "+" not in stamp[19:]
    return parse_iso(stamp + "+00:00" if naive and "-" not in stamp[19:] else stamp)
