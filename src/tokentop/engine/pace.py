"""A session's current pace: burn from its recent responses' own timestamps, not minute buckets.

The rule (the README states it in one sentence):

- Each session keeps its last `KEEP` responses of the last `WINDOW_S` (time, tokens, cost).
- Its **typical gap** is the time-weighted mean of the gaps between those responses
  (sum of g² / sum of g): the gap a random moment falls in. A burst of replies two seconds
  apart followed by a 60 s tool wait has a typical gap near 50 s, not 2 s, so the wait does
  not read as a stop.
- The session has **stopped** once silent for longer than `max(QUIET_FLOOR_S, QUIET_GAPS ×
  typical gap)`, at most `WINDOW_S`: burn is then zero. That is well within the bound we
  promise, `max(30 s, 4 × typical gap)`.
- Otherwise burn is the tokens of the current stretch (responses with no stop between them,
  within the window) after its first response, divided by the time from that first response
  to the later of the last response and now minus one typical gap, and by at least
  `MIN_SPAN_S`. For a steady writer this is its exact pace at every moment until its next
  response is due; afterwards it decays, then drops to zero at the stop.
- A stretch needs two responses: the first only marks where its time starts.
- The ETA to a budget is what is left of it at the pace as of the newest response, counted
  down from that response: exact for a steady writer, and steady (never rising) while a
  stopped agent's burn decays to its stop.

Timestamps are the responses' own; the ledger passes arrival time for events without one.
"""

from __future__ import annotations

import struct
from bisect import bisect_right
from itertools import pairwise
from typing import NamedTuple

WINDOW_S = 300.0
"""Responses older than this before the newest one are dropped: burn is the current pace."""
KEEP = 64
"""Responses kept per session (24 bytes each); a fast writer's window is its last 64."""
MIN_SPAN_S = 5.0
"""A pace is measured over at least this long, so two replies 0.1 s apart are no spike."""
SLACK = 16
"""Appends past KEEP before the oldest are cut, so the hot path rarely moves bytes."""
QUIET_FLOOR_S = 30.0
"""A session silent this long has stopped, however fast it was."""
QUIET_GAPS = 2.0
"""…or, for a slower one, silent for this many typical gaps."""

_ENTRY = struct.Struct("<ddd")
_SIZE = _ENTRY.size


class Pace(NamedTuple):
    """Burn at one instant, and what it was measured from."""

    tokens_per_min: float
    usd_per_hour: float
    typical_gap_s: float
    stops_after_s: float
    """Silence after which this session counts as stopped (its burn drops to zero)."""
    age_s: float = 0.0
    """Time since the newest response: an ETA counts down from it."""
    held_tokens_per_min: float = 0.0
    """The pace as of the newest response (what burn reads until a typical gap passes): an
    ETA is the budget left at this pace, less `age_s`, so it counts down steadily, exact for
    a steady writer, and never rises while a stopped agent's burn decays."""
    held_usd_per_hour: float = 0.0


STOPPED = Pace(0.0, 0.0, 0.0, QUIET_FLOOR_S)


def entries(pace: bytes | bytearray) -> list[tuple[float, float, float]]:
    """(time, tokens, cost) per kept response, oldest first."""
    return list(_ENTRY.iter_unpack(bytes(pace)))


def add(pace: bytearray, ts: float, tokens: float, cost: float, *, grown: bool = False) -> None:
    """Record a response at `ts`; `grown` adds a later copy's extra tokens to the response
    it grew (the latest at or before `ts`) instead of counting a new reply.

    The cold scan calls this for every response, so the usual case (the newest response,
    or the newest one growing) touches only the end of the buffer.
    """
    n = len(pace) // _SIZE
    last_ts = _ENTRY.unpack_from(pace, (n - 1) * _SIZE)[0] if n else None
    if last_ts is None or ts >= last_ts:
        if grown and last_ts is not None:
            _grow_at(pace, n - 1, tokens, cost)
            return
        pace += _ENTRY.pack(ts, tokens, cost)
        if n + 1 > KEEP + SLACK:
            del pace[: (n + 1 - KEEP) * _SIZE]
        return
    times = [e[0] for e in _ENTRY.iter_unpack(bytes(pace))]
    at = bisect_right(times, ts)
    if grown and at:
        _grow_at(pace, at - 1, tokens, cost)
    elif at or n < KEEP:  # older than every kept reply: it matters only while few are kept
        pace[at * _SIZE : at * _SIZE] = _ENTRY.pack(ts, tokens, cost)
        if n + 1 > KEEP + SLACK:
            del pace[: (n + 1 - KEEP) * _SIZE]


