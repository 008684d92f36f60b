"""Per-session counters built from events: dedupe, totals by kind and model, burn windows.

The ledger never sees JSON. Each event carries a `dedupe_key` chosen by its source; the
ledger counts a key once, globally, at the largest total seen for it, and when a bigger
copy arrives it adds only the difference (Claude Code streams growing usage on several
lines of one response).
"""

from __future__ import annotations

import math
from typing import Any
from array import array
from collections.abc import Callable, Iterable, Mapping

import msgspec

from tokentop.model import (
    Event,
    FileHealth,
    LedgerSnapshot,
    ModelUsage,
    RecentTool,
    SessionInfo,
    SessionKey,
    SessionSnapshot,
    TokenCounts,
    ToolCall,
    ToolResult,
    ToolStat,
    UsageEvent,
)

CostFn = Callable[[str, TokenCounts], "float | None"]
KINDS = 6
"""Fields of TokenCounts, stored flat in arrays to keep hundreds of thousands of keys small."""
RECENT_TOOLS = 30
LINEAR_PRICE_LIMIT = 100_000
"""Below this much input context no price table has a long-context tier, so a response's
cost is a dot product of per-kind rates probed once per model (the cold-scan hot path)."""
_MISSING: Any = object()
SERIES_MINUTES = 30


class ModelAcc(msgspec.Struct, array_like=True, gc=False):
    tokens: list[int]
    cost: float = 0.0
    unpriced: bool = False
    responses: int = 0


class ToolAcc(msgspec.Struct, array_like=True, gc=False):
    calls: int = 0
    errors: int = 0


class SessionState(msgspec.Struct):
    """Mutable accumulator for one session; persisted as-is by the cache."""

    agent: str
    session_id: str
    cwd: str = ""
    branch: str = ""
    parent: str = ""
    first_ts: float = 0.0
    last_ts: float = 0.0
    by_model: dict[str, ModelAcc] = msgspec.field(default_factory=dict)
    minutes: dict[int, list[float]] = msgspec.field(default_factory=dict)
    """Minute index -> [tokens, cost]; the burn rate and chart read it."""
    timeline: list[tuple[float, str]] = msgspec.field(default_factory=list)
    tools: dict[str, ToolAcc] = msgspec.field(default_factory=dict)
    recent: list[tuple[float, str, str, int, str]] = msgspec.field(default_factory=list)
    """(timestamp, tool name, input hash, result: -1 pending / 0 ok / 1 error, call id)."""
    files: list[str] = msgspec.field(default_factory=list)
    estimated: bool = False

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.agent, self.session_id)

    def touch(self, ts: float) -> None:
        if ts <= 0:
            return
        if not self.first_ts or ts < self.first_ts:
            self.first_ts = ts
        self.last_ts = max(self.last_ts, ts)

    def note_model(self, ts: float, model: str) -> None:
        """Record a model change; out-of-order events insert at their place in time."""
        if not model:
            return
        timeline = self.timeline
        if timeline and timeline[-1][0] <= ts:
            if timeline[-1][1] != model:
                timeline.append((ts, model))
            return
        idx = sum(1 for t, _ in timeline if t <= ts)
        if idx and timeline[idx - 1][1] == model:
            return
        timeline.insert(idx, (ts, model))


class LedgerState(msgspec.Struct):
    """Everything needed to resume counting without re-reading files (see cache.py)."""

    sessions: dict[str, SessionState] = msgspec.field(default_factory=dict)
    seen: dict[str, int] = msgspec.field(default_factory=dict)
    """dedupe_key -> slot in the flat arrays below."""
    seen_tokens: bytes = b""
    seen_session: list[str] = msgspec.field(default_factory=list)
    seen_model: list[str] = msgspec.field(default_factory=list)
    seen_cost: bytes = b""
    tool_calls: dict[str, str] = msgspec.field(default_factory=dict)
    """call id -> session; the same call copied into a resumed file counts once."""
    tool_results: dict[str, int] = msgspec.field(default_factory=dict)


