"""Per-session counters built from events: dedupe, totals by kind and model, burn windows.

The ledger never sees JSON. Each event carries a `dedupe_key` chosen by its source; the
ledger counts a key once, globally, at the largest total seen for it, and when a bigger
copy arrives it adds only the difference (Claude Code streams growing usage on several
lines of one response).
"""

from __future__ import annotations

import math
import sys
from array import array
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec

from tokentop.engine import dedupe_index, dedupe_write
from tokentop.engine.dedupe_index import DedupeIndex, Delta
from tokentop.engine.ledger_state import (
    KINDS,
    SEP,
    LedgerState,
    ModelAcc,
    RecentCall,
    SessionState,
    ToolAcc,
    call_mark,
    pack,
    parse_mark,
    unpack,
    unpacked_tables,
)
from tokentop.engine.pace import WINDOW_S as PACE_WINDOW_S
from tokentop.engine.pace import add as add_pace
from tokentop.engine.pace import newest as newest_pace
from tokentop.engine.rates import CostFn as CostFn  # the type callers import from here
from tokentop.engine.rates import RateCards
from tokentop.engine.snapshots import SnapshotCache
from tokentop.model import (
    RECENT_TOOLS,
    Event,
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

PACE_ENTRY = 24
"""Bytes of one pace entry (time, tokens, cost)."""
MAX_TS = 2.0**40
"""Sources pass only timestamps a datetime can hold; anything beyond (inf, NaN, 1e300) in an
event made elsewhere goes to minute 0 rather than overflow the int64 minute index."""


class Ledger:
    """Applies events; produces immutable snapshots. Not thread-safe: the engine serialises."""

    def __init__(self, cost_fn: CostFn) -> None:
        self.cost_fn = cost_fn
        self.version = 0
        self._load(LedgerState())

    def _load(
        self, state: LedgerState, base: DedupeIndex | None = None, delta: Delta | None = None
    ) -> None:
        self.state = state
        self._base = base
        """The dedupe tables the cache was saved with (hashed, on disk); `state.seen` and
        `state.tool_calls` then hold only what was added since, as exact strings (those of
        its delta included)."""
        self._n_base = len(base) if base is not None else 0
        """Slots below this are the base's; slot `n` above it is `state.seen_*[n - _n_base]`."""
        self._updates: dict[int, tuple[list[int], float]] = {}
        """Base slots whose counted copy grew since (tokens, cost), written on the next save."""
        if delta is not None:
            self._updates = {slot: (tokens, cost) for slot, tokens, cost in delta.updates}
            state.packed = delta.packed
        self._packed: bytes = state.packed
        """Dedupe tables still encoded (strings, see ledger_state.pack): decoded on the first
        event, re-used as is on export."""
        self._tokens = array("q", state.seen_tokens)
        self._cost = array("d", state.seen_cost)
        self._estimated = set(state.estimated_slots)
        self._snapshots = SnapshotCache(state.sessions)
        self._dirty = self._snapshots.dirty
        """Sessions whose counters changed since the last snapshot (the cache's own set)."""
        self._rates = RateCards(self.cost_fn)
        self._forgotten = False
        self._last_key: SessionKey | None = None
        self._last_path = ""
        self._last_session = SessionState("", "")
        self._last_sid = ""
        self._last_model = ""
        self._arrival = 0.0

    def _unpack(self) -> None:
        if self._packed:
            unpack(self._packed, self.state, self._n_base)
            self._packed = b""
            self._tokens = array("q", self.state.seen_tokens)
            self._cost = array("d", self.state.seen_cost)

    def export(self, *, final: bool = False) -> LedgerState:
        """The state to persist: the sessions, and the dedupe tables packed into one blob.

        `final` hands the tables over: this ledger must not be used afterwards. A ledger
        resumed from a cache's index exports only what was added since (see `save_index`).
        """
        blob = self._packed
        if not blob:
            tokens, cost = self._tokens.tobytes(), self._cost.tobytes()
            if final:
                self._tokens, self._cost = array("q"), array("d")
            blob = pack(self.state, tokens, cost, consume=final)
        sessions = dict(self.state.sessions)
        return LedgerState(sessions=sessions, packed=blob, estimated_slots=sorted(self._estimated))

    def forget_dedupe(self) -> None:
        """Free the dedupe tables of a ledger that will count nothing more (a one-shot
        command, once its scan is saved): the snapshot and output reuse their memory
        instead of adding to the peak. Applying events afterwards raises."""
        self.state.seen, self.state.tool_calls = {}, {}
        self.state.seen_session, self.state.seen_model = [], []
        self._tokens, self._cost, self._packed, self._base = array("q"), array("d"), b"", None
        self._forgotten = True

    def cache_state(self, now: float) -> LedgerState:
        """The sessions, for the cache's main file; the dedupe tables go to `save_index`.

        A session quiet for longer than the pace window keeps only its newest response's
        pace entry (its time is the snapshot's `last_response_ts`): the others can never be
        read again, since a later response starts a stretch of its own (pace.recent), and
        they were a quarter of a large history's cache."""
        sessions = dict(self.state.sessions)
        quiet_before = now - PACE_WINDOW_S
        for sid, session in sessions.items():
            pace = session.pace
            if len(pace) > PACE_ENTRY and newest_pace(pace) < quiet_before:
                sessions[sid] = msgspec.structs.replace(session, pace=pace[-PACE_ENTRY:])
        return LedgerState(sessions=sessions, estimated_slots=sorted(self._estimated))

    def save_index(self, path: Path, delta_path: Path, save_id: str) -> tuple[str, str]:
        """Write the dedupe tables; returns the ids the index and its delta carry.

        Few keys added since the index was written (up to `delta_limit`): only they go, to
        the delta (the index is kept as it is, if no other process replaced it). Else one
        new index holds everything, and there is no delta."""
        self._unpack()
        st, base = self.state, self._base
        added = len(st.seen) + len(st.tool_calls)
        if (
            base is not None
            and added <= dedupe_index.delta_limit(len(base))
            and dedupe_index.saved_id(path) == base.save_id
        ):
            if not added and not self._updates:
                return base.save_id, ""
            tables = pack(st, self._tokens.tobytes(), self._cost.tobytes())
            updates = [(slot, tokens, cost) for slot, (tokens, cost) in self._updates.items()]
            dedupe_index.save_delta(delta_path, save_id, Delta(tables, updates))
            return base.save_id, save_id
        fresh = dedupe_index.Fresh(
            list(st.seen), self._tokens.tobytes(), self._cost.tobytes(),
            st.seen_session, st.seen_model, st.tool_calls,
        )  # fmt: skip
        written = dedupe_write.save(path, save_id, base, self._updates, fresh)
        self._rebase(dedupe_index.load(path, written))
        return written, ""

    def _rebase(self, index: DedupeIndex | None) -> None:
        """Count on from the index just written (it holds every key): the strings added
        since are dropped, so a long-running process does not keep them, nor write them
        all again at every save. Slot numbers stay: the index keeps them."""
        if index is None or len(index) != self._n_base + len(self.state.seen_session):
            return  # replaced meanwhile, or unreadable: keep counting on what is in memory
        st = self.state
        st.seen, st.tool_calls, st.seen_session, st.seen_model = {}, {}, [], []
        self._tokens, self._cost, self._updates = array("q"), array("d"), {}
        self._base, self._n_base = index, len(index)

    @classmethod
    def restore(
        cls,
        state: LedgerState,
        cost_fn: CostFn,
        base: DedupeIndex | None = None,
        delta: Delta | None = None,
    ) -> Ledger:
        """A ledger resuming from `state`, with the dedupe tables of a cache's index (`base`)
        and its `delta`, or, packed as strings, in `state.packed`."""
        ledger = cls(cost_fn)
        ledger._load(state, base, delta)
        return ledger

    def merge(self, other: LedgerState) -> bool:
        """Fold in a ledger built from other files; False (nothing changed) if any dedupe key,
        tool call or result is in both, because then only a sequential pass is exact.

        The other side's packed tables are merged straight from their key lists, without
        building its dicts first: the cold scan's peak memory is this moment.
        """
        self._unpack()
        st = self.state
        t = unpacked_tables(other)
        other.packed = b""  # read: free it before the tables grow
        if not (st.seen.keys().isdisjoint(t.keys) and st.tool_calls.keys().isdisjoint(t.call_keys)):
            return False
        base = self._base
        if base is not None and (
            any(base.find(k) is not None for k in t.keys)
            or any(base.find_call(c) is not None for c in t.call_keys)
        ):
            return False
        offset = self._n_base + len(st.seen_session)
        self._estimated.update(slot + offset for slot in other.estimated_slots)
        st.seen.update(zip(t.keys, range(offset, offset + len(t.keys)), strict=True))
        st.seen_session.extend(t.sessions)
        st.seen_model.extend(t.models)
        self._tokens.frombytes(t.tokens)
        self._cost.frombytes(t.cost)
        st.tool_calls.update(zip(t.call_keys, t.call_marks, strict=True))
        for sid, session in other.sessions.items():
            mine = st.sessions.get(sid)
            if mine is None:
                st.sessions[sid] = session
            else:
                mine.absorb(session)
            self._dirty.add(sid)
        self._last_key = None
        self.version += 1
        return True

    # -- applying events -------------------------------------------------------------------

    def apply(self, events: Iterable[Event], path: str = "", arrival: float = 0.0) -> int:
        """Apply events read from `path`; returns how many changed a counter. `arrival` (the
        clock's now, while following files live) stands in for a missing timestamp in the
        burn rate; history read at start-up passes none."""
        if self._packed:
            self._unpack()
        if self._forgotten:
            raise RuntimeError("this ledger's dedupe tables were freed: it counts nothing more")
        self._arrival = arrival
        changed = 0
        add, grow, call, result = self._add_new, self._grow, self._tool_call, self._tool_result
        seen = self.state.seen
        base = self._base
        for event in events:
            kind = type(event)
            if kind is UsageEvent:
                slot = seen.get(event.dedupe_key)  # type: ignore[union-attr]
                if slot is None and base is not None:
                    slot = base.find(event.dedupe_key)  # type: ignore[union-attr]
                if slot is None:
                    changed += add(event, path)  # type: ignore[arg-type]
                else:
                    changed += grow(slot, event, path)  # type: ignore[arg-type]
            elif kind is ToolCall:
                changed += call(event, path)  # type: ignore[arg-type]
            elif kind is ToolResult:
                changed += result(event, path)  # type: ignore[arg-type]
            elif kind is SessionInfo:
                changed += self._info(event, path)  # type: ignore[arg-type]
            elif kind is LimitsSeen:
                changed += self._limits(event, path)  # type: ignore[arg-type]
        if changed:
            self.version += 1
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
        self._last_sid = sid
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
        if slot < self._n_base:
            counted = self._base.slot(slot)  # type: ignore[union-attr]
            update = self._updates.get(slot)
            return counted if update is None else counted._replace(tokens=update[0], cost=update[1])
        at = slot - self._n_base
        st = self.state
        tokens = list(self._tokens[at * KINDS : (at + 1) * KINDS])
        return dedupe_index.Slot(tokens, self._cost[at], st.seen_session[at], st.seen_model[at])

    def _set_slot(self, slot: int, counts: list[int], cost: float) -> None:
        if slot < self._n_base:
            self._updates[slot] = (counts, cost)
            return
        at = slot - self._n_base
        self._tokens[at * KINDS : (at + 1) * KINDS] = array("q", counts)
        self._cost[at] = cost

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
        ti, to, tr, tw5, tw1, tx = (
            t.input,
            t.output,
            t.cache_read,
            t.cache_write_5m,
            t.cache_write_1h,
            t.reasoning,
        )
        if not (ti or to or tr or tw5 or tw1 or tx):
            return 0
        session = self._session(event.session, path)
        if event.cwd and not session.cwd:
            session.cwd = event.cwd
        if event.branch:
            session.branch = event.branch
        if event.estimated:
            session.estimated = True
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
        state = self.state
        slot = self._n_base + len(state.seen_session)
        if event.estimated:
            self._estimated.add(slot)
        state.seen[event.dedupe_key] = slot
        state.seen_session.append(self._last_sid)
        if model is not self._last_model:
            self._last_model = sys.intern(model)
        state.seen_model.append(self._last_model)
        self._tokens.extend((ti, to, tr, tw5, tw1, tx))
        self._cost.append(math.nan if cost is None else cost)
        ts = self._time(event)
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
        if cost is None:
            acc.unpriced = True
        else:
            acc.cost += cost
        session.responses_since_change += 1
        session.tokens_since_change += ti + to + tr + tw5 + tw1 + tx
        if ts > session.last_ts:
            session.last_ts = ts
        if ts and (ts < session.first_ts or not session.first_ts):
            session.first_ts = ts
        minute = int(ts // 60) if -MAX_TS <= ts <= MAX_TS else 0  # NaN and inf fail both
        total = ti + to + tr + tw5 + tw1 + tx
        session.add_minute(minute, total, cost or 0.0)
        if 0 < ts <= MAX_TS:
            add_pace(session.pace, ts, total, cost or 0.0)
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
        calls = self.state.tool_calls
        mark = calls.get(event.call_id)
        if mark is None and self._base is not None:
            mark = self._base.find_call(event.call_id)
        failed = False
        if mark is None:
            calls[event.call_id] = sys.intern(event.name)
        elif mark[:1] == SEP:  # its result came first
            failed = parse_mark(mark)[1] == 1
            calls[event.call_id] = call_mark(event.name, int(failed))
        else:
            return 0
        session = self._session(event.session, path)
        acc = session.tools.get(event.name)
        if acc is None:
            acc = session.tools[event.name] = ToolAcc()
        acc.calls += 1
        unknown = session.tools.get("?") if failed else None
        if unknown is not None and unknown.errors:  # its error was counted under "?"
            acc.errors += 1
            unknown.errors -= 1
            if not unknown.errors and not unknown.calls:
                del session.tools["?"]
        session.touch(event.timestamp)
        recent = session.recent
        recent.append(
            RecentCall(
                event.timestamp,
                event.name,
                event.input_hash,
                event.call_id,
                file_changing=event.file_changing,
            )
        )
        if event.file_changing:
            session.responses_since_change = session.tokens_since_change = 0
        if len(recent) > RECENT_TOOLS:
            del recent[0]
        return 1

    def _tool_result(self, event: ToolResult, path: str = "") -> int:
        calls = self.state.tool_calls
        call_id = event.call_id
        name = calls.get(call_id)
        if name is None:
            known = self._base.find_call(call_id) if self._base is not None else None
            name = known or ""
        if SEP in name:
            return 0
        outcome = int(event.is_error)
        calls[call_id] = call_mark(name, outcome)
        session = self._session(event.session, path)
        recent = session.recent
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

    def snapshot(self, now: float, files: Mapping[str, FileHealth] | None = None) -> LedgerSnapshot:
        """Build an immutable view; unchanged idle sessions reuse their cached snapshot."""
        self._last_key = None
        return self._snapshots.take(self.state.sessions, now, files or {}, self.version)


def _counts(tokens: TokenCounts) -> list[int]:
    return [
        tokens.input,
        tokens.output,
        tokens.cache_read,
        tokens.cache_write_5m,
        tokens.cache_write_1h,
        tokens.reasoning,
    ]
