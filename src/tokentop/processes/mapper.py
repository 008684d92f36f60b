"""Which process runs a session: exact records first, then the open rollout file, then a guess.

Exact mappings come from `tokentop run` / the demo (launched) and from the Claude Code hook.
Codex keeps its rollout file open for the whole session, so a known agent install holding it
open for writing is exact too. A session known only from a local app's traces maps to the
process proven to export them (`exporters.py`), and to nothing else. Otherwise a known agent
install working in the session's cwd is a guess: automatic actions only alert on it
(`automatic_refusal`), and a person acting on it from the app is told it is a guess. Another
live session in the same cwd makes it ambiguous.
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import psutil

from tokentop.model import TELEMETRY_ORIGIN, SessionKey, SessionSnapshot
from tokentop.policy.watchdog import ProcessState
from tokentop.processes.control import ProcessController
from tokentop.processes.exporters import ExporterMap
from tokentop.processes.finding import (
    ProcessRef,
    find_agent_processes,
    find_by_open_file,
    is_agent,
    match_session,
)
from tokentop.processes.registry import Registry

SCAN_TTL_S = 5.0
"""How long a scan of the user's processes is reused; scanning /proc costs ~10-50 ms."""
GUESS_HINT = "start the agent with `tokentop run` or install the hook (`tokentop hook install`)"


def automatic_refusal(verb: str, ref: ProcessRef) -> str:
    """Why an automatic action (policy, guard, hook escalation) must not act on `ref`; "" when
    it may. Only exact mappings are acted on: a guess is reported as what would have been done.
    """
    if ref.exact:
        return ""
    doubt = "" if ref.confident else ", ambiguous: another session or agent shares its cwd"
    return f"would {verb} pid {ref.pid}: the process is a guess{doubt}; {GUESS_HINT}"


def runs_elsewhere(session: SessionSnapshot, ref: ProcessRef, registry: Path) -> int:
    """The pid of another process known exactly to run `session`, outside `ref`'s tree (0 when
    none is): a live hook record, or a known agent writing its file. `tokentop run` links new
    transcripts of its cwd, so a second agent started there must not be taken for its child."""
    from tokentop.processes.control import ProcessController
    from tokentop.processes.registry import latest_sessions, read

    mine = _tree(ref.pid)
    record = latest_sessions(read(registry)[0]).get(session.key)
    other = record.ref() if record is not None and record.how == "hook" else None
    if other is not None and other.pid not in mine and ProcessController().status(other) != "gone":
        return other.pid
    for path in session.files if session.key.agent == "codex" else ():
        writer = find_by_open_file(path)
        if writer is not None and writer.pid not in mine:
            return writer.pid
    return 0


def _tree(pid: int) -> set[int]:
    try:
        return {pid, *(p.pid for p in psutil.Process(pid).children(recursive=True))}
    except psutil.Error:
        return {pid}


class SessionMapper:
    """Implements the UI's ProcessMapper; called from worker threads only."""

    def __init__(self, exact: Mapping[SessionKey, ProcessRef] | None = None) -> None:
        self.exact = dict(exact or {})
        self._lock = threading.Lock()
        self._scan: list[ProcessRef] = []
        self._scanned_at = 0.0
        self._live: Counter[tuple[str, str]] = Counter()
        self._live_keys: set[SessionKey] = set()

    def observe(self, live: Iterable[SessionSnapshot]) -> None:
        """The sessions live now: another live session of the same agent in the same cwd
        makes a guess ambiguous (its agent may have exited while this one's runs)."""
        sessions = [s for s in live if s.cwd]
        counts = Counter((s.key.agent, _cwd_key(s.cwd)) for s in sessions)
        with self._lock:
            self._live, self._live_keys = counts, {s.key for s in sessions}

    def add(self, key: SessionKey, ref: ProcessRef) -> None:
        with self._lock:
            self.exact[key] = ref

    def exact_ref(self, key: SessionKey) -> ProcessRef | None:
        """The process known for certain to run `key` (launched here), without any scan."""
        with self._lock:
            return self.exact.get(key)

    def processes_for(self, session: SessionSnapshot) -> ProcessRef | None:
        with self._lock:
            ref = self.exact.get(session.key)
        if ref is not None:
            return ref
        if session.key.agent == "codex":
            for path in session.files:
                found = find_by_open_file(path)
                if found is not None:
                    return found
        if not session.cwd:
            return None
        rivals = self._rivals(session)
        return match_session(session.cwd, self._candidates(), session.key.agent, rivals)

    def _rivals(self, session: SessionSnapshot) -> int:
        with self._lock:
            sharing = self._live[session.key.agent, _cwd_key(session.cwd)]
            return sharing - (session.key in self._live_keys)

    def _candidates(self) -> list[ProcessRef]:
        with self._lock:
            if time.monotonic() - self._scanned_at > SCAN_TTL_S:
                self._scan = find_agent_processes()
                self._scanned_at = time.monotonic()
            return list(self._scan)


