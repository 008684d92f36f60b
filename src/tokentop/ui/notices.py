"""What the app announces: budget crossings and the watchdog's decisions, as notice texts.

Budget decisions are left to the crossing notices (one per crossing, which also honour budgets
set with `b`), so a session going over its budget is announced once.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from textual.notifications import SeverityLevel

from tokentop.model import SessionKey, SessionSnapshot
from tokentop.policy.budgets import BudgetUse, Level
from tokentop.policy.detectors import Decision
from tokentop.policy.watchdog import Judgement
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


def notices_for(
    judgement: Judgement,
    decisions: Iterable[Decision],
    crossings: Iterable[tuple[SessionKey, Level]],
) -> list[Notice]:
    """One notice per new decision (budget ones aside) and one per budget crossing."""
    judged = {j.session.key: j for j in judgement.sessions}
    found: list[Notice] = []
    for decision in decisions:
        j = judged.get(decision.session)
        notice = decision_notice(j.session, decision) if j is not None else None
        if notice is not None:
            found.append(notice)
    for key, level in crossings:
        if (j := judged.get(key)) is not None:
            found.append(budget_notice(j.session, j.use, level))
    return found
