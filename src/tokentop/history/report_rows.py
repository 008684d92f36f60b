"""Recorded sessions grouped for `tokentop report`: one row per session, day, week, month,
project, agent or model, with spend, output in git, and the cheapest-model arithmetic.

By model, a session's commits are shared among its models in proportion to their cost (a
session that spent 80% on Opus and 20% on Haiku credits Opus with 0.8 of each commit), so
the models' commits add up to the sessions' and $/commit per model is that model's cost over
its share of the commits.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from datetime import datetime

import msgspec

from tokentop.config import Routing
from tokentop.history.routing import PREMIUM_FLAG, Route, premium_low_output, route_models
from tokentop.history.summary import ModelShare, SessionSummary
from tokentop.pricing import PriceTable

BY = ("session", "day", "week", "month", "project", "agent", "model")


class ReportRow(msgspec.Struct):
    """One group of sessions (or one session, or one model) with its spend and output."""

    group: str
    project: str
    sessions: int
    start: float
    end: float
    active_s: float
    tokens: int
    cost_usd: float
    cost_complete: bool
    commits: int | None
    """None when the grouping cannot count whole commits (by model: see `model_commits`)."""
    surviving: int | None
    usd_per_commit: float | None
    usd_per_surviving_commit: float | None
    labels: dict[str, int]
    cheapest_usd: float | None = None
    """The same tokens on the cheapest model of each model's vendor (arithmetic, not a quality
    claim; history/routing.py); None when no model's vendor is known."""
    flags: dict[str, int] = {}
    """Sessions flagged, by flag (premium-low-output)."""
    model_commits: float | None = None
    """By model: the commits credited to the model by its share of each session's cost."""


class Judged(msgspec.Struct, frozen=True):
    """A summary with what routing makes of it."""

    summary: SessionSummary
    route: Route
    flags: tuple[str, ...]


def judge(summaries: Iterable[SessionSummary], table: PriceTable, cfg: Routing) -> list[Judged]:
    out = []
    for s in summaries:
        route = route_models(s.models, table)
        flags = (PREMIUM_FLAG,) if premium_low_output(s, route, cfg) else ()
        out.append(Judged(s, route, flags))
    return out


def local(ts: float, fmt: str) -> str:
    """The local calendar's day or month: a report is read by the person whose day it was."""
    return time.strftime(fmt, time.localtime(ts))


def iso_week(ts: float) -> str:
    year, week, _ = datetime.fromtimestamp(ts).isocalendar()
    return f"{year}-W{week:02d}"


def _group_key(by: str) -> Callable[[SessionSummary], str]:
    keys: dict[str, Callable[[SessionSummary], str]] = {
        "session": lambda s: str(s.key),
        "day": lambda s: local(s.start, "%Y-%m-%d"),
        "week": lambda s: iso_week(s.start),
        "month": lambda s: local(s.start, "%Y-%m"),
        "project": lambda s: s.project or "(none)",
        "agent": lambda s: s.agent,
    }
    return keys[by]


BY_COST = frozenset({"project", "agent"})
"""Groups that are not periods: their rows come most expensive first, as by model."""


def group_rows(judged: Iterable[Judged], by: str) -> list[ReportRow]:
    """Rows in first-activity order: sessions and periods; by project, agent and model the
    most expensive first."""
    if by == "model":
        return model_rows(judged)
    key = _group_key(by)
    groups: dict[str, list[Judged]] = {}
    for j in sorted(judged, key=lambda j: j.summary.start):
        groups.setdefault(key(j.summary), []).append(j)
    rows = [row_of(name, items) for name, items in groups.items()]
    if by == "session":
        for row, items in zip(rows, groups.values(), strict=True):
            row.project = items[0].summary.project
    return sorted(rows, key=lambda r: -r.cost_usd) if by in BY_COST else rows


def row_of(name: str, judged: list[Judged]) -> ReportRow:
    items = [j.summary for j in judged]
    cost = sum(s.cost_usd for s in items)
    gits = [s.git for s in items if s.git is not None]
    commits = sum(len(g.commits) for g in gits)
    checked = [g for g in gits if g.commits and g.surviving is not None]
    surviving = sum(g.surviving or 0 for g in checked) if checked else None
    labels: dict[str, int] = {}
    flags: dict[str, int] = {}
    for j in judged:
        labels[j.summary.label] = labels.get(j.summary.label, 0) + 1
        for flag in j.flags:
            flags[flag] = flags.get(flag, 0) + 1
    return ReportRow(
        group=name,
        project="",
        sessions=len(items),
        start=min(s.start for s in items),
        end=max(s.end for s in items),
        active_s=sum(s.active_s for s in items),
        tokens=sum(s.tokens.total for s in items),
        cost_usd=cost,
        cost_complete=not any(s.unpriced_models for s in items),
        commits=commits,
        surviving=surviving,
        usd_per_commit=cost / commits if commits else None,
        usd_per_surviving_commit=cost / surviving if surviving else None,
        labels=dict(sorted(labels.items())),
        cheapest_usd=_cheapest(j.route for j in judged),
        flags=flags,
    )


def _cheapest(routes: Iterable[Route]) -> float | None:
    """The group's sessions on their vendors' cheapest models; a session already on its
    cheapest (or with none known) at its own cost, as the total counts it: a row and the
    total add up the same way."""
    routes = list(routes)
    return math.fsum(r.cheapest_usd for r in routes) if routes else None


def model_rows(judged: Iterable[Judged]) -> list[ReportRow]:
    rows: dict[str, ReportRow] = {}
    for j in judged:
        s = j.summary
        commits = len(s.git.commits) if s.git is not None else 0
        for m, route in zip(s.models, j.route.models, strict=True):
            row = rows.get(m.model)
            if row is None:
                row = rows[m.model] = ReportRow(
                    m.model, "", 0, s.start, s.end, 0.0, 0, 0.0, True, None, None, None, None,
                    {}, None, {}, 0.0,
                )  # fmt: skip
            row.sessions += 1
            row.start, row.end = min(row.start, s.start), max(row.end, s.end)
            row.active_s += s.active_s * m.timeline_share
            row.tokens += m.tokens.total
            row.cost_usd += m.cost_usd or 0.0
            row.cost_complete = row.cost_complete and m.cost_usd is not None
            row.model_commits = (row.model_commits or 0.0) + commits * _share(m, s)
            if route.cheapest_usd is not None:
                row.cheapest_usd = (row.cheapest_usd or 0.0) + route.cheapest_usd
    for row in rows.values():
        credited = row.model_commits or 0.0
        row.usd_per_commit = row.cost_usd / credited if credited > 0 else None
    return sorted(rows.values(), key=lambda r: -r.cost_usd)


def _share(m: ModelShare, s: SessionSummary) -> float:
    """The model's share of the session's cost (its share of responses when nothing is
    priced), by which it is credited the session's commits."""
    if s.cost_usd > 0:
        return (m.cost_usd or 0.0) / s.cost_usd
    return m.responses / s.responses if s.responses else 0.0
