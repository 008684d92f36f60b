"""What the app announces: budget crossings, and the policy detectors' findings.

The detectors run over live sessions for row flags, details and once-per-finding notices.
The app only shows and announces; carrying out a decision (pause, kill) is the guard's job.
Budget findings are left to the app's own alerts, which also honour budgets set with `b`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from textual.notifications import SeverityLevel

from tokentop.config import Config
from tokentop.model import SessionKey, SessionSnapshot
from tokentop.policy.budgets import Level
from tokentop.policy.detectors import DETECTORS, Decision, PolicyState, detect, evaluate
from tokentop.render import figures as fmt
from tokentop.ui.views.rows import Measured, project_name

FLAG_OF = {"loop": "L", "drift": "D", "runaway": "R", "stall": "S"}
"""Row flag letter per detector (budget has its own O/W flags)."""


class Notice(NamedTuple):
    message: str
    title: str
    severity: SeverityLevel


def budget_notice(m: Measured, level: Level) -> Notice:
    what = "over budget" if level == Level.OVER else "near its budget"
    share = fmt.percent(m.use.fraction or 0.0)
    message = f"{project_name(m.session.cwd)} ({m.session.key}) is {what}: {share} used"
    return Notice(message, "Budget", "error" if level == Level.OVER else "warning")


def finding_notice(m: Measured, decision: Decision) -> Notice:
    title = f"{decision.detector}: {project_name(m.session.cwd)}"
    return Notice(decision.reason, title, "warning" if decision.action == "warn" else "error")


class DetectionTracker:
    """One PolicyState for the app; judges only live sessions, so history stays quiet."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.state = PolicyState()
        self.judged: set[SessionKey] = set()
        self.fresh: list[Decision] = []
        """Findings not yet handed to the store (see `take_fresh`)."""

    def update(self, measured: Iterable[Measured], now: float) -> list[Notice]:
        """Judge live sessions; announce the findings that are new since the last call."""
        new: list[Notice] = []
        live: set[SessionKey] = set()
        for m in measured:
            if m.status != "live":
                continue
            live.add(m.session.key)
            found = evaluate(m.session, self.config, now, self.state)
            self.fresh += found
            new.extend(finding_notice(m, d) for d in found if d.detector != "budget")
        for key in self.judged - live:
            self.state.forget(key)
        self.judged = live
        return new

    def take_fresh(self) -> list[Decision]:
        """The findings since the last call, budget ones included, for the store."""
        fresh, self.fresh = self.fresh, []
        return fresh

    def flags(self, key: SessionKey) -> str:
        """Letters for the conditions that hold now."""
        levels = self.state.levels
        return "".join(
            FLAG_OF[d] for d in DETECTORS if d in FLAG_OF and levels.get((key, d), 0) > 0
        )

    def reasons(self, session: SessionSnapshot, now: float) -> list[str]:
        """Why each condition holds, for the detail view."""
        live = self.config.activity(session.last_ts, now) == "live"
        found = detect(session, self.config, now, self.state, live=live)
        return [d.reason for d in found]
