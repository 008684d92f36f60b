"""Codex's own usage windows: the `rate_limits` object of a `token_count` event.

`{primary, secondary: {used_percent, window_minutes, resets_at (Unix seconds; older builds:
resets_in_seconds, counted from the event's time)}, plan_type}` (formats.md §2; read in
openai/codex `protocol/src/protocol.rs` RateLimitSnapshot / RateLimitWindow). Untrusted: a
share is capped at MAX_PERCENT and a reset time must be one a datetime can hold.
"""

from __future__ import annotations

import math

import msgspec

from tokentop.model import MAX_PERCENT, LimitWindow, RateLimits
from tokentop.sources.base import Count, bounded_ts

MAX_PLAN = 40


class _Window(msgspec.Struct, gc=False):
    used_percent: float = 0.0
    window_minutes: Count = 0
    resets_at: float | None = None
    resets_in_seconds: float | None = None


class _Limits(msgspec.Struct, gc=False):
    primary: _Window | None = None
    secondary: _Window | None = None
    plan_type: str | None = None


_LIMITS = msgspec.json.Decoder(_Limits | None)


def rate_limits(raw: bytes | msgspec.Raw, ts: float) -> RateLimits | None:
    """The windows heard at `ts` (None for `null` or no window); raises msgspec's decode
    errors for an object that does not fit (the caller counts the line as bad)."""
    limits = _LIMITS.decode(raw)
    if limits is None:
        return None
    named = (("primary", limits.primary), ("secondary", limits.secondary))
    windows = tuple(window(name, w, ts) for name, w in named if w is not None)
    return RateLimits(ts, windows, (limits.plan_type or "")[:MAX_PLAN]) if windows else None


def window(name: str, w: _Window, ts: float) -> LimitWindow:
    """One window, bounded."""
    used = min(max(w.used_percent, 0.0), MAX_PERCENT) if math.isfinite(w.used_percent) else 0.0
    if w.resets_at is not None:
        resets = bounded_ts(w.resets_at)
    elif w.resets_in_seconds is not None and ts:
        resets = bounded_ts(ts + w.resets_in_seconds)
    else:
        resets = 0.0
    return LimitWindow(name, used, w.window_minutes, resets)
