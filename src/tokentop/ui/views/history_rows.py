"""The history screen's view model: one row of plain strings per recorded session summary.

No Textual here: filtering, sorting and the cell texts are plain functions, easy to test.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Literal, NamedTuple

from tokentop.history.git_output import per_commit
from tokentop.history.jobs import JobRow, JobRun
from tokentop.history.report_rows import Judged as Routed
from tokentop.history.summary import SessionSummary, base_name
from tokentop.render import figures as fmt
from tokentop.render.text import safe
from tokentop.ui.views.rows import short_model
from tokentop.ui.views.table_fit import Squeeze

HistorySort = Literal[
    "end", "cost", "tokens", "commits", "per-commit", "active", "project", "agent"
]
HISTORY_SORTS: tuple[HistorySort, ...] = (
    "end",
    "cost",
    "tokens",
    "commits",
    "per-commit",
    "active",
    "project",
    "agent",
)
TEXT_SORTS = frozenset({"project", "agent"})
"""Text columns sort A→Z by default; numbers and times largest (newest) first."""
LABEL_STYLES = {
    "leverage": "bold green",
    "pending": "yellow",
    "theater": "bold red",
    "trivial": "dim",
    "unknown": "dim",
}


class HistoryColumn(NamedTuple):
    key: str
    label: str
    sort: HistorySort | None = None
    right: bool = False


HISTORY_COLUMNS: tuple[HistoryColumn, ...] = (
    HistoryColumn("ended", "ENDED", "end"),
    HistoryColumn("agent", "AGENT", "agent"),
    HistoryColumn("project", "PROJECT", "project"),
    HistoryColumn("models", "MODEL"),
    HistoryColumn("active", "ACTIVE", "active", True),
    HistoryColumn("tokens", "TOKENS", "tokens", True),
    HistoryColumn("cost", "COST", "cost", True),
    HistoryColumn("cheapest", "CHEAPEST", None, True),
    HistoryColumn("commits", "COMMITS", "commits", True),
    HistoryColumn("per_commit", "$/COMMIT", "per-commit", True),
    HistoryColumn("label", "LABEL"),
    HistoryColumn("reason", "HOW IT ENDED"),
)
HISTORY_SQUEEZES: tuple[Squeeze, ...] = (
    Squeeze("reason", 12),  # paused-then-exited: paused-then…
    Squeeze("project", 12),
    Squeeze("models", 10),
    Squeeze("label"),  # `enter` (the summary) and the filter still have what goes
    Squeeze("reason"),
    Squeeze("active"),
    Squeeze("agent"),
    Squeeze("project", 8),
    Squeeze("models"),
    Squeeze("cheapest"),
    Squeeze("per_commit"),
    Squeeze("commits"),
    Squeeze("tokens"),
)
"""How the table narrows on a smaller terminal: text columns first (cut with …), then the
least needed go. Times, money and counts are never cut: shown whole or not at all."""


class HistoryRow(NamedTuple):
    """What one history row shows, as plain text."""

    key: str
    ended: str
    agent: str
    project: str
    models: str
    active: str
    tokens: str
    cost: str
    cheapest: str
    commits: str
    per_commit: str
    label: str
    reason: str


def local_time(ts: float, now: float) -> str:
    """Today's times as HH:MM, this year's as Mon DD HH:MM, older ones with the year."""
    at, today = time.localtime(ts), time.localtime(now)
    if at[:3] == today[:3]:
        return time.strftime("%H:%M", at)
    return time.strftime("%b %d %H:%M" if at.tm_year == today.tm_year else "%Y-%m-%d", at)


def commit_count(s: SessionSummary) -> int | None:
    """None when git could not be read for the session (no repository, no cwd...)."""
    if s.git is None or s.git.status != "ok":
        return None
    return len(s.git.commits)


def summary_cost(s: SessionSummary) -> str:
    text = fmt.cost(s.cost_usd, s.unpriced_models)
    return f"≈{text}" if s.estimated else text


def main_models(s: SessionSummary) -> str:
    ordered = sorted(s.models, key=lambda m: -m.tokens.total)
    if not ordered:
        return "?"
    name = short_model(ordered[0].model)
    return name + (f" +{len(ordered) - 1}" if len(ordered) > 1 else "")


class HistoryExtras(NamedTuple):
    """What the core works out over the summaries, in the screen's worker: the recurring
    jobs and their runs, and each session's routing (cheapest model, flags) by key, with
    the config's prices and thresholds, as `tokentop report` has them."""

    jobs: list[JobRow]
    runs: list[JobRun]
    routed: dict[str, Routed]


NO_EXTRAS = HistoryExtras([], [], {})


def history_row(s: SessionSummary, now: float, routed: Routed | None = None) -> HistoryRow:
    """The cells of one session; without `routed` (not worked out yet), no cheapest model
    and no routing flag."""
    commits = commit_count(s)
    dollars = per_commit(s.cost_usd, commits)
    tokens = fmt.compact(s.tokens.total)
    route = routed.route if routed is not None else None
    return HistoryRow(
        key=str(s.key),
        ended=local_time(s.end, now),
        agent=safe(s.agent),
        project=safe(base_name(s.project)) or "?",  # bounded, even for rows stored before
        models=safe(main_models(s)),
        active=fmt.duration(s.active_s),
        tokens=f"≈{tokens}" if s.estimated else tokens,
        cost=summary_cost(s),
        cheapest=fmt.usd(route.cheapest_usd) if route and route.cheapest_models else "",
        commits="—" if commits is None else str(commits),
        per_commit="" if dollars is None else fmt.usd(dollars),
        label=s.label + (" ⚑" if routed is not None and routed.flags else ""),
        reason=s.end_reason,
    )


def history_search(s: SessionSummary) -> str:
    """Everything the history filter matches against, lower-cased."""
    models = " ".join(m.model for m in s.models)
    parts = (str(s.key), s.project, s.cwd, s.branch, models, s.label, s.end_reason)
    return " ".join(parts).lower()


def history_sort_value(s: SessionSummary, sort: HistorySort) -> tuple[object, ...]:
    """A key for `sort`; the session key last keeps equal rows in a stable order."""
    tie = str(s.key)
    commits = commit_count(s)
    values: dict[HistorySort, object] = {
        "end": s.end,
        "cost": s.cost_usd,
        "tokens": s.tokens.total,
        "commits": -1 if commits is None else commits,
        "per-commit": per_commit(s.cost_usd, commits) or -1.0,
        "active": s.active_s,
        "project": s.project.lower(),
        "agent": s.agent,
    }
    return (values[sort], tie)


def shown_summaries(
    summaries: Iterable[SessionSummary], needle: str, sort: HistorySort, reverse: bool
) -> list[SessionSummary]:
    """The summaries matching `needle`, in the order the screen shows them."""
    text = needle.strip().lower()
    found = [s for s in summaries if not text or text in history_search(s)]
    descending = (sort not in TEXT_SORTS) != reverse
    found.sort(key=lambda s: history_sort_value(s, sort), reverse=descending)
    return found


class HistoryTotals(NamedTuple):
    sessions: int
    tokens: int
    cost: float
    commits: int

    @property
    def per_commit(self) -> float | None:
        return per_commit(self.cost, self.commits)


def history_totals(summaries: Sequence[SessionSummary]) -> HistoryTotals:
    return HistoryTotals(
        len(summaries),
        sum(s.tokens.total for s in summaries),
        sum(s.cost_usd for s in summaries),
        sum(commit_count(s) or 0 for s in summaries),
    )
