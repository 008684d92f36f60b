"""`tokentop statusline`: Claude Code's status-line command, one compact line per call.

Claude Code runs it with JSON on stdin after each response (and at most every 300 ms). The
fields read: `session_id`, `cwd`, `cost.total_cost_usd`, `context_window.total_input_tokens` /
`total_output_tokens` (the shape of ccusage's fixture apps/ccusage/test/statusline-test.json,
read in ryoppippi/ccusage), and, for Pro and Max subscribers after the session's first
response, `rate_limits.five_hour` / `.seven_day` with `used_percentage` and `resets_at`
(Claude Code's changelog, v2.1.80: "Added `rate_limits` field to statusline scripts ...
(5-hour and 7-day windows with `used_percentage` and `resets_at`)", read in the
gpambrozio/ClaudeDocs mirror; guides quoting the statusline docs give `used_percentage` as
0-100 and `resets_at` as Unix seconds; the docs page itself was not in the searchable copy).
It prints

    tokentop 45.7k tok · $0.06 · $1.20/h · 12% of $0.50 · 5h 42% ↻17:40 · 7d 12% ↻Thu 09:00

(tokens, cost, burn over the last 5 minutes of calls, budget used, then the vendor's own
windows) and records those windows, with when they were heard, where the app reads them
(history/official.py). Budget: the session's own (`b` in the app), else the config's; it is
looked up once and cached until the config file, the store or the cwd changes.

It runs after every response, so it imports only what it needs (the whole process stays
under 100 ms warm); the config is loaded only when the cached budget is stale. Its input is
untrusted: at most MAX_INPUT_BYTES are read, numbers are bounded, and nothing from it is
printed but numbers. It always exits 0 with a line: a failing status line blanks Claude
Code's.
"""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import TextIO

import msgspec

from tokentop.history.official import (
    CachedBudget,
    StatusState,
    Track,
    burn_usd_per_hour,
    forget_old_sessions,
    note_sample,
    read_state,
    write_state,
)
from tokentop.model import MAX_PERCENT, LimitWindow, RateLimits
from tokentop.quantities import compact, usd
from tokentop.sources.base import bounded_ts, parse_iso

MAX_INPUT_BYTES = 1 << 20
MAX_VALUE = 1e15
WINDOWS = (("five_hour", "5h", 300), ("seven_day", "7d", 10080))


class _Window(msgspec.Struct, gc=False):
    used_percentage: float | None = None
    resets_at: float | str | None = None
    """Unix seconds; an ISO time is read too (Anthropic's usage API writes those)."""


class _Limits(msgspec.Struct, gc=False):
    five_hour: _Window | None = None
    seven_day: _Window | None = None


class _Cost(msgspec.Struct, gc=False):
    total_cost_usd: float | None = None


class _Context(msgspec.Struct, gc=False):
    total_input_tokens: float | None = None
    total_output_tokens: float | None = None


class StatusInput(msgspec.Struct, gc=False):
    """The fields of Claude Code's status-line JSON that tokentop reads."""

    session_id: str = ""
    cwd: str = ""
    cost: _Cost | None = None
    context_window: _Context | None = None
    rate_limits: _Limits | None = None


_INPUT = msgspec.json.Decoder(StatusInput)


def bounded(value: float | None, top: float = MAX_VALUE) -> float:
    return min(max(value, 0.0), top) if value is not None and math.isfinite(value) else 0.0


def epoch(value: float | str | None) -> float:
    """A reset time as Unix seconds: 0.0 (unknown) when absent, unparseable or outside what
    a datetime holds, as Codex's windows read it (codex_limits)."""
    if isinstance(value, str):
        return parse_iso(value)
    return bounded_ts(value) if value is not None else 0.0


def official(limits: _Limits | None, now: float) -> RateLimits | None:
    """The windows Claude Code reported, as RateLimits heard `now`; None without any."""
    if limits is None:
        return None
    windows = []
    for field, _, minutes in WINDOWS:
        w: _Window | None = getattr(limits, field)
        if w is not None and w.used_percentage is not None:
            used = bounded(w.used_percentage, MAX_PERCENT)
            windows.append(LimitWindow(field, used, minutes, epoch(w.resets_at)))
    return RateLimits(now, tuple(windows), "claude.ai") if windows else None


