"""Crush sessions: each project's `<project>/.crush/crush.db`, found through Crush's own list.

Verified in charmbracelet/crush at its last MIT commit 9c45643c (`internal/db/migrations/
20250424200609_initial.sql`, in the shared samples; `internal/llm/agent/agent.go`
`TrackUsage`; `internal/projects/projects.go`): table `sessions(id, parent_session_id,
title, prompt_tokens, completion_tokens, cost, updated_at, created_at)` and `messages(…,
model, …)`; the project list is `projects.json` next to the global data
(`$XDG_DATA_HOME/crush`), `{"projects": [{"path", "data_dir"}]}`.

`TrackUsage` adds each call's cost to `sessions.cost` but *sets* `prompt_tokens` (input +
cache writes) and `completion_tokens` (output + cache reads) to the last call's counts: the
row holds the running cost and only the latest call's tokens, not session totals. So each
change of a row seen is one observation, keyed `crush:<session>:<n>`: its cost is the
growth of `cost` since the last one (exact: Crush's own price), its tokens the last call's
(marked estimated, `≈`: calls between two reads, and every call but the last on a cold
scan, are missing from the tokens, never from the cost). Sub-agent and title sessions
(`parent_session_id`) count on their own, named with their parent.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import msgspec

from tokentop.model import Event, SessionInfo, SessionKey, TokenCounts, UsageEvent
from tokentop.sources.base import DirSource, FileParser, bounded_ts, env_dirs, name_text
from tokentop.sources.sqlite_rows import MAX_ROWS, SqliteRowsParser, cell, count, money, text
from tokentop.sources.wholefile import os_name, read_side_file

AGENT = "crush"
MAX_PROJECTS = 1000


class _Project(msgspec.Struct, gc=False):
    path: str = ""
    data_dir: str = ""


class _Projects(msgspec.Struct, gc=False):
    projects: list[_Project] = msgspec.field(default_factory=list)


_PROJECTS = msgspec.json.Decoder(_Projects)


class CrushSource(DirSource):
    """`crush.db` (and its `-wal`) of every project Crush lists, or of the dirs given."""

    name: ClassVar[str] = AGENT
    suffixes: ClassVar[tuple[str, ...]] = (".db",)

    @staticmethod
    def default_dirs(env: Mapping[str, str]) -> list[Path]:
        listed = env_dirs(env, "CRUSH_GLOBAL_DATA")
        if listed:
            return listed
        home = Path(env.get("HOME") or Path.home())
        return [Path(env.get("XDG_DATA_HOME") or home / ".local" / "share") / "crush"]

    def roots_in(self, folder: Path) -> list[Path]:
        """A project's `.crush` dir (or the project), or Crush's global data dir, whose
        `projects.json` lists the projects' data dirs (read once, when tokentop starts)."""
        found = read_side_file(folder / "projects.json", _PROJECTS)
        if found is not None:
            dirs = [Path(p.data_dir) for p in found.projects[:MAX_PROJECTS] if p.data_dir]
        elif folder.name != ".crush" and (folder / ".crush").is_dir():
            dirs = [folder / ".crush"]
        else:
            dirs = [folder]
        return [p for d in dirs for p in (d / "crush.db", d / "crush.db-wal")]

    def is_transcript(self, path: Path) -> bool:
        return path.name in ("crush.db", "crush.db-wal")

    def tracked_path(self, path: Path) -> Path:
        """A change to `crush.db-wal` is a change to the database itself."""
        return path.with_name("crush.db") if path.name.endswith("-wal") else path

    def new_parser(self, path: Path) -> FileParser:
        project = path.parent.parent if path.parent.name == ".crush" else path.parent
        return CrushDbParser(path=name_text(path), os_path=os_name(path), cwd=str(project))


class CrushDbParser(SqliteRowsParser, tag="crush-db"):
    """`crush.db`: one observation per change of a session row (see the module doc)."""

    cwd: str = ""
    seen_rows: dict[str, list[float]] = msgspec.field(default_factory=dict)
    """Per session: [observations, cost so far, prompt_tokens, completion_tokens]."""

    def read(self, db: sqlite3.Connection, out: list[Event]) -> None:
        rows = db.execute(f"SELECT * FROM sessions LIMIT {MAX_ROWS}").fetchall()
        self.lines = len(rows)
        for row in rows:
            try:
                self._row(db, row, out)
            except ValueError as exc:
                self.bad(f"session {text(row, 'id')[:60]}: {exc}")

    def _row(self, db: sqlite3.Connection, row: sqlite3.Row, out: list[Event]) -> None:
        session_id = name_text(text(row, "id"))
        prompt, completion = count(row, "prompt_tokens"), count(row, "completion_tokens")
        cost = money(row, "cost") or 0.0
        if not session_id:
            return
        key = SessionKey(AGENT, session_id)
        before = self.seen_rows.get(session_id)
        if before is None:
            parent = name_text(text(row, "parent_session_id"))
            started = _ms(row, "created_at")
            out.append(SessionInfo(key, started, self.cwd, parent=parent))
            before = self.seen_rows[session_id] = [0, 0.0, 0, 0]
        if [cost, prompt, completion] == before[1:]:
            return
        added = max(0.0, cost - before[1])
        self.seen_rows[session_id] = [before[0] + 1, max(cost, before[1]), prompt, completion]
        tokens = TokenCounts(input=prompt, output=completion)
        if tokens.total or added:
            model = _last_model(db, text(row, "id"))
            dedupe = f"{AGENT}:{session_id}:{int(before[0])}"
            ts = _ms(row, "updated_at")
            event = UsageEvent(
                key, dedupe, ts, model, tokens, self.cwd, cost_usd=added or None, estimated=True
            )
            out.append(event)


def _ms(row: sqlite3.Row, column: str) -> float:
    """A Unix time Crush keeps in milliseconds (a trigger may have written seconds)."""
    value = cell(row, column)
    if not isinstance(value, int | float):
        return 0.0
    seconds = value / 1000.0 if value > 1e11 else float(value)
    return bounded_ts(seconds)


def _last_model(db: sqlite3.Connection, session_id: str) -> str:
    """The model of the session's latest assistant message ("" if none says)."""
    try:
        found = db.execute(
            "SELECT model FROM messages WHERE session_id = ? AND role = 'assistant' "
            "AND model IS NOT NULL ORDER BY created_at DESC LIMIT 1",
            (session_id,),
        ).fetchone()
    except sqlite3.Error:
        return ""
    return found[0] if found is not None and isinstance(found[0], str) else ""
