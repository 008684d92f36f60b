"""A session's counters frozen at `now`: its burn (the pace of its recent responses, see
pace.py), and the sparkline and today's spend from the per-minute buckets (the ledger keeps,
this module reads).

Everything time-dependent is here, so a quiet session's snapshot can be reused with only
these fields evaluated again (`with_rates`).
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime

import msgspec

from tokentop.engine.ledger_state import KINDS, MinuteItems, SessionState
from tokentop.engine.pace import STOPPED, Pace, newest, pace_at
from tokentop.model import (
    FileHealth,
    LedgerSnapshot,
    ModelUsage,
    RecentTool,
    SessionSnapshot,
    TokenCounts,
    ToolStat,
)

SERIES_MINUTES = 30
"""Minutes of burn in a snapshot's sparkline."""


class SnapshotCache:
    """Last snapshot per session: reused as is while the session is quiet (its rates are
    zero), with fresh rates while it is active, rebuilt when its counters change."""

    def __init__(self, dirty: Iterable[str] = ()) -> None:
        self.dirty: set[str] = set(dirty)
        """Sessions whose counters changed since the last `take` (the ledger adds to it)."""
        self._last: dict[str, tuple[tuple[int, float], SessionSnapshot, bool]] = {}

    def take(
        self,
        sessions: Mapping[str, SessionState],
        now: float,
        files: Mapping[str, FileHealth],
        version: int,
        calls_since: float | None = None,
    ) -> LedgerSnapshot:
        """Every session at `now`. With `calls_since`, a view for one look (a command's
        output), built afresh and kept nowhere: sessions quiet since before it come without
        their recent tool calls, which only the loop detector reads, and only those newer
        than its window (no call is newer than its session's `last_ts`). Decoding them was
        most of a snapshot's time and memory over a long history."""
        by_path = {h.path: h for h in files.values()}  # keyed as the sessions list them
        if calls_since is None:
            frozen = tuple(
                self._session(sid, state, now, by_path) for sid, state in sessions.items()
            )
            self.dirty.clear()
        else:
            frozen = tuple(
                build_session_snapshot(
                    state, now, _bad_lines(state, by_path), calls=state.last_ts >= calls_since
                )
                for state in sessions.values()
            )
        health = tuple(by_path.values())
        return LedgerSnapshot(
            taken_at=now,
            sessions=frozen,
            files=health,
            bad_lines=sum(f.bad_lines for f in health),
            version=version,
        )

    def _session(
        self, sid: str, state: SessionState, now: float, files: Mapping[str, FileHealth]
    ) -> SessionSnapshot:
        bad = _bad_lines(state, files)
        quiet = state.last_ts < now - SERIES_MINUTES * 60 - 60
        cached = self._last.get(sid)
        midnight = local_midnight(now)
        if cached and sid not in self.dirty and cached[0] == (bad, midnight):
            if quiet and cached[2]:
                return cached[1]
            snap = with_rates(cached[1], state, now)  # only time moved
        else:
            snap = build_session_snapshot(state, now, bad)
        self._last[sid] = ((bad, midnight), snap, quiet)
        return snap


def _bad_lines(state: SessionState, files: Mapping[str, FileHealth]) -> int:
    return sum(files[f].bad_lines for f in state.files if f in files)


@functools.lru_cache(maxsize=4)
def local_midnight(now: float) -> float:
    """Local midnight before `now`; asked several times per session for one `now` per
    snapshot, so it is remembered (a datetime per call would cost a tick ~ms per 1000)."""
    day = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    return day.timestamp()


def with_rates(snap: SessionSnapshot, state: SessionState, now: float) -> SessionSnapshot:
    """The same counters with the time-dependent fields evaluated at `now`."""
    burn, series, today, cost_today = _time_fields(state, now)
    return msgspec.structs.replace(
        snap,
        tokens_per_min=burn.tokens_per_min,
        usd_per_hour=burn.usd_per_hour,
        burn_age_s=burn.age_s,
        held_tokens_per_min=burn.held_tokens_per_min,
        held_usd_per_hour=burn.held_usd_per_hour,
        burn_series=series,
        tokens_today=today,
        cost_today=cost_today,
    )