class Ledger:
    """Applies events; produces immutable snapshots. Not thread-safe: the engine serialises."""

    def __init__(self, cost_fn: CostFn, window_s: float = 300.0) -> None:
        self.cost_fn = cost_fn
        self.window_s = window_s
        self.version = 0
        self._load(LedgerState())

    def _load(self, state: LedgerState) -> None:
        self.state = state
        self._tokens = array("q", state.seen_tokens)
        self._cost = array("d", state.seen_cost)
        self._cache: dict[str, tuple[int, SessionSnapshot]] = {}
        """Snapshots of quiet sessions (rates already zero), reused until the session changes."""
        self._dirty: set[str] = set(state.sessions)
        self._rates: dict[str, tuple[float, ...] | None] = {}
        self._last_key: SessionKey | None = None
        self._last_path = ""
        self._last_session = SessionState("", "")

    def export(self) -> LedgerState:
        """The state to persist; arrays are flattened to bytes for a compact file."""
        self.state.seen_tokens = self._tokens.tobytes()
        self.state.seen_cost = self._cost.tobytes()
        return self.state

    @classmethod
    def restore(cls, state: LedgerState, cost_fn: CostFn, window_s: float = 300.0) -> Ledger:
        ledger = cls(cost_fn, window_s)
        ledger._load(state)
        return ledger

    # -- applying events -------------------------------------------------------------------

    def apply(self, events: Iterable[Event], path: str = "") -> int:
        """Apply events read from `path`; returns how many changed a counter."""
        changed = 0
        for event in events:
            if isinstance(event, UsageEvent):
                changed += self._usage(event, path)
            elif isinstance(event, ToolCall):
                changed += self._tool_call(event)
            elif isinstance(event, ToolResult):
                changed += self._tool_result(event)
            elif isinstance(event, SessionInfo):
                changed += self._info(event, path)
        if changed:
            self.version += 1
        return changed

    def _session(self, key: SessionKey, path: str = "") -> SessionState:
        # Consecutive events nearly always share a session and file: skip the lookups then.
        if key is self._last_key and path == self._last_path:
            return self._last_session
        sid = str(key)
        state = self.state.sessions.get(sid)
        if state is None:
            state = SessionState(key.agent, key.session_id)
            self.state.sessions[sid] = state
        if path and path not in state.files:
            state.files.append(path)
        self._dirty.add(sid)
        self._last_key, self._last_path, self._last_session = key, path, state
        return state

    def _info(self, event: SessionInfo, path: str) -> int:
        session = self._session(event.session, path)
        session.cwd = session.cwd or event.cwd
        session.branch = event.branch or session.branch
        session.parent = session.parent or event.parent
        session.touch(event.timestamp)
        session.note_model(event.timestamp, event.model)
        return 1

    def _usage(self, event: UsageEvent, path: str) -> int:
        slot = self.state.seen.get(event.dedupe_key)
        if slot is None:
            return self._add_new(event, path)
        counts = _counts(event.tokens)
        base = slot * KINDS
        old = self._tokens[base : base + KINDS]
        if sum(counts) <= sum(old):
            return 0
        sid = self.state.seen_session[slot]
        model = self.state.seen_model[slot]
        cost = self._event_cost(event, model)
        old_cost = self._cost[slot]
        self._tokens[base : base + KINDS] = array("q", counts)
        self._cost[slot] = math.nan if cost is None else cost
        delta = TokenCounts(*(n - o for n, o in zip(counts, old, strict=True)))
        cost_delta = None if cost is None or math.isnan(old_cost) else cost - old_cost
        session = self.state.sessions[sid]
        self._dirty.add(sid)
        if path and path not in session.files:
            session.files.append(path)
        self._accumulate(session, model, event.timestamp, delta, cost_delta, responses=0)
        return 1

    def _add_new(self, event: UsageEvent, path: str) -> int:
        t = event.tokens
        total = t.total
        if not total:
            return 0
        session = self._session(event.session, path)
        if event.cwd and not session.cwd:
            session.cwd = event.cwd
        if event.branch:
            session.branch = event.branch
        if event.estimated:
            session.estimated = True
        cost = self._event_cost(event, event.model)
        state = self.state
        state.seen[event.dedupe_key] = len(state.seen_session)
        state.seen_session.append(str(event.session))
        state.seen_model.append(event.model)
        self._tokens.extend(
            (t.input, t.output, t.cache_read, t.cache_write_5m, t.cache_write_1h, t.reasoning)
        )
        self._cost.append(math.nan if cost is None else cost)
        timeline = session.timeline
        if not timeline or timeline[-1][1] != event.model:
            session.note_model(event.timestamp, event.model)
        self._accumulate(session, event.model, event.timestamp, t, cost, responses=1)
        return 1

    def _event_cost(self, event: UsageEvent, model: str) -> float | None:
        if event.cost_usd is not None:
            return event.cost_usd
        t = event.tokens
        if t.input + t.cache_read + t.cache_write_5m + t.cache_write_1h > LINEAR_PRICE_LIMIT:
            return self.cost_fn(model, t)
        rates = self._rates.get(model, _MISSING)
        if rates is _MISSING:
            rates = self._rates[model] = _unit_rates(self.cost_fn, model)
        if rates is None:
            return None
        return (
            t.input * rates[0]
            + t.output * rates[1]
            + t.cache_read * rates[2]
            + t.cache_write_5m * rates[3]
            + t.cache_write_1h * rates[4]
            + t.reasoning * rates[5]
        )

    def _accumulate(
        self,
        session: SessionState,
        model: str,
        ts: float,
        d: TokenCounts,
        cost: float | None,
        responses: int,
    ) -> None:
        acc = session.by_model.get(model)
        if acc is None:
            acc = session.by_model[model] = ModelAcc([0] * KINDS)
        tk = acc.tokens
        tk[0] += d.input
        tk[1] += d.output
        tk[2] += d.cache_read
        tk[3] += d.cache_write_5m
        tk[4] += d.cache_write_1h
        tk[5] += d.reasoning
        acc.responses += responses
        if cost is None:
            acc.unpriced = True
        else:
            acc.cost += cost
        if ts > session.last_ts:
            session.last_ts = ts
        if ts and (ts < session.first_ts or not session.first_ts):
            session.first_ts = ts
        minute = int(ts // 60)
        bucket = session.minutes.get(minute)
        if bucket is None:
            bucket = session.minutes[minute] = [0.0, 0.0]
        bucket[0] += d.total
        bucket[1] += cost or 0.0

    def _tool_call(self, event: ToolCall) -> int:
        calls = self.state.tool_calls
        if event.call_id in calls:
            return 0
        sid = str(event.session)
        calls[event.call_id] = sid
        session = self._session(event.session)
        session.tools.setdefault(event.name, ToolAcc()).calls += 1
        session.touch(event.timestamp)
        recent = session.recent
        recent.append((event.timestamp, event.name, event.input_hash, -1, event.call_id))
        if len(recent) > RECENT_TOOLS:
            del recent[0]
        return 1

    def _tool_result(self, event: ToolResult) -> int:
        results = self.state.tool_results
        if event.call_id in results:
            return 0
        results[event.call_id] = int(event.is_error)
        session = self._session(event.session)
        outcome = int(event.is_error)
        name = ""
        for i, item in enumerate(session.recent):
            if item[4] == event.call_id:
                session.recent[i] = (item[0], item[1], item[2], outcome, item[4])
                name = item[1]
        if event.is_error:
            session.tools.setdefault(name or "?", ToolAcc()).errors += 1
        return 1

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(
        self, now: float, files: Mapping[str, FileHealth] | None = None
    ) -> LedgerSnapshot:
        """Build an immutable view; unchanged idle sessions reuse their cached snapshot."""
        files = files or {}
        sessions = tuple(self._session_snapshot(sid, now, files) for sid in self.state.sessions)
        self._dirty.clear()
        self._last_key = None
        health = tuple(files.values())
        return LedgerSnapshot(
            taken_at=now,
            sessions=sessions,
            files=health,
            bad_lines=sum(f.bad_lines for f in health),
            version=self.version,
        )

    def _session_snapshot(
        self, sid: str, now: float, files: Mapping[str, FileHealth]
    ) -> SessionSnapshot:
        state = self.state.sessions[sid]
        bad = sum(files[f].bad_lines for f in state.files if f in files)
        quiet = state.last_ts < now - max(self.window_s, SERIES_MINUTES * 60) - 60
        cached = self._cache.get(sid)
        if cached and quiet and sid not in self._dirty and cached[0] == bad:
            return cached[1]
        snap = build_session_snapshot(state, now, self.window_s, bad)
        if quiet:
            self._cache[sid] = (bad, snap)
        else:
            self._cache.pop(sid, None)
        return snap

    def session_ids(self) -> list[str]:
        return list(self.state.sessions)


def _unit_rates(cost_fn: CostFn, model: str) -> tuple[float, ...] | None:
    """Per-token price of each kind, probed from the cost function; None when unpriced."""
    rates = []
    for i in range(KINDS):
        unit = [0] * KINDS
        unit[i] = 1
        rate = cost_fn(model, TokenCounts(*unit))
        if rate is None:
            return None
        rates.append(rate)
    return tuple(rates)


def _counts(tokens: TokenCounts) -> list[int]:
    return [
        tokens.input,
        tokens.output,
        tokens.cache_read,
        tokens.cache_write_5m,
        tokens.cache_write_1h,
        tokens.reasoning,
    ]


def build_session_snapshot(
    state: SessionState, now: float, window_s: float, bad_lines: int
) -> SessionSnapshot:
    """Freeze one session's counters, with burn rates evaluated at `now`."""
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
    tokens_rate, usd_rate = _rates(state.minutes, now, window_s)
    return SessionSnapshot(
        key=state.key,
        cwd=state.cwd,
        branch=state.branch,
        first_ts=state.first_ts,
        last_ts=state.last_ts,
        tokens=TokenCounts(*total),
        cost_usd=sum(acc.cost for acc in state.by_model.values()),
        unpriced_models=tuple(m for m, acc in state.by_model.items() if acc.unpriced),
        models=models,
        model_timeline=tuple(state.timeline),
        responses=sum(acc.responses for acc in state.by_model.values()),
        tokens_per_min=tokens_rate,
        usd_per_hour=usd_rate,
        burn_series=_series(state.minutes, now),
        tool_calls=sum(t.calls for t in state.tools.values()),
        tool_errors=sum(t.errors for t in state.tools.values()),
        tools=tuple(
            ToolStat(name, acc.calls, acc.errors)
            for name, acc in sorted(state.tools.items(), key=lambda kv: -kv[1].calls)
        ),
        recent_tools=tuple(
            RecentTool(ts, name, h, None if outcome < 0 else bool(outcome))
            for ts, name, h, outcome, _ in state.recent
        ),
        files=tuple(state.files),
        bad_lines=bad_lines,
        estimated=state.estimated,
        parent=state.parent,
    )


def _rates(minutes: dict[int, list[float]], now: float, window_s: float) -> tuple[float, float]:
    """Tokens/min and $/h over the trailing window; an idle session decays to zero."""
    start = int((now - window_s) // 60)
    end = int(now // 60)
    tokens = cost = 0.0
    for minute in range(start + 1, end + 1):
        bucket = minutes.get(minute)
        if bucket:
            tokens += bucket[0]
            cost += bucket[1]
    span_min = window_s / 60.0
    return tokens / span_min, cost * 60.0 / span_min


def _series(minutes: dict[int, list[float]], now: float) -> tuple[int, ...]:
    end = int(now // 60)
    return tuple(int(minutes.get(m, (0.0, 0.0))[0]) for m in range(end - SERIES_MINUTES + 1, end + 1))
