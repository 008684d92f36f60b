"""The half of TokentopApp that writes history and reads git: summaries, actions, commits.

Sessions that end while the app watches are recorded as summaries (summary.SummaryRecorder
over the store); actions taken with the keys go to the store's action log; the detail view
shows what git says the live session produced. Every store and git call runs in a thread
worker, and a failing store is reported once, never raised into the UI.
"""

from __future__ import annotations

import threading

import msgspec
from textual import work

from tokentop.config import Budget
from tokentop.gitvalue import GitValue, assess
from tokentop.model import LedgerSnapshot, SessionKey, SessionSnapshot
from tokentop.procs import ActionResult
from tokentop.store import Store
from tokentop.summary import MinutesFn, SessionSummary, SummaryRecorder, file_changes
from tokentop.ui.actions import ActionsApp, Step
from tokentop.ui.history import HistoryScreen
from tokentop.ui.processes import ActionOutcome

GIT_REFRESH_S = 30.0
"""How long the detail view reuses a session's git assessment before asking git again."""
ENDING_VERBS = frozenset({"terminate", "kill"})


class RecordingApp(ActionsApp):
    """Summaries, the action log and git, all off the UI thread."""

    def init_recording(self, store: Store | None, minutes_for: MinutesFn | None) -> None:
        self.store = store
        self.minutes_for = minutes_for
        self.recorder: SummaryRecorder | None = None
        """Made in the first worker that needs it: it reads the store's marks."""
        self.summaries_recorded = 0
        self.git_cache: dict[SessionKey, tuple[GitValue, float]] = {}
        self._git_pending: set[SessionKey] = set()
        self._record_lock = threading.Lock()
        self._observing = False
        self._store_problem = ""

    def action_history(self) -> None:
        if self.store is None:
            self.notify("History is off in this run (no store).", severity="warning")
            return
        if not isinstance(self.screen, HistoryScreen):
            store = self.store
            self.push_screen(HistoryScreen(lambda: store.summaries(), self.clock))

    # -- summaries ---------------------------------------------------------------------------

    def record_ended(self, snapshot: LedgerSnapshot, sessions: tuple[SessionSnapshot, ...]) -> None:
        """Each tick: let the recorder look at the listed sessions, in a worker."""
        if self.store is None or self._observing:
            return
        self._observing = True
        budgets = dict(self.overrides)
        self._observe(msgspec.structs.replace(snapshot, sessions=sessions), budgets)

    @work(thread=True, group="recorder")
    def _observe(self, snapshot: LedgerSnapshot, budgets: dict[SessionKey, Budget]) -> None:
        try:
            with self._record_lock:
                recorder = self._recorder()
                recorder.budgets = budgets  # set live with `b`: they beat the configured ones
                done = recorder.observe(snapshot)
        except Exception as exc:  # a locked or broken store must not stop the app
            self.call_from_thread(self._store_failed, exc)
            return
        finally:
            self._observing = False
        if done:
            self.call_from_thread(self._recorded, done)

    def _recorder(self) -> SummaryRecorder:
        """Worker threads only (the recorder reads the store when it is made)."""
        if self.recorder is None:
            assert self.store is not None
            self.recorder = SummaryRecorder(
                self.store, self.config, self.clock, minutes_for=self.minutes_for
            )
        return self.recorder

    def _recorded(self, summaries: list[SessionSummary]) -> None:
        self.summaries_recorded += len(summaries)
        for screen in self.screen_stack:
            if isinstance(screen, HistoryScreen):
                screen.read_store()

    def _store_failed(self, exc: Exception) -> None:
        """Say what went wrong once per distinct problem; the app goes on without it."""
        problem = f"{type(exc).__name__}: {exc}"
        if problem != self._store_problem:
            self._store_problem = problem
            self.notify(f"History not recorded: {problem}", title="Store", severity="warning")

    # -- actions -----------------------------------------------------------------------------

    def after_action(self, step: Step, outcome: ActionOutcome, origin: str) -> None:
        """Worker thread: log the action; a session killed here is recorded as such."""
        if self.store is None:
            return
        session = step.session
        if isinstance(outcome, ActionResult):
            result = msgspec.structs.replace(outcome, session=str(session.key))
        else:
            result = ActionResult(
                step.verb, outcome.ok, (step.ref.pid,), outcome.message,
                f"{step.verb} requested in tokentop", origin, self.clock.now(), step.ref.pid,
                str(session.key),
            )  # fmt: skip
        try:
            with self._record_lock:
                self.store.record_action(result)
                if outcome.ok and step.verb in ENDING_VERBS:
                    self._recorder().record(session, "killed")
        except Exception as exc:
            self.call_from_thread(self._store_failed, exc)
            return
        if outcome.ok and step.verb in ENDING_VERBS:
            self.call_from_thread(self._recorded, [])

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