def _cwd_key(cwd: str) -> str:
    return os.path.normpath(cwd)


class RecordedMapper:
    """Sessions recorded by the hook or `tokentop run` map exactly to their process; the rest
    go to the app's mapper (open file, then a guess by agent and cwd).

    Satisfies the app's `ProcessMapper` protocol. The fallback scans /proc, so it is only
    asked when an action is due, not on every refresh.
    """

    def __init__(
        self,
        registry: Registry,
        controller: ProcessController,
        fallback: SessionMapper,
        exporters: ExporterMap | None = None,
    ) -> None:
        self.registry = registry
        self.controller = controller
        self.fallback = fallback
        self.exporters = exporters or ExporterMap()
        """Trace sessions' proven exporters; the front-end's telemetry hub fills it."""

    def recorded(self, key: SessionKey) -> ProcessRef | None:
        """The recorded process of the session, if it still runs; a hook's record only while
        its process is a known agent install (a record from an older tokentop may not be)."""
        record = self.registry.sessions().get(key)
        ref = record.ref() if record is not None else None
        if ref is None or self.status(ref) == "gone":
            return None
        return ref if ref.how != "hook" or is_agent(ref.pid) else None

    def status(self, ref: ProcessRef) -> str:
        """The state of an exactly mapped process: "gone" once `tokentop run` recorded that
        it reaped it (no /proc read needed), else what the controller reads."""
        if self.registry.exited(ref.pid, ref.create_time):
            return "gone"
        return self.controller.status(ref)

    def generation(self) -> int:
        """The registry's generation, read again if the file changed: a new one means a
        mapping was added or `run` recorded its agent's exit (cached answers are stale)."""
        return self.registry.refresh()

    def current_ref(self, key: SessionKey) -> ProcessRef | None:
        """The exact process of the session while it is that process's newest session (after
        Claude Code's /clear the old session has ended, though its process runs on)."""
        record = self.registry.sessions().get(key)
        if record is not None:
            return record.ref() if self.registry.is_current(record) else None
        return self.fallback.exact_ref(key) or self.exporters.get(key)

    def exact_ref(self, key: SessionKey) -> ProcessRef | None:
        """The recorded process of the session, alive or not (see `recorded`)."""
        record = self.registry.sessions().get(key)
        ref = record.ref() if record is not None else None
        return ref or self.fallback.exact_ref(key) or self.exporters.get(key)

    def exporter_of(self, session: SessionSnapshot) -> ProcessRef | None:
        """The process proven to export every span of a session counted wholly from a
        local app's traces; None for any other session (a remote one, one with a file
        here, one whose spans named another process)."""
        local_only = all(f == f"{TELEMETRY_ORIGIN}local" for f in session.files)
        if session.remote or not session.files or not local_only:
            return None
        return self.exporters.get(session.key)

    def processes_for(self, session: SessionSnapshot) -> ProcessRef | None:
        if session.from_telemetry:  # a sender's word: only a proven exporter, else nothing
            return self.exporter_of(session)
        return self.recorded(session.key) or self.fallback.processes_for(session)

    def observe(self, live: Iterable[SessionSnapshot]) -> None:
        """The live sessions, so a guess shared by two of them is marked ambiguous."""
        self.fallback.observe(live)


