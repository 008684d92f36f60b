"""DetailFeed: what the open detail screen shows beyond the judgement.

Git's view of what the live session produced (asked in a thread worker, reused for
GIT_REFRESH_S) and, when the session shows up both in a transcript and in proxy logs, both
totals and their difference (reconcile.py, once per snapshot version). The worker only posts
GitAssessed; the app's handler calls `assessed` on the UI thread.
"""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING

from tokentop.clock import Clock
from tokentop.config import History
from tokentop.history.git_output import GitValue, assess
from tokentop.history.reconcile import Reconciliation, by_session, reconcile
from tokentop.history.summary import file_changes
from tokentop.model import LedgerSnapshot, SessionKey, SessionSnapshot
from tokentop.policy.watchdog import Judged
from tokentop.ui.messages import GitAssessed
from tokentop.ui.screens.detail import DetailView

if TYPE_CHECKING:
    from textual.app import App

GIT_REFRESH_S = 30.0
"""How long the detail view reuses a session's git assessment before asking git again."""


class DetailFeed:
    """Owned by the app; the git cache and the reconciliation pairs live here."""

    def __init__(self, app: App[None], clock: Clock, history: History) -> None:
        self.app = app
        self.clock = clock
        self.history = history
        self.git_cache: dict[SessionKey, tuple[GitValue, float]] = {}
        self._git_pending: set[SessionKey] = set()
        self._pairs: tuple[int, dict[SessionKey, Reconciliation]] = (-1, {})

    def view(self, snap: LedgerSnapshot, judged: Judged, reasons: list[str]) -> DetailView:
        s = judged.session
        now = self.clock.now()
        git, pair = self.git_for(s), self.reconciliation_for(snap, s.key)
        return DetailView(s, judged.use, judged.state, snap.files, now, reasons, git, pair)

    def reconciliation_for(self, snap: LedgerSnapshot, key: SessionKey) -> Reconciliation | None:
        """The transcript/proxy pair this session is part of; pairs are found once a version."""
        version, pairs = self._pairs
        if version != snap.version:
            pairs = by_session(reconcile(snap))
            self._pairs = (snap.version, pairs)
        return pairs.get(key)

    def git_for(self, session: SessionSnapshot) -> GitValue | None:
        """The session's last git assessment; a missing or stale one is refreshed in a worker."""
        cached = self.git_cache.get(session.key)
        now = self.clock.now()
        stale = cached is None or now - cached[1] >= GIT_REFRESH_S
        if stale and session.key not in self._git_pending:
            self._git_pending.add(session.key)
            self.app.run_worker(partial(self._assess, session, now), thread=True, group="git")
        return cached[0] if cached is not None else None

    def _assess(self, session: SessionSnapshot, now: float) -> None:
        try:
            value = assess(
                session.cwd,
                session.first_ts,
                session.last_ts,
                session.cost_usd,
                file_changes(session),
                self.history,
            )
        except Exception as exc:  # assess reports git's failures itself; anything else too
            value = GitValue(f"git not read: {exc}", "trivial")
        self.app.post_message(GitAssessed(session.key, value, now))

    def assessed(self, message: GitAssessed) -> None:
        self._git_pending.discard(message.key)
        self.git_cache[message.key] = (message.value, message.at)
