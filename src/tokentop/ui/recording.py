"""The part of TokentopApp that writes history: session summaries, findings and actions.

Sessions that end while the app watches are recorded as summaries (summary.SummaryRecorder
over the store); detector findings and actions taken with the keys go to the store, where
those summaries read them. Every store
call runs in a thread worker, and a failing store is reported once, never raised into the UI.
"""

from __future__ import annotations

import threading

import msgspec
from textual import work

from tokentop.config import Budget
from tokentop.history.store import Store
from tokentop.history.summary import MinutesFn, SessionSummary, SummaryRecorder
from tokentop.model import LedgerSnapshot, SessionKey, SessionSnapshot
from tokentop.policy.detectors import Decision
from tokentop.processes.control import ActionResult
from tokentop.processes.protocols import ActionOutcome
from tokentop.ui.actions import ActionsApp, Step
from tokentop.ui.screens.history import HistoryScreen

ENDING_VERBS = frozenset({"terminate", "kill"})


class RecordingApp(ActionsApp):
    """Summaries and the action log, written off the UI thread."""

    def init_recording(self, store: Store | None, minutes_for: MinutesFn | None) -> None:
        self.store = store
        self.minutes_for = minutes_for
        self.recorder: SummaryRecorder | None = None
        """Made in the first worker that needs it: it reads the store's marks."""
        self.summaries_recorded = 0
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
                done = recorder.observe(snapshot, self._alive(snapshot, recorder))
        except Exception as exc:  # a locked or broken store must not stop the app
            self.call_from_thread(self._store_failed, exc)
            return
        finally:
            self._observing = False
        if done:
            self.call_from_thread(self._recorded, done)

    def _alive(self, snapshot: LedgerSnapshot, recorder: SummaryRecorder) -> dict[SessionKey, bool]:
        """Worker thread: whether each exactly mapped session's process still runs, so a
        session whose agent exited is recorded then, not after the idle timeout. Only sessions
        launched or reported by a hook are asked (no /proc scan), and only unrecorded ones."""
        exact = getattr(self.mapper, "exact_ref", None)
        status = getattr(self.controller, "status", None)
        if exact is None or status is None:
            return {}
        alive: dict[SessionKey, bool] = {}
        for session in snapshot.sessions:
            if recorder.changed(session) and (ref := exact(session.key)) is not None:
                alive[session.key] = status(ref) != "gone"
        return alive

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

    # -- detector findings -------------------------------------------------------------------

    def record_findings(self, decisions: list[Decision]) -> None:
        """Keep each new finding in the store, where the session's summary reads it."""
        if self.store is not None:
            self._record_findings(self.store, decisions)

    @work(thread=True, group="findings")
    def _record_findings(self, store: Store, decisions: list[Decision]) -> None:
        try:
            with self._record_lock:
                for decision in decisions:
                    store.record_event(decision)
        except Exception as exc:  # a locked or broken store must not stop the app
            self.call_from_thread(self._store_failed, exc)

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
