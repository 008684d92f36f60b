"""Session → process mappings reported by `tokentop hook` and `tokentop run`, in a JSONL file.

Append-only, one record per line, so concurrent hooks never rewrite each other's lines; the
newest record of a session wins. It also holds the hook's soft-stop episodes, and the exits
`tokentop run` saw of the agents it launched (every other tokentop process reads the file
when it changes, so such an exit reaches them all within a judgement, as a kill does). The
SQLite store can take this over later; until then the file lives in the user data dir, or
where `$TOKENTOP_REGISTRY` (or a --registry flag) says. Imports stay light: the hook reads it
before every tool call.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import msgspec

from tokentop.files import append_private
from tokentop.model import SessionKey

if TYPE_CHECKING:
    from tokentop.processes.finding import ProcessRef

ENV_VAR = "TOKENTOP_REGISTRY"
SoftStopState = Literal["blocked", "escalated", "cleared"]


class SessionRecord(msgspec.Struct, frozen=True, tag="session"):
    """A session and the process that runs it, found exactly (hook ancestor or our launch)."""

    agent: str
    session_id: str
    pid: int
    """0 when the hook found no agent among its ancestors (recorded so it stops looking)."""
    create_time: float
    how: Literal["hook", "launched"]
    timestamp: float
    cwd: str = ""
    transcript_path: str = ""
    cmdline: tuple[str, ...] = ()

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.agent, self.session_id)

    def ref(self) -> ProcessRef | None:
        """The process to act on (exact, so confident), or None when none was found."""
        if self.pid <= 0:
            return None
        from tokentop.processes.finding import ProcessRef, agent_name

        name = os.path.basename(self.cmdline[0]) if self.cmdline else ""
        agent = agent_name(name, self.cmdline) or self.agent
        return ProcessRef(self.pid, self.create_time, self.cmdline, self.cwd, self.how, True, agent)


class SoftStopRecord(msgspec.Struct, frozen=True, tag="soft_stop"):
    """One step of a soft-stop episode: the hook blocked, escalated, or let go again."""

    agent: str
    session_id: str
    state: SoftStopState
    timestamp: float
    responses: int
    """The session's responses at this step; escalation counts the ones after "blocked"."""
    reason: str = ""

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.agent, self.session_id)


class ExitRecord(msgspec.Struct, frozen=True, tag="exit"):
    """A launched process that ended, recorded by its parent (`tokentop run`), which reaped
    it: exact knowledge, never inferred from a session going quiet."""

    pid: int
    create_time: float
    timestamp: float


Record = SessionRecord | SoftStopRecord | ExitRecord
_decoder = msgspec.json.Decoder(Record)


def default_path() -> Path:
    """`$TOKENTOP_REGISTRY`, else sessions.jsonl in the user data dir."""
    override = os.environ.get(ENV_VAR)
    if override:
        return Path(override).expanduser()
    from tokentop.dirs import user_dir  # the XDG rule without importing platformdirs (Linux)

    return user_dir("data") / "sessions.jsonl"


def append(path: Path, record: Record) -> str:
    """Add one line with a single write; returns "" or why it could not be written."""
    line = msgspec.json.encode(record) + b"\n"
    try:
        append_private(path, line)
    except OSError as error:
        return f"cannot write {path}: {error.strerror or error}"
    return ""


def read(path: Path) -> tuple[list[Record], int]:
    """All records, oldest first, and the number of unreadable lines (a missing file is empty)."""
    try:
        data = path.read_bytes()
    except OSError:
        return [], 0
    records: list[Record] = []
    bad = 0
    for line in data.splitlines():
        if not line.strip():
            continue
        try:
            records.append(_decoder.decode(line))
        except (msgspec.DecodeError, msgspec.ValidationError):
            bad += 1
    return records, bad


def latest_sessions(records: list[Record]) -> dict[SessionKey, SessionRecord]:
    """The newest process record of each session."""
    return {r.key: r for r in records if isinstance(r, SessionRecord)}


def soft_stop_episode(records: list[Record], key: SessionKey) -> list[SoftStopRecord]:
    """The steps of the session's current soft-stop episode (empty when none is open)."""
    steps: list[SoftStopRecord] = []
    for r in records:
        if isinstance(r, SoftStopRecord) and r.key == key:
            steps = [] if r.state == "cleared" else [*steps, r]
    return steps


class Registry:
    """A reader that re-reads the file only when it has changed (for the guard's loop, and
    the engine thread's probe beside the app's workers: thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.bad_lines = 0
        self.generation = 0
        """How many times the file was read: a reader that keeps the last one it saw knows
        whether the file changed since, whoever made this object read it again."""
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._sessions: dict[SessionKey, SessionRecord] = {}
        self._current: dict[tuple[int, float], SessionKey] = {}
        self._exited: set[tuple[int, float]] = set()

    def refresh(self) -> int:
        """Re-read the file if it changed since the last look (one stat when it did not);
        returns the generation."""
        try:
            st = self.path.stat()
            stamp = (st.st_size, st.st_mtime_ns)
        except OSError:
            stamp = (0, 0)
        with self._lock:
            if stamp != self._stamp:
                records, self.bad_lines = read(self.path)
                self._sessions = latest_sessions(records)
                self._current = {(r.pid, r.create_time): k for k, r in self._sessions.items()}
                self._exited = {
                    (r.pid, r.create_time) for r in records if isinstance(r, ExitRecord)
                }
                self._stamp, self.generation = stamp, self.generation + 1
            return self.generation

    def sessions(self) -> dict[SessionKey, SessionRecord]:
        self.refresh()
        return self._sessions

    def exited(self, pid: int, create_time: float) -> bool:
        """Whether the parent of exactly this process (pid and start time) saw it end."""
        self.refresh()
        return (pid, create_time) in self._exited

    def is_current(self, record: SessionRecord) -> bool:
        """Whether `record` is its process's newest session (Claude Code's /clear starts a new
        session in the same process; the old one has ended, not stalled)."""
        self.sessions()
        return self._current.get((record.pid, record.create_time)) == record.key