PROBE_TTL_S = 3.0
"""How long a session's process state is reused: the probe runs on the engine thread."""
EXACT_TTL_S = 30.0
"""How long a session's exact mapping (or its absence) is reused, unless the registry
changes first (`ExactProbe.refresh`): the mappings that are not in it (an app's own launch,
a proven exporter) are looked up again only this often."""
_PROBE_STATES: dict[str, ProcessState] = {
    "running": "running",
    "stopped": "stopped",
    "gone": "gone",
}


def probe_state(status: str) -> ProcessState | None:
    """A controller's status as the Watchdog reads it ("unknown" is not ours to read: None)."""
    return _PROBE_STATES.get(status)


class ExactProbe:
    """The Watchdog's view of processes: the state of the process exactly mapped to a session
    (launched, hook, a known agent writing its file), or None. Never a /proc scan (a guess
    proves nothing about how a session stands); cached per session, so a judgement of 500
    sessions costs dict lookups on the engine thread."""

    def __init__(
        self,
        exact_ref: Callable[[SessionKey], Any],
        status: Callable[[Any], str],
        clock: Callable[[], float] = time.monotonic,
        generation: Callable[[], int] | None = None,
    ) -> None:
        self.exact_ref, self.status, self.clock = exact_ref, status, clock
        self.generation = generation
        """The mappings' source's generation (the registry's): a new one drops the caches."""
        self._seen = -1
        self._lock = threading.Lock()
        self._refs: dict[SessionKey, tuple[Any, float]] = {}
        self._states: dict[SessionKey, tuple[ProcessState | None, float]] = {}

    def __call__(self, key: SessionKey) -> ProcessState | None:
        now = self.clock()
        with self._lock:
            hit = self._states.get(key)
            if hit is not None and now - hit[1] < PROBE_TTL_S:
                return hit[0]
            ref = self._ref(key, now)
            state = probe_state(self.status(ref)) if ref is not None else None
            self._states[key] = (state, now)
            return state

    def forget(self, key: SessionKey) -> None:
        """Ask again next time (an action was just taken on the process)."""
        with self._lock:
            self._states.pop(key, None)

    def refresh(self) -> None:
        """Drop every cached answer when the registry changed (the Watchdog asks once per
        judgement): a mapping `run` wrote after this probe first found none, or the exit of
        a launched agent, counts from the next judgement, not after the caches' TTLs."""
        generation = self.generation() if self.generation is not None else self._seen
        with self._lock:
            if generation != self._seen:
                self._seen = generation
                self._refs.clear()
                self._states.clear()

    def _ref(self, key: SessionKey, now: float) -> Any:
        hit = self._refs.get(key)
        if hit is not None and now - hit[1] < EXACT_TTL_S:
            return hit[0]  # a mapping may appear, or move (`claude --resume` in a new process)
        ref = self.exact_ref(key)
        self._refs[key] = (ref, now)
        return ref


def exact_probe(mapper: object, controller: object) -> ExactProbe | None:
    """A probe from the mapper's exact mappings (`current_ref` when the mapper knows which
    session a process runs now, else `exact_ref`) and their `status` (the mapper's, which
    knows the exits `run` recorded, else the controller's), refreshed when the mapper's
    registry changes."""
    exact_ref = getattr(mapper, "current_ref", None) or getattr(mapper, "exact_ref", None)
    status = getattr(mapper, "status", None) or getattr(controller, "status", None)
    if exact_ref is None or status is None:
        return None
    return ExactProbe(exact_ref, status, generation=getattr(mapper, "generation", None))