def budget_key(config: Path | None, cwd: str) -> str:
    from tokentop.dirs import user_dir

    paths = (config or user_dir("config") / "config.toml", user_dir("data") / "tokentop.db")
    marks = []
    for p in paths:
        try:
            marks.append(str(os.stat(p).st_mtime_ns))
        except OSError:
            marks.append("-")
    return ":".join([*marks, cwd])


def session_budget(inp: StatusInput, track: Track, config: Path | None) -> CachedBudget:
    """The session's budget, from the cache while the config, store and cwd are unchanged."""
    key = budget_key(config, inp.cwd)
    if track.budget is not None and track.budget.key == key:
        return track.budget
    from tokentop.config import ConfigError, load_config
    from tokentop.history.session_budgets import read_budgets

    try:
        settings = msgspec.structs.replace(load_config(config), session_budgets=read_budgets())
    except ConfigError:
        return CachedBudget(key)
    budget = settings.budget_for("claude", inp.cwd, inp.session_id)
    track.budget = CachedBudget(key, budget.usd, budget.tokens)
    return track.budget


def budget_text(budget: CachedBudget, cost: float, tokens: float) -> str:
    if budget.usd:
        return f"{cost / budget.usd * 100:.0f}% of {usd(budget.usd)}"
    if budget.tokens:
        return f"{tokens / budget.tokens * 100:.0f}% of {compact(budget.tokens)} tok"
    return ""


def window_text(limits: RateLimits | None, now: float) -> list[str]:
    parts = []
    for w in limits.windows if limits is not None else ():
        name = next(short for field, short, _ in WINDOWS if field == w.name)
        text = f"{name} {w.used_pct:.0f}%"
        if w.resets_at > now:
            fmt = "%H:%M" if w.resets_at - now < 86400 else "%a %H:%M"
            text += f" ↻{time.strftime(fmt, time.localtime(w.resets_at))}"
        parts.append(text)
    return parts


def status_line(inp: StatusInput, state: StatusState, now: float, config: Path | None) -> str:
    """Update `state` with this call and return the line to print."""
    cost = bounded(inp.cost.total_cost_usd if inp.cost else None)
    ctx = inp.context_window
    tokens = bounded(ctx.total_input_tokens) + bounded(ctx.total_output_tokens) if ctx else 0.0
    heard = official(inp.rate_limits, now)
    if heard is not None:
        state.claude, state.claude_session = heard, inp.session_id[:200]
    track = state.sessions.setdefault(inp.session_id[:200], Track())
    note_sample(track, now, cost)
    forget_old_sessions(state)
    burn = burn_usd_per_hour(track, now)
    parts = [f"tokentop {compact(tokens)} tok", usd(cost)]
    parts.append(f"{usd(burn)}/h" if burn is not None else "-/h")
    spent = budget_text(session_budget(inp, track, config), cost, tokens)
    parts += [spent] if spent else []
    return " · ".join(parts + window_text(heard, now))


def handle(raw: bytes, out: TextIO, now: float, config: Path | None = None) -> int:
    if len(raw) > MAX_INPUT_BYTES:
        out.write("tokentop: status input too large\n")
        return 0
    try:
        inp = _INPUT.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        out.write("tokentop: unreadable status input\n")
        return 0
    state = read_state()
    line = status_line(inp, state, now, config)
    try:
        write_state(state)
    except OSError:
        line += " · (not recorded)"
    out.write(line + "\n")
    return 0


def cmd_statusline(config: Path | None = None) -> int:
    raw = sys.stdin.buffer.read(MAX_INPUT_BYTES + 1)
    try:
        return handle(raw, sys.stdout, time.time(), config)
    except Exception as error:  # never a traceback, never a blank status line
        sys.stdout.write(f"tokentop: {type(error).__name__}\n")
        return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m tokentop.commands.statusline [--config FILE]`: the installed command."""
    args = sys.argv[1:] if argv is None else argv
    config = Path(args[1]) if args[:1] == ["--config"] and len(args) > 1 else None
    return cmd_statusline(config)


if __name__ == "__main__":
    sys.exit(main())
