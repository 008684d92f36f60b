"""The figures above and below the session table, computed here so the UI only shows them.

Today's spend and the burn now (the header), what the table lists and what it hides (older
than `hide_after_h`), and the total of the listed rows: sums over judged sessions, whose
burn the Watchdog has already zeroed unless they are live.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from tokentop.policy.watchdog import Judged, Judgement


class Totals(NamedTuple):
    """The header's figures."""

    tokens: int
    cost: float
    cost_is_lower_bound: bool
    usd_per_hour: float
    tokens_per_min: float
    live: int
    listed: int
    bad_lines: int
    bad_files: int
    estimated: bool = False
    """Part of today's figures comes from tokenizer estimates."""
    hidden: int = 0
    """Sessions not listed because they have been quiet longer than hide_after_h."""


class ListedTotal(NamedTuple):
    """The sum of the rows the table shows (after the filter): the line under it."""

    sessions: int
    tokens: int
    cost: float
    cost_is_lower_bound: bool
    tokens_per_min: float
    usd_per_hour: float
    estimated: bool


def split_hidden(
    judged: Iterable[Judged], now: float, hide_after_s: float
) -> tuple[list[Judged], int]:
    """The sessions active within `hide_after_s` (0 lists them all), and how many are not."""
    shown: list[Judged] = []
    hidden = 0
    for j in judged:
        if hide_after_s <= 0 or now - j.session.last_ts <= hide_after_s:
            shown.append(j)
        else:
            hidden += 1
    return shown, hidden


def header_totals(judgement: Judgement, listed: Sequence[Judged], hidden: int = 0) -> Totals:
    """Today's figures: each session's spend since local midnight (the ledger's minute
    buckets, so a session that started yesterday counts only today's part); the burn is
    the sum of the rows' burn, which the Watchdog zeroes unless a session is live."""
    snap = judgement.snapshot
    today = [s for s in snap.sessions if s.tokens_today or s.cost_today]
    return Totals(
        sum(s.tokens_today for s in today),
        sum(s.cost_today for s in today),
        any(s.unpriced_models for s in today),
        judgement.burn_usd_per_hour,
        judgement.burn_tokens_per_min,
        sum(1 for j in listed if j.state == "live"),
        len(listed),
        snap.bad_lines,
        sum(1 for f in snap.files if f.bad_lines),
        any(s.estimated for s in today),
        hidden,
    )


def listed_total(rows: Sequence[Judged]) -> ListedTotal:
    """What the listed rows add up to, whole sessions (not only today's part)."""
    sessions = [j.session for j in rows]
    return ListedTotal(
        len(rows),
        sum(s.tokens.total for s in sessions),
        sum(s.cost_usd for s in sessions),
        any(s.unpriced_models for s in sessions),
        sum(s.tokens_per_min for s in sessions),
        sum(s.usd_per_hour for s in sessions),
        any(s.estimated for s in sessions),
    )


def since(now: float, ts: float) -> str:
    """How long ago `ts` was, in at most 4 characters, as the LAST column shows it: `4s`,
    `12m`, `23h`, `3d` (`-` when unknown)."""
    if ts <= 0:
        return "-"
    age = max(0, int(now - ts))
    for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
        if age >= seconds:
            return f"{min(age // seconds, 999)}{unit}"
    return f"{age}s"
