"""The history keeper: the one subscriber that writes judgements to the store.

Decisions become the session's events, endings become summaries recorded with how the
session ended. The store and git are slow next to a judgement, so the keeper takes
judgements on the engine thread, keeps only what it must write, and writes in a thread of
its own. A store that fails is reported once per distinct problem, never raised.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from tokentop.history.summary import MinutesFn, SessionSummary, SummaryRecorder

if TYPE_CHECKING:
    from tokentop.clock import Clock
    from tokentop.config import Budget, Config
    from tokentop.history.store import Store
    from tokentop.model import SessionKey, SessionSnapshot
    from tokentop.policy.detectors import Decision
    from tokentop.policy.watchdog import Ending, Judgement

SETTLE_S = 1.0
"""After the first scan, the first full view draws before the keeper starts writing."""
BudgetsFn = Callable[[], "dict[SessionKey, Budget]"]


class HistoryKeeper:
    """Subscribe `take` to a Watchdog; `close` writes what is left and stops the thread."""

    def __init__(
        self,
        store: Store,
        config: Config,
        clock: Clock,
        *,
        minutes_for: MinutesFn | None = None,
        budgets: BudgetsFn | None = None,
        on_recorded: Callable[[list[SessionSummary]], None] | None = None,
        on_error: Callable[[Exception], None] | None = None,
        use_git: bool = True,
        after: threading.Event | None = None,
    ) -> None:
        self.store = store
        self.after = after
        """Nothing is written before this is set (the engine's first scan) and `SETTLE_S`
        more: a summary can load the tokenizer and run git, which would only slow the
        first view, and then its first full draw."""
        self.recorder = SummaryRecorder(
            store, config, clock, minutes_for=minutes_for, use_git=use_git
        )
        self.budgets = budgets
        self.on_recorded = on_recorded
        self.on_error = on_error
        self.recorded = 0
        self._cond = threading.Condition()
        self._decisions: list[Decision] = []
        self._endings: list[tuple[Ending, SessionSnapshot]] = []
        self._closed = False
        self._busy = False
        self._problem = ""
        self._thread = threading.Thread(target=self._run, name="tokentop-history", daemon=True)
        self._thread.start()

    def take(self, judgement: Judgement) -> None:
        """Engine thread: queue what this judgement adds to the history."""
        if not (judgement.decisions or judgement.endings):
            return
        sessions = {j.session.key: j.session for j in judgement.sessions}
        with self._cond:
            self._decisions += judgement.decisions
            self._endings += [(e, sessions[e.key]) for e in judgement.endings if e.key in sessions]
            self._cond.notify()

    def flush(self, timeout: float = 30.0) -> bool:
        """Wait until everything queued so far is written; False on timeout."""
        with self._cond:
            return self._cond.wait_for(
                lambda: not (self._decisions or self._endings or self._busy), timeout
            )

    def close(self, timeout: float = 30.0) -> None:
        """Write what is queued (at once, even before `after` is set), then stop."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)

    def _hold(self) -> None:
        """Until `after` is set and SETTLE_S more have passed, or the keeper is closed."""
        settled_at = None
        while self.after is not None:
            with self._cond:
                if self._closed:
                    return
                self._cond.wait(0.1)  # close() wakes it
            if settled_at is None and self.after.is_set():
                settled_at = time.monotonic() + SETTLE_S
            if settled_at is not None and time.monotonic() >= settled_at:
                return

    def _run(self) -> None:
        self._hold()
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._closed or self._decisions or self._endings)
                if self._closed and not (self._decisions or self._endings):
                    return
                decisions, self._decisions = self._decisions, []
                endings, self._endings = self._endings, []
                self._busy = True
            try:
                self._write(decisions, endings)
            except Exception as exc:  # a locked or broken store costs the history, not the run
                self._failed(exc)
            finally:
                with self._cond:
                    self._busy = False
                    self._cond.notify_all()

    def _write(
        self, decisions: list[Decision], endings: list[tuple[Ending, SessionSnapshot]]
    ) -> None:
        for decision in decisions:
            self.store.record_event(decision)
        if self.budgets is not None:
            self.recorder.budgets = self.budgets()
        done = [
            self.recorder.record(session, ending.how)
            for ending, session in endings
            if ending.how != "idle" or self.recorder.changed(session)
        ]
        self.recorded += len(done)
        if done and self.on_recorded is not None:
            self.on_recorded(done)

    def _failed(self, exc: Exception) -> None:
        problem = f"{type(exc).__name__}: {exc}"
        if problem != self._problem:
            self._problem = problem
            if self.on_error is not None:
                self.on_error(exc)
