"""Budget use, ETA and threshold crossings: pure functions of a session, its budget and levels.

The UI colours rows from `BudgetUse.level` and alerts from `crossings`, which fires once per
upward crossing per session rather than on every refresh.
"""

from __future__ import annotations

import math
from collections.abc import Container, Hashable, Mapping
from enum import IntEnum
from typing import TypeVar

import msgspec

from tokentop.config import Alerts, Budget
from tokentop.model import SessionSnapshot

K = TypeVar("K", bound=Hashable)


class Level(IntEnum):
    """How far through its budget a session is; ordered so that a rise is a crossing."""

    OK = 0
    WARN = 1
    OVER = 2


class BudgetUse(msgspec.Struct, frozen=True):
    """A session measured against its budget."""

    budget: Budget
    fraction: float | None
    """The larger of the dollar and token shares used; None without a budget."""
    level: Level
    eta_s: float | None
    """Seconds until the budget is used at the current burn; 0 when over; None when the
    session is not live or not burning."""
    lower_bound: bool
    """True when the dollar share ignores unpriced models, so the real share may be higher."""
    origin: str = ""
    """Where the budget comes from: "session" (set for this session), or the config rule
    ("default", "agent codex", "project payments-*"); "" when there is none."""


def budget_use(
    session: SessionSnapshot, budget: Budget, alerts: Alerts, *, active: bool = True
) -> BudgetUse:
    """Measure `session` against `budget` with the warn/over thresholds of `alerts`; an
    ETA only while it is `active` (live), from the pace it has now."""
    shares = [
        share
        for share in (
            _share(session.cost_usd, budget.usd),
            _share(session.tokens.total, budget.tokens),
        )
        if share is not None
    ]
    fraction = max(shares) if shares else None
    return BudgetUse(
        budget,
        fraction,
        level_of(fraction, alerts),
        eta_seconds(session, budget) if active else None,
        lower_bound=bool(session.unpriced_models) and budget.usd is not None,
    )


def _share(used: float, limit: float | None) -> float | None:
    if limit is None:
        return None
    if limit <= 0:
        return math.inf if used > 0 else 0.0
    return used / limit


def level_of(fraction: float | None, alerts: Alerts) -> Level:
    if fraction is None:
        return Level.OK
    if fraction * 100 >= alerts.over_pct:
        return Level.OVER
    return Level.WARN if fraction * 100 >= alerts.warn_pct else Level.OK


def eta_seconds(session: SessionSnapshot, budget: Budget) -> float | None:
    """The soonest time a limit is reached at the pace as of the newest response (dollars or
    tokens), counted down from that response, while the session burns; 0 only when a limit
    is already reached."""
    lead = session.burn_age_s
    etas: list[float] = []
    burning = session.tokens_per_min > 0 or session.usd_per_hour > 0
    # the held pace is never below the burn (it decays from it): a snapshot made without one
    # (a fleet's summary, a test) is measured at its burn
    usd_rate = max(session.held_usd_per_hour, session.usd_per_hour) if burning else 0.0
    token_rate = max(session.held_tokens_per_min, session.tokens_per_min) if burning else 0.0
    if budget.usd is not None:
        etas.extend(_eta(budget.usd - session.cost_usd, usd_rate / 3600, lead))
    if budget.tokens is not None:
        etas.extend(_eta(budget.tokens - session.tokens.total, token_rate / 60, lead))
    return min(etas) if etas else None


def _eta(remaining: float, per_second: float, lead: float) -> list[float]:
    if remaining <= 0:
        return [0.0]
    if per_second <= 0:
        return []
    return [max(remaining / per_second - lead, MIN_ETA_S)]


MIN_ETA_S = 0.001
"""A limit not reached yet is never 0 s away (0 means over): its next response is due."""


def crossings(
    seen: Mapping[K, Level], current: Mapping[K, Level], live: Container[K]
) -> tuple[dict[K, Level], list[tuple[K, Level]]]:
    """New remembered levels, and the alerts to raise: live sessions whose level rose.

    A session that falls back (its budget was raised) and rises again alerts again. Sessions
    that are not live only update what is remembered, so history loaded at start-up, or a
    budget lowered on a finished session, changes colours without a burst of alerts.
    """
    remembered = dict(seen)
    alerts: list[tuple[K, Level]] = []
    for key, level in current.items():
        if level > remembered.get(key, Level.OK) and key in live:
            alerts.append((key, level))
        remembered[key] = level
    return remembered, alerts
