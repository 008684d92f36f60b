"""What the app announces: budget crossings and the watchdog's decisions, as notice texts.

Budget decisions are left to the crossing notices (one per crossing, which also honour budgets
set with `b`), so a session going over its budget is announced once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from textual.notifications import SeverityLevel

from tokentop.model import SessionSnapshot
from tokentop.policy.budgets import BudgetUse, Level
from tokentop.policy.detectors import Decision
from tokentop.policy.watchdog import Judged
from tokentop.render import figures as fmt
from tokentop.ui.views.rows import project_name


class Notice(NamedTuple):
    message: str
    title: str
    severity: SeverityLevel


def budget_notice(session: SessionSnapshot, use: BudgetUse, level: Level) -> Notice:
    what = "over budget" if level == Level.OVER else "near its budget"
    share = fmt.percent(use.fraction or 0.0)
    message = f"{project_name(session.cwd)} ({session.key}) is {what}: {share} used"
    return Notice(message, "Budget", "error" if level == Level.OVER else "warning")


def decision_notice(session: SessionSnapshot, decision: Decision) -> Notice | None:
    """None for a budget decision: its crossing is announced instead."""
    if decision.detector == "budget":
        return None
    title = f"{decision.detector}: {project_name(session.cwd)}"
    return Notice(decision.reason, title, "warning" if decision.action == "warn" else "error")


NOTICE_S = 6.0
"""How long a notice stays (the table's flags and the details keep saying it)."""
MAX_AT_ONCE = 2
"""Toasts shown for one batch of news; the rest are one line: on a small terminal a stack of
them would hide the table and the dialogs."""
_WORST = {"error": 0, "warning": 1, "information": 2}


def notices_for(
    decisions: Iterable[tuple[Judged, Decision]], crossings: Iterable[tuple[Judged, Level]]
) -> list[Notice]:
    """One notice per new decision (budget ones aside) and one per budget crossing; past
    MAX_AT_ONCE, the worst of them, and the others counted in one more notice."""
    found = [decision_notice(j.session, d) for j, d in decisions]
    notices = [n for n in found if n is not None]
    notices += [budget_notice(j.session, j.use, level) for j, level in crossings]
    if len(notices) <= MAX_AT_ONCE + 1:
        return notices  # in the order they happened
    notices.sort(key=lambda n: _WORST.get(n.severity, 3))
    shown, rest = notices[:MAX_AT_ONCE], notices[MAX_AT_ONCE:]
    titles = ", ".join(dict.fromkeys(n.title for n in rest))
    more = Notice(f"and {len(rest)} more: {titles}", "Alerts", rest[0].severity)
    return [*shown, more]