def add_run(pace: bytearray, run: list[tuple[float, float, float]]) -> None:
    """`add` of each (time, tokens, cost) of `run` in turn. When they come in time order,
    at or after the newest kept, only the ones that would stay are packed: the buffer's
    length follows `add`'s cuts (to KEEP, past KEEP + SLACK), so the bytes are the same."""
    n = len(pace) // _SIZE
    ordered = n <= KEEP + SLACK and all(a[0] <= b[0] for a, b in pairwise(run))
    if not run or not ordered or (n and run[0][0] < _ENTRY.unpack_from(pace, (n - 1) * _SIZE)[0]):
        for ts, tokens, cost in run:
            add(pace, ts, tokens, cost)
        return
    total = n + len(run)
    kept = total if total <= KEEP + SLACK else KEEP + (total - KEEP - SLACK - 1) % (SLACK + 1)
    new = b"".join([_ENTRY.pack(*entry) for entry in run[-kept:]])
    old = max(0, kept - len(run))
    pace[:] = (pace[len(pace) - old * _SIZE :] if old else b"") + new


def _grow_at(pace: bytearray, index: int, tokens: float, cost: float) -> None:
    ts, old_tokens, old_cost = _ENTRY.unpack_from(pace, index * _SIZE)
    _ENTRY.pack_into(pace, index * _SIZE, ts, old_tokens + tokens, old_cost + cost)


def newest(pace: bytes | bytearray) -> float:
    """The time of the newest kept response; 0 when none is kept."""
    return _ENTRY.unpack_from(pace, len(pace) - _SIZE)[0] if len(pace) >= _SIZE else 0.0


def newest_only(pace: bytearray, quiet_before: float) -> bytearray | None:
    """The newest entry alone, when there are older ones and it is before `quiet_before`
    (no later burn reads the others: see the ledger's callers); else None."""
    if len(pace) > _SIZE and newest(pace) < quiet_before:
        return pace[-_SIZE:]
    return None


def recent(pace: bytes | bytearray) -> list[tuple[float, float, float]]:
    """The responses the rule reads: the last KEEP, within WINDOW_S of the newest."""
    kept = entries(pace)[-KEEP:]
    if not kept:
        return kept
    oldest = kept[-1][0] - WINDOW_S
    return [e for e in kept if e[0] >= oldest]


def merged(a: bytes | bytearray, b: bytes | bytearray) -> bytearray:
    """Two partial views of one session's recent responses (a parallel scan), as one."""
    both = sorted(entries(a) + entries(b))[-KEEP:]
    return bytearray(b"".join(_ENTRY.pack(*e) for e in both))


def typical_gap(times: list[float]) -> float:
    """The time-weighted mean gap between responses (0 with fewer than two)."""
    gaps = [b - a for a, b in pairwise(times)]
    total = sum(gaps)
    return sum(g * g for g in gaps) / total if total > 0 else 0.0


def pace_at(pace: bytes | bytearray, now: float) -> Pace:
    """Burn at `now` by the rule in this module's docstring."""
    kept = recent(pace)
    if not kept:
        return STOPPED
    times = [e[0] for e in kept]
    gap = typical_gap(times)
    stops_after = min(WINDOW_S, max(QUIET_FLOOR_S, QUIET_GAPS * gap))
    last = times[-1]
    if now - last > stops_after:
        return Pace(0.0, 0.0, gap, stops_after)
    first = len(times) - 1
    while first > 0 and times[first] - times[first - 1] <= stops_after:
        first -= 1
    tokens, usd = _rates(kept[first:], max(last, now - gap), now)
    held = _rates(kept[first:], last, last)
    return Pace(tokens, usd, gap, stops_after, max(now - last, 0.0), *held)


def _rates(
    stretch: list[tuple[float, float, float]], end: float, now: float
) -> tuple[float, float]:
    """Tokens/min and $/h of a stretch's responses after its first, within the window
    before `now`, over the time from its start to `end` (at least MIN_SPAN_S)."""
    start = max(stretch[0][0], now - WINDOW_S)
    tokens = cost = 0.0
    for ts, t, c in stretch:
        if ts > start:
            tokens += t
            cost += c
    span = max(MIN_SPAN_S, end - start)
    return tokens * 60.0 / span, cost * 3600.0 / span