_IDLE_SERIES = (0,) * SERIES_MINUTES


TimeFields = tuple[Pace, tuple[int, ...], int, float]
"""Burn, sparkline, today's tokens and today's cost."""


def _time_fields(state: SessionState, now: float) -> TimeFields:
    """Burn rates, sparkline and today's spend at `now`; all zero for a session idle since
    before midnight and the sparkline, without reading its minutes."""
    horizon = now - SERIES_MINUTES * 60 - 60
    if state.last_ts < min(horizon, local_midnight(now)):
        return STOPPED, _IDLE_SERIES, 0, 0.0
    end = int(now // 60)
    first = min(int(local_midnight(now) // 60), end - SERIES_MINUTES + 1)
    recent = state.minute_items(first, end)
    today, cost_today = _today(recent, now)
    return pace_at(state.pace, now), _series(recent, now), today, cost_today


def _today(minutes: MinuteItems, now: float) -> tuple[int, float]:
    first = int(local_midnight(now) // 60)
    tokens = cost = 0.0
    for minute, t, c in minutes:
        if minute >= first:
            tokens += t
            cost += c
    return int(tokens), cost


def build_session_snapshot(
    state: SessionState, now: float, bad_lines: int, calls: bool = True
) -> SessionSnapshot:
    """Freeze one session's counters, with burn rates evaluated at `now` (and its recent tool
    calls unless not `calls`)."""
    models = tuple(
        ModelUsage(
            model=name,
            tokens=TokenCounts(*acc.tokens),
            cost_usd=None if acc.unpriced and not acc.cost else acc.cost,
            responses=acc.responses,
        )
        for name, acc in sorted(state.by_model.items(), key=lambda kv: -sum(kv[1].tokens))
    )
    total = [0] * KINDS
    for acc in state.by_model.values():
        total = [t + n for t, n in zip(total, acc.tokens, strict=True)]
    burn, series, tokens_today, cost_today = _time_fields(state, now)
    return SessionSnapshot(
        key=state.key,
        cwd=state.cwd,
        branch=state.branch,
        first_ts=state.first_ts,
        last_ts=state.last_ts,
        last_response_ts=newest(state.pace) or state.last_ts,
        tokens=TokenCounts(*total),
        cost_usd=sum(acc.cost for acc in state.by_model.values()),
        unpriced_models=tuple(m for m, acc in state.by_model.items() if acc.unpriced),
        models=models,
        model_timeline=tuple(state.timeline),
        responses=sum(acc.responses for acc in state.by_model.values()),
        tokens_per_min=burn.tokens_per_min,
        usd_per_hour=burn.usd_per_hour,
        burn_age_s=burn.age_s,
        held_tokens_per_min=burn.held_tokens_per_min,
        held_usd_per_hour=burn.held_usd_per_hour,
        burn_series=series,
        tool_calls=sum(t.calls for t in state.tools.values()),
        tool_errors=sum(t.errors for t in state.tools.values()),
        tools=tuple(
            ToolStat(name, acc.calls, acc.errors)
            for name, acc in sorted(state.tools.items(), key=lambda kv: -kv[1].calls)
        ),
        recent_tools=tuple(
            RecentTool(
                c.timestamp,
                sys.intern(c.name),  # a few names, each held by thousands of calls
                c.input_hash,
                None if c.outcome < 0 else bool(c.outcome),
                c.output_hash,
                c.file_changing,
            )
            for c in (state.recent_calls() if calls else ())
        ),
        files=tuple(state.files),
        bad_lines=bad_lines,
        limits=state.limits,
        estimated=state.estimated,
        parent=state.parent,
        responses_since_change=state.responses_since_change,
        tokens_since_change=state.tokens_since_change,
        tokens_today=tokens_today,
        cost_today=cost_today,
        host=state.host,
    )


def _series(minutes: MinuteItems, now: float) -> tuple[int, ...]:
    end = int(now // 60)
    by_minute = {m: t for m, t, _ in minutes}
    return tuple(int(by_minute.get(m, 0.0)) for m in range(end - SERIES_MINUTES + 1, end + 1))
