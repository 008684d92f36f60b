"""The figures above and below the session table, computed here so the UI only shows them.

Today's spend and the burn now (the header), what the table lists and what it hides (older
than `hide_after_h`), and the total of the listed rows: sums over judged sessions, whose
burn the Watchdog has already zeroed unless they are live. And the vendors' usage windows
(history/windows.py), each marked "official" with its age or "computed".
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, NamedTuple

from tokentop.model import LimitWindow, RateLimits, SessionSnapshot
from tokentop.policy.budgets import BudgetUse, Level
from tokentop.policy.watchdog import Judged, Judgement
from tokentop.quantities import compact, usd

if TYPE_CHECKING:  # the header's types only: `sessions` never reads the windows
    from tokentop.history.blocks import Block
    from tokentop.history.windows import Windows


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
    rate_is_lower_bound: bool = False
    """A burning session has an unpriced model: the $/h leaves part of it out."""


class ListedTotal(NamedTuple):
    """The sum of the rows the table shows (after the filter): the line under it."""

    sessions: int
    tokens: int
    cost: float
    cost_is_lower_bound: bool
    tokens_per_min: float
    usd_per_hour: float
    estimated: bool
    rate_is_lower_bound: bool = False


def unpriced_burn(sessions: Iterable[SessionSnapshot]) -> bool:
    """Whether a burning session's $/h leaves out an unpriced model (the sum is then a
    lower bound, or unknown when nothing of it is priced)."""
    return any(s.unpriced_models and s.tokens_per_min > 0 for s in sessions)


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
        unpriced_burn(j.session for j in judgement.sessions),
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
        unpriced_burn(sessions),
    )


def flags_text(session: SessionSnapshot, use: BudgetUse, detected: str = "") -> str:
    """A session's flags, the same letters in the app's FLAGS column and the JSON: O over
    budget, W warned, the detectors' (L D R S), E unparseable lines, ? an unpriced model,
    ≈ estimated tokens."""
    flags = {Level.OVER: "O", Level.WARN: "W"}.get(use.level, "") + detected
    flags += "E" if session.bad_lines else ""
    flags += "?" if session.unpriced_models else ""
    return flags + ("≈" if session.estimated else "")


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


class WindowFigure(NamedTuple):
    """One vendor's windows of one kind, as the header shows them."""

    vendor: str
    kind: str
    """"official" (the vendor said so) or "computed" (tokentop counted)."""
    items: tuple[tuple[str, str], ...]
    """(text, level): level is "ok", "warn" (at the warn share) or "over" (at 100%)."""
    age: str = ""
    """How long ago an official figure was heard: "12s", "4m"."""


def window_figures(w: Windows | None, now: float, warn_pct: float) -> tuple[WindowFigure, ...]:
    """Claude's official windows and computed block, then Codex's official windows."""
    if w is None:
        return ()
    found = []
    if w.claude is not None:
        found.append(_official("Claude", w.claude, now, warn_pct))
    if w.claude_block is not None:
        found.append(WindowFigure("Claude", "computed", _block_items(w.claude_block, now)))
    if w.codex is not None:
        found.append(_official("Codex", w.codex, now, warn_pct))
    return tuple(found)


def _official(vendor: str, limits: RateLimits, now: float, warn_pct: float) -> WindowFigure:
    items = tuple(_window_item(x, now, warn_pct) for x in limits.windows)
    return WindowFigure(vendor, "official", items, since(now, limits.observed_at))


def window_name(w: LimitWindow) -> str:
    """5h, 7d, or the window's length ("90m"); the vendor's own name without one."""
    minutes = w.window_min or {"five_hour": 300, "seven_day": 10080}.get(w.name, 0)
    if not minutes:
        return w.name
    if minutes % 1440 == 0:
        return f"{minutes // 1440}d"
    return f"{minutes // 60}h" if minutes % 60 == 0 else f"{minutes}m"


def _window_item(w: LimitWindow, now: float, warn_pct: float) -> tuple[str, str]:
    name = window_name(w)
    if w.resets_at and w.resets_at <= now:
        return f"{name} reset since", "ok"  # the share heard was of a window now over
    text = f"{name} {w.used_pct:.0f}%"
    if w.resets_at:
        text += f" ↻{clock_time(w.resets_at, now)}"
    level = "over" if w.used_pct >= 100 else "warn" if w.used_pct >= warn_pct else "ok"
    return text, level


def clock_time(ts: float, now: float) -> str:
    """When a window resets, local time: 17:40 today, "Fri 15:00" further off."""
    fmt = "%H:%M" if ts - now < 86400 else "%a %H:%M"
    return time.strftime(fmt, time.localtime(ts))


def _block_items(b: Block, now: float) -> tuple[tuple[str, str], ...]:
    complete = b.cost_complete  # an unpriced model: "?" when nothing is priced, else "≥"
    items = [(f"block {usd(b.cost_usd, complete)} {compact(b.tokens.total)} tok", "ok")]
    if b.burn is not None:
        items.append((f"{usd(b.burn.usd_per_hour, complete)}/h", "ok"))
    if b.projection is not None:
        items.append((f"→ {usd(b.projection.cost_usd, complete)}", "ok"))
    left = max(0, int(b.end - now))
    items.append((f"{left // 3600}h{left % 3600 // 60:02d} left", "ok"))
    return tuple(items)
