"""The part of TokentopApp that gathers the detail view: git's commits and reconciliation.

The detail view shows what git says the live session produced (asked in a thread worker,
reused for GIT_REFRESH_S) and, when the session shows up both in a transcript and in proxy
logs, both totals and their difference (reconcile.py, once per snapshot version).
"""

from __future__ import annotations

from textual import work
from textual.notifications import SeverityLevel

from tokentop.history.git_output import GitValue, assess
from tokentop.history.reconcile import Reconciliation, by_session, reconcile
from tokentop.history.summary import file_changes
from tokentop.model import LedgerSnapshot, SessionKey, SessionSnapshot
from tokentop.policy.budgets import budget_use
from tokentop.render.text import safe
from tokentop.ui.alerts import DetectionTracker
from tokentop.ui.recording import RecordingApp
from tokentop.ui.screens.detail import DetailView, SessionDetail
from tokentop.ui.views.rows import Measured

GIT_REFRESH_S = 30.0
"""How long the detail view reuses a session's git assessment before asking git again."""


class InsightsApp(RecordingApp):
    """Fills the open detail screen; git runs in thread workers."""

    measured: dict[str, Measured]
    detections: DetectionTracker

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification is plain text, escaped: most quote a session's cwd or key."""
        message, title = safe(message, keep_newlines=True), safe(title)
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    def init_insights(self) -> None:
        self.git_cache: dict[SessionKey, tuple[GitValue, float]] = {}
        self._git_pending: set[SessionKey] = set()
        self._pairs: tuple[int, dict[SessionKey, Reconciliation]] = (-1, {})

    def show_detail(self, snap: LedgerSnapshot, now: float) -> None:
        """Refresh the detail screen, if one is open, from this snapshot."""
        screen = self.screen
        if not isinstance(screen, SessionDetail):
            return
        m = self.measured.get(str(screen.key))
        session = m.session if m else next((s for s in snap.sessions if s.key == screen.key), None)
        if session is None:
            return
        use = m.use if m else budget_use(session, self.budget_of(session), self.config.alerts)
        status = m.status if m else "ended"
        reasons = self.detections.reasons(session, now)
        git = self.git_for(session)
        pair = self.reconciliation_for(snap, session.key)
        screen.show(DetailView(session, use, status, snap.files, now, reasons, git, pair))

    def reconciliation_for(self, snap: LedgerSnapshot, key: SessionKey) -> Reconciliation | None:
        """The transcript/proxy pair this session is part of; pairs are found once a version."""
        version, pairs = self._pairs
        if version != snap.version:
            pairs = by_session(reconcile(snap))
            self._pairs = (snap.version, pairs)
        return pairs.get(key)

    # -- git ---------------------------------------------------------------------------------

    def git_for(self, session: SessionSnapshot) -> GitValue | None:
        """The session's last git assessment; a missing or stale one is refreshed in a worker."""
        cached = self.git_cache.get(session.key)
        now = self.clock.now()
        stale = cached is None or now - cached[1] >= GIT_REFRESH_S
        if stale and session.key not in self._git_pending:
            self._git_pending.add(session.key)
            self._assess_git(session, now)
        return cached[0] if cached is not None else None

    @work(thread=True, group="git")
    def _assess_git(self, session: SessionSnapshot, now: float) -> None:
        try:
            value = assess(
                session.cwd,
                session.first_ts,
                session.last_ts,
                session.cost_usd,
                file_changes(session),
                self.config.history,
            )
        except Exception as exc:  # assess reports git's failures itself; anything else too
            value = GitValue(f"git not read: {exc}", "trivial")
        self.call_from_thread(self._git_assessed, session.key, value, now)

    def _git_assessed(self, key: SessionKey, value: GitValue, now: float) -> None:
        self._git_pending.discard(key)
        self.git_cache[key] = (value, now)
        self.refresh_view()
