"""Per-session counters built from events: dedupe, totals by kind and model, burn windows.

The ledger never sees JSON. Each event carries a `dedupe_key` chosen by its source; the
ledger counts a key once, globally, at the largest total seen for it, and when a bigger
copy arrives it adds only the difference (Claude Code streams growing usage on several
lines of one response).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec

from tokentop.engine import dedupe_index
from tokentop.engine.dedupe_index import DedupeIndex, Delta
from tokentop.engine.dedupe_tables import SEAL_KEYS, DedupeTables
from tokentop.engine.key_table import RELEASE_MIN_KEYS, release_freed
from tokentop.engine.ledger_runs import MAX_TS, RunCounting
from tokentop.engine.ledger_state import (
    KINDS,
    SEP,
    LedgerState,
    ModelAcc,
    PackedDedupe,
    RecentCall,
    SessionState,
    ToolAcc,
    call_mark,
    parse_mark,
)
from tokentop.engine.pace import WINDOW_S as PACE_WINDOW_S
from tokentop.engine.pace import add as add_pace
from tokentop.engine.pace import newest_only
from tokentop.engine.rates import CostFn as CostFn  # the type callers import from here
from tokentop.engine.rates import RateCards
from tokentop.engine.snapshots import SnapshotCache
from tokentop.model import (
    RECENT_TOOLS,
    Event,
    EventRun,
    FileHealth,
    LedgerSnapshot,
    LimitsSeen,
    SessionInfo,
    SessionKey,
    TokenCounts,
    ToolCall,
    ToolResult,
    UsageEvent,
)
from tokentop.sources.base import name_text


class Ledger(RunCounting):
    """Applies events; produces immutable snapshots. Not thread-safe: the engine serialises."""

    def __init__(self, cost_fn: CostFn) -> None:
        self.cost_fn = cost_fn
        self.version = 0
        self._load(LedgerState())

    def _load(
        self, state: LedgerState, base: DedupeIndex | None = None, delta: Delta | None = None
    ) -> None:
        self.state = state
        self._tables = DedupeTables(state, base, delta)
        self._first_fresh = self._tables.first_fresh
        """The first fresh slot while events are applied (set by `apply`)."""
        """Every key and call counted: the cache's index (`base`), what was sealed since, and
        what is counted now as strings in `state` (see dedupe_tables.py)."""
        self._estimated = set(state.estimated_slots)
        self._snapshots = SnapshotCache(state.sessions)
        self._dirty = self._snapshots.dirty
        """Sessions whose counters changed since the last snapshot (the cache's own set)."""
        self._rates = RateCards(self.cost_fn)
        self._forgotten = False
        self._last_key: SessionKey | None = None
        self._last_path = ""
        self._last_session = SessionState("", "")
        self._last_sid = -1
        """The index of `_last_key`'s session among the tables' names."""
        self._last_model: str | None = None
        self._last_model_at = -1
        self._arrival = 0.0

    def export(self, *, final: bool = False) -> LedgerState:
        """The state to persist: the sessions, and the dedupe tables packed into one blob
        (hashed). A ledger resumed from a cache's index exports only what was added since
        (see `save_index`). `final`: this ledger is not used afterwards (its tables may be
        handed over rather than copied)."""
        blob = self._tables.export()
        if final:
            self._tables.forget()
            self._forgotten = True
            for session in self.state.sessions.values():
                session.freeze_recent()
        sessions = dict(self.state.sessions)
        return LedgerState(sessions=sessions, packed=blob, estimated_slots=sorted(self._estimated))

    def forget_dedupe(self) -> None:
        """Free the dedupe tables of a ledger that will count nothing more (a one-shot
        command, once its scan is saved): the snapshot and output reuse their memory
        instead of adding to the peak. Applying events afterwards raises."""
        tables = self._tables
        sealed = sum(len(t) for t in (tables.keys, tables.call_table) if t is not None)
        tables.forget()
        self._forgotten = True
        if sealed >= RELEASE_MIN_KEYS:  # else not worth ctypes' import (a restart's case)
            release_freed()

    def cache_state(self, now: float) -> LedgerState:
        """The sessions, for the cache's main file; the dedupe tables go to `save_index`.

        A session quiet for longer than the pace window keeps only its newest response's
        pace entry (its time is the snapshot's `last_response_ts`): the others can never be
        read again, since a later response starts a stretch of its own (pace.recent), and
        they were a quarter of a large history's cache. Its recent calls are kept encoded
        from now on; a live session's are encoded in the copy saved only."""
        sessions = dict(self.state.sessions)
        quiet_before = now - PACE_WINDOW_S
        for sid, session in sessions.items():
            if session.last_ts < quiet_before:
                session.freeze_recent()
            saved = session.frozen_copy()  # itself when frozen above
            kept = newest_only(session.pace, quiet_before)
            sessions[sid] = saved if kept is None else msgspec.structs.replace(saved, pace=kept)
        return LedgerState(sessions=sessions, estimated_slots=sorted(self._estimated))

    def save_index(self, path: Path, delta_path: Path, save_id: str) -> tuple[str, str]:
        """Write the dedupe tables; returns the ids the index and its delta carry (see
        DedupeTables.save)."""
        ids = self._tables.save(path, delta_path, save_id)
        self._forget_last()
        return ids

    @classmethod
    def restore(
        cls,
        state: LedgerState,
        cost_fn: CostFn,
        base: DedupeIndex | None = None,
        delta: Delta | None = None,
    ) -> Ledger:
        """A ledger resuming from `state`, with the dedupe tables of a cache's index (`base`)
        and its `delta`, or, packed, in `state.packed` (an export)."""
        ledger = cls(cost_fn)
        ledger._load(state, base, delta)
        return ledger

    def merge(self, other: LedgerState | Ledger, now: float | None = None) -> bool:
        """Fold in a ledger built from other files (exported by another process, or here);
        False (nothing changed) if any dedupe key, tool call or result is in both, because
        then only a sequential pass is exact.

        The other side's tables come hashed and are merged by hash (key_table.py): a cold
        scan's parent never holds the keys of the history it reads as strings. With `now`,
        a session quiet since before two pace windows keeps only its newest pace entry (see
        `_quiet_pace`).
        """
        if isinstance(other, Ledger):
            packed = other._tables.packed_tables()
            sessions, estimated = other.state.sessions, sorted(other._estimated)
        else:
            packed = (
                msgspec.msgpack.decode(other.packed, type=PackedDedupe)
                if other.packed
                else PackedDedupe()
            )
            other.packed = b""  # read: free it before the tables grow
            sessions, estimated = other.sessions, other.estimated_slots
        tables = self._tables
        tables.seal()
        first = tables.first_fresh
        if not tables.merge(packed):
            return False
        self._estimated.update(slot + first for slot in estimated)
        mine_all = self.state.sessions
        for sid, session in sessions.items():
            mine = mine_all.get(sid)
            if mine is None:
                session.freeze_recent()  # nothing adds to it while the scan reads other files
                if now is not None:
                    _quiet_pace(session, now)
                mine_all[sid] = session
            else:
                mine.absorb(session)
            self._dirty.add(sid)
        self._forget_last()
        self.version += 1
        return True

    def _forget_last(self) -> None:
        """The session and model last used are looked up again (tables renamed)."""
        self._last_key, self._last_model = None, None

    # -- applying events -------------------------------------------------------------------

    def apply(
        self, events: Iterable[Event | EventRun], path: str = "", arrival: float = 0.0
    ) -> int:
        """Apply events read from `path`; returns how many changed a counter. `arrival` (the
        clock's now, while following files live) stands in for a missing timestamp in the
        burn rate; history read at start-up passes none."""
        if self._forgotten:
            raise RuntimeError("this ledger's dedupe tables were freed: it counts nothing more")
        self._arrival = arrival
        tables = self._tables
        self._first_fresh = tables.first_fresh
        changed = self._apply(events, path)
        if changed:
            self.version += 1
        if len(tables.seen) + len(tables.calls) > SEAL_KEYS:
            tables.seal()
        return changed

    def _apply(self, events: Iterable[Event | EventRun], path: str) -> int:
        """The dispatch loop (hot: one iteration an event)."""
        changed = 0
        add, grow, call, result = self._add_new, self._grow, self._tool_call, self._tool_result
        tables = self._tables
        seen, old = tables.seen, tables.old
        for event in events:
            kind = type(event)
            if kind is UsageEvent:
                slot = seen.get(event.dedupe_key)  # type: ignore[union-attr]
                if slot is None and old:
                    slot = tables.find_old(event.dedupe_key)  # type: ignore[union-attr]
                if slot is None:
                    changed += add(event, path)  # type: ignore[arg-type]
                else:
                    changed += grow(slot, event, path)  # type: ignore[arg-type]
            elif kind is EventRun:
                counted = self._count_run(event, path)  # type: ignore[arg-type]
                if counted is None:
                    counted = self._apply(event.events(), path)  # type: ignore[union-attr]
                changed += counted
            elif kind is ToolCall:
                changed += call(event, path)  # type: ignore[arg-type]
            elif kind is ToolResult:
                changed += result(event, path)  # type: ignore[arg-type]
            elif kind is SessionInfo:
                changed += self._info(event, path)  # type: ignore[arg-type]
            elif kind is LimitsSeen:
                changed += self._limits(event, path)  # type: ignore[arg-type]
        return changed

    def _session(self, key: SessionKey, path: str = "") -> SessionState:
        # Consecutive events nearly always share a session and file: skip the lookups then.
        if key is self._last_key and path == self._last_path:
            return self._last_session
        sid = sys.intern(str(key))
        state = self.state.sessions.get(sid)
        if state is None:
            state = SessionState(key.agent, key.session_id)
            self.state.sessions[sid] = state
        if path and (name := name_text(path)) not in state.files:
            state.files.append(name)
        self._dirty.add(sid)
        self._last_key, self._last_path, self._last_session = key, path, state
        self._last_sid = self._tables.sessions.of(sid)
        return state

    def _info(self, event: SessionInfo, path: str) -> int:
        session = self._session(event.session, path)
        session.cwd = session.cwd or event.cwd
        session.branch = event.branch or session.branch
        session.parent = session.parent or event.parent
        session.host = event.host or session.host
        session.touch(event.timestamp)
        session.note_model(event.timestamp, event.model)
        return 1

    def _limits(self, event: LimitsSeen, path: str) -> int:
        """The vendor's windows as last told: an older observation (a replayed line) loses."""
        session = self._session(event.session, path)
        known = session.limits
        if known is not None and known.observed_at > event.limits.observed_at:
            return 0
        session.limits = event.limits
        return 1

    def _grow(self, slot: int, event: UsageEvent, path: str) -> int:
        """A later copy of a counted response: count only what it adds (max wins).

        An estimate never beats recorded usage, and recorded usage replaces an estimate
        whatever its size (a streamed message is estimated until its usage is written).
        """
        t = event.tokens
        old, old_cost, sid, model = self._slot(slot)
        was_estimate = slot in self._estimated
        if event.estimated and not was_estimate:
            return 0
        replaces = was_estimate and not event.estimated
        counts = _counts(t)
        if not replaces and t.total <= sum(old):
            if t.total < sum(old) or (counts == old and event.cost_usd is None):
                return 0  # a smaller copy, or the same again (no cost of its own to weigh)
            if not self._outranks(event, model, old_cost, counts, old):
                return 0
        cost = self._rates.cost(event, model)
        self._set_slot(slot, counts, math.nan if cost is None else cost)
        delta = TokenCounts(*(n - o for n, o in zip(counts, old, strict=True)))
        cost_delta = None if cost is None or math.isnan(old_cost) else cost - old_cost
        session = self.state.sessions[sid]
        self._dirty.add(sid)
        if path and (name := name_text(path)) not in session.files:
            session.files.append(name)
        session.tokens_since_change = max(0, session.tokens_since_change + delta.total)
        if replaces:
            self._estimated.discard(slot)
            session.estimated = any(self._slot(s).session == sid for s in self._estimated)
        self._accumulate(session, model, self._time(event), delta, cost_delta, responses=0)
        return 1

    def _slot(self, slot: int) -> dedupe_index.Slot:
        """What is counted for a response: tokens, cost, session and model."""
        return self._tables.slot(slot)

    def _set_slot(self, slot: int, counts: list[int], cost: float) -> None:
        self._tables.set_slot(slot, counts, cost)

    def _outranks(
        self, event: UsageEvent, model: str, old_cost: float, counts: list[int], old: list[int]
    ) -> bool:
        """Two copies with the same total (LiteLLM logs a call twice with different costs):
        the larger recorded cost wins, then the larger counts in field order, so the result
        never depends on which line came first."""
        cost = self._rates.cost(event, model)
        mine = -1.0 if cost is None else cost
        theirs = -1.0 if math.isnan(old_cost) else old_cost
        return (mine, counts) > (theirs, list(old))

    def _add_new(self, event: UsageEvent, path: str) -> int:
        """First copy of a response: the cold-scan hot path, so it is written flat."""
        t = event.tokens
        ti, to, tr = t.input, t.output, t.cache_read
        tw5, tw1, tx = t.cache_write_5m, t.cache_write_1h, t.reasoning
        if not (ti or to or tr or tw5 or tw1 or tx):
            return 0
        key = event.session
        if key is self._last_key and path == self._last_path:
            session = self._last_session
        else:
            session = self._session(key, path)
        if event.cwd and not session.cwd:
            session.cwd = event.cwd
        if event.branch:
            session.branch = event.branch
        model = event.model
        cost = event.cost_usd
        if cost is None:  # the rate-card fast path of RateCards.cost, inlined
            card = self._rates[model]
            rates = card[0]
            if rates is None:
                pass
            elif ti + tr + tw5 + tw1 > card[1]:
                cost = self.cost_fn(model, t)
            else:
                cost = (
                    ti * rates[0] + to * rates[1] + tr * rates[2]
                    + tw5 * rates[3] + tw1 * rates[4] + tx * rates[5]
                )  # fmt: skip
        tables = self._tables
        fresh = tables.fresh
        slot = self._first_fresh + len(fresh.cost)
        if event.estimated:
            session.estimated = True
            self._estimated.add(slot)
        tables.seen[event.dedupe_key] = slot
        fresh.session.append(self._last_sid)
        if model != self._last_model:
            self._last_model, self._last_model_at = model, tables.models.of(model)
        fresh.model.append(self._last_model_at)
        fresh.tokens.extend((ti, to, tr, tw5, tw1, tx))
        fresh.cost.append(math.nan if cost is None else cost)
        ts = event.timestamp
        if not 0 < ts <= MAX_TS:
            ts = self._arrival or ts
        timeline = session.timeline
        if not timeline or timeline[-1][1] != model:
            session.note_model(ts, model)
        acc = session.by_model.get(model)
        if acc is None:
            acc = session.by_model[model] = ModelAcc([0] * KINDS)
        tk = acc.tokens
        tk[0] += ti
        tk[1] += to
        tk[2] += tr
        tk[3] += tw5
        tk[4] += tw1
        tk[5] += tx
        acc.responses += 1
        total = ti + to + tr + tw5 + tw1 + tx
        session.responses_since_change += 1
        session.tokens_since_change += total
        if cost is None:
            acc.unpriced = True
            cost = 0.0
        else:
            acc.cost += cost
        if ts > session.last_ts:
            session.last_ts = ts
        if ts and (ts < session.first_ts or not session.first_ts):
            session.first_ts = ts
        minute = int(ts // 60) if -MAX_TS <= ts <= MAX_TS else 0  # NaN and inf fail both
        if minute == session.minute:
            session.minute_tokens += total
            session.minute_cost += cost
        else:
            session.add_minute(minute, total, cost)
        if 0 < ts <= MAX_TS:
            add_pace(session.pace, ts, total, cost)
        return 1

    def _time(self, event: UsageEvent) -> float:
        """The response's own time, else (live) when it arrived; 0 for history without one."""
        ts = event.timestamp
        return ts if 0 < ts <= MAX_TS else self._arrival or ts

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
        session.add_minute(int(ts // 60) if -MAX_TS <= ts <= MAX_TS else 0, d.total, cost or 0.0)
        if 0 < ts <= MAX_TS:
            add_pace(session.pace, ts, d.total, cost or 0.0, grown=True)

    def _tool_call(self, event: ToolCall, path: str = "") -> int:
        calls = self._tables.calls
        call_id = event.call_id
        mark = calls.get(call_id)
        if mark is None and self._tables.old:
            mark = self._tables.find_call(call_id)
        failed = False
        name = event.name
        if mark is None:
            calls[call_id] = sys.intern(name)
        elif mark[:1] == SEP:  # its result came first
            failed = parse_mark(mark)[1] == 1
            calls[call_id] = call_mark(name, int(failed))
        else:
            return 0
        key = event.session
        if key is self._last_key and path == self._last_path:
            session = self._last_session
        else:
            session = self._session(key, path)
        tools = session.tools
        acc = tools.get(name)
        if acc is None:
            acc = tools[name] = ToolAcc()
        acc.calls += 1
        if failed:
            self._move_unknown_error(session, acc)
        ts = event.timestamp
        session.touch(ts)
        recent = session.thawed_recent()
        recent.append(RecentCall(ts, name, event.input_hash, call_id, -1, "", event.file_changing))
        if event.file_changing:
            session.responses_since_change = session.tokens_since_change = 0
        if len(recent) > RECENT_TOOLS:
            del recent[0]
        return 1

    @staticmethod
    def _move_unknown_error(session: SessionState, acc: ToolAcc) -> None:
        """A call whose failed result came first: its error was counted under "?"."""
        unknown = session.tools.get("?")
        if unknown is not None and unknown.errors:
            acc.errors += 1
            unknown.errors -= 1
            if not unknown.errors and not unknown.calls:
                del session.tools["?"]

    def _tool_result(self, event: ToolResult, path: str = "") -> int:
        calls = self._tables.calls
        call_id = event.call_id
        name = calls.get(call_id)
        if name is None:
            name = (self._tables.find_call(call_id) if self._tables.old else None) or ""
        if SEP in name:
            return 0
        outcome = int(event.is_error)
        calls[call_id] = call_mark(name, outcome)
        key = event.session
        if key is self._last_key and path == self._last_path:
            session = self._last_session
        else:
            session = self._session(key, path)
        recent = session.thawed_recent()
        for i in range(len(recent) - 1, -1, -1):  # the result usually follows its call closely
            item = recent[i]
            if item.call_id == call_id:
                item.outcome = outcome
                item.output_hash = event.output_hash
                break
        if outcome:
            session.tools.setdefault(name or "?", ToolAcc()).errors += 1
        return 1

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(
        self,
        now: float,
        files: Mapping[str, FileHealth] | None = None,
        calls_since: float | None = None,
    ) -> LedgerSnapshot:
        """Build an immutable view; unchanged idle sessions reuse their cached snapshot (see
        SnapshotCache.take for `calls_since`)."""
        self._last_key = None
        sessions = self.state.sessions
        return self._snapshots.take(sessions, now, files or {}, self.version, calls_since)


def _quiet_pace(session: SessionState, now: float) -> None:
    """Keep only the newest pace entry of a session whose newest response is older than two
    pace windows before `now`: no later pace can read the others. Burn at any time from now
    on reads entries within a window of the newest one, and only while that is within a
    window of the time (else the session has stopped); a response read later, even one
    older than those kept, cannot bring an entry from before `now` - 2 windows into reach.
    (The cache keeps one entry past one window, see `cache_state`: after a restart new
    responses only come later.)"""
    kept = newest_only(session.pace, now - 2 * PACE_WINDOW_S)
    if kept is not None:
        session.pace[:] = kept


def _counts(tokens: TokenCounts) -> list[int]:
    return [
        tokens.input,
        tokens.output,
        tokens.cache_read,
        tokens.cache_write_5m,
        tokens.cache_write_1h,
        tokens.reasoning,
    ]
