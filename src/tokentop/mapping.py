"""Which process runs a session: exact records first, then the open rollout file, then a guess.

Exact mappings come from `tokentop run` / the demo (launched) and from the Claude Code hook.
Codex keeps its rollout file open for the whole session, so the process holding it open for
writing is exact too. Otherwise a known agent process with the session's cwd is a guess,
flagged `confident=False` so the UI asks before acting on it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping

from tokentop.model import SessionKey, SessionSnapshot
from tokentop.procmap import find_agent_processes, find_by_open_file, match_session
from tokentop.procs import ProcessRef

SCAN_TTL_S = 5.0
"""How long a scan of the user's processes is reused; scanning /proc costs ~10-50 ms."""


class SessionMapper:
    """Implements the UI's ProcessMapper; called from worker threads only."""

    def __init__(self, exact: Mapping[SessionKey, ProcessRef] | None = None) -> None:
        self.exact = dict(exact or {})
        self._lock = threading.Lock()
        self._scan: list[ProcessRef] = []
        self._scanned_at = 0.0

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
        return match_session(session.cwd, self._candidates(), agent=session.key.agent)

    def _candidates(self) -> list[ProcessRef]:
        with self._lock:
            if time.monotonic() - self._scanned_at > SCAN_TTL_S:
                self._scan = find_agent_processes()
                self._scanned_at = time.monotonic()
            return list(self._scan)
