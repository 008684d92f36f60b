"""The ledger's mutable state: per-session accumulators and the global dedupe tables.

Both are msgspec Structs so the cache can persist them. The dedupe tables (every response
key, tool call and result ever seen) are most of a large history's state, so they are
packed into one compact blob for the cache and unpacked only when new events arrive: a
restart over unchanged files never decodes them.
"""

from __future__ import annotations

import struct
import sys
from array import array
from bisect import bisect_left, bisect_right

import msgspec

from tokentop.engine.pace import merged as merged_pace
from tokentop.model import RECENT_TOOLS, RateLimits, SessionKey

_STAMP = struct.Struct("<q")
_PAIR = struct.Struct("<dd")
MinuteItems = list[tuple[int, float, float]]

KINDS = 6
"""Fields of TokenCounts, stored flat in arrays to keep hundreds of thousands of keys small."""
SEP = "\0"
"""Separates a call mark's name from its outcome."""
NO_RESULT = -1


def call_mark(name: str, outcome: int = NO_RESULT) -> str:
    """A tool_calls value: the tool's name ("" until its call is read, as a result can
    come first), then NUL and 0 (ok) or 1 (error) once its result is read. Interned, so
    the 100k's of values share a handful of strings."""
    if outcome == NO_RESULT:
        return sys.intern(name)
    marks = _MARKS[outcome != 0]
    mark = marks.get(name)
    if mark is None:
        if len(marks) > 4096:  # tool names are the transcript's: bound what is remembered
            marks.clear()
        mark = marks[name] = sys.intern(f"{name}{SEP}{outcome}")
    return mark


_MARKS: tuple[dict[str, str], dict[str, str]] = ({}, {})
"""Marks made so far, by outcome (ok, error) and name: one call a result matters here."""


def parse_mark(mark: str) -> tuple[str, int]:
    """(name, outcome) of a `call_mark`; outcome is NO_RESULT before the result."""
    name, sep, outcome = mark.partition(SEP)
    return name, int(outcome) if sep else NO_RESULT


class ModelAcc(msgspec.Struct, array_like=True, gc=False):
    tokens: list[int]
    cost: float = 0.0
    unpriced: bool = False
    responses: int = 0


class ToolAcc(msgspec.Struct, array_like=True, gc=False):
    calls: int = 0
    errors: int = 0


class RecentCall(msgspec.Struct, array_like=True, gc=False):
    timestamp: float
    name: str
    input_hash: str
    call_id: str
    outcome: int = -1
    """-1 while pending, 0 ok, 1 error."""
    output_hash: str = ""
    file_changing: bool = False


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
    minute_index: bytearray = msgspec.field(default_factory=bytearray)
    """Minutes (Unix time // 60) with activity before `minute`, as ascending int64s."""
    minute_values: bytearray = msgspec.field(default_factory=bytearray)
    """Tokens and cost (two doubles) for each entry of `minute_index`. Packed, a bucket costs
    24 bytes where a dict of lists took ~190: a long history has 100k's of them."""
    minute: int = -1
    """The latest active minute, kept unpacked (most events add to it); -1 before any."""
    minute_tokens: float = 0.0
    minute_cost: float = 0.0
    timeline: list[tuple[float, str]] = msgspec.field(default_factory=list)
    tools: dict[str, ToolAcc] = msgspec.field(default_factory=dict)
    recent: list[RecentCall] = msgspec.field(default_factory=list)
    """The last RECENT_TOOLS tool calls (the loop detectors'); empty while frozen."""
    recent_frozen: bytes = b""
    """`recent` encoded while nothing adds to it: a cold scan's merged sessions keep ~50
    bytes a call instead of ~300 in objects (see `freeze_recent`)."""
    responses_since_change: int = 0
    tokens_since_change: int = 0
    files: list[str] = msgspec.field(default_factory=list)
    estimated: bool = False
    host: str = ""
    """Set by telemetry from another machine (see SessionInfo.host)."""
    pace: bytearray = msgspec.field(default_factory=bytearray)
    """The last responses' (time, tokens, cost), packed: burn is read from them (pace.py)."""
    limits: RateLimits | None = None
    """The vendor's own usage windows as last recorded in the session (Codex rate_limits)."""

    def add_minute(self, minute: int, tokens: float, cost: float) -> None:
        """Add to a minute's bucket. Events nearly always fall in the latest minute or start a
        new one; an earlier minute (a subagent file read after its parent's) is inserted or
        added in its place."""
        if minute == self.minute:
            self.minute_tokens += tokens
            self.minute_cost += cost
        elif minute > self.minute:
            if self.minute >= 0:
                self.minute_index += _STAMP.pack(self.minute)
                self.minute_values += _PAIR.pack(self.minute_tokens, self.minute_cost)
            self.minute, self.minute_tokens, self.minute_cost = minute, tokens, cost
        else:
            self._add_earlier(minute, tokens, cost)

    def _add_earlier(self, minute: int, tokens: float, cost: float) -> None:
        index, values = self.minute_index, self.minute_values
        i = bisect_left(array("q", index), minute)
        at = 16 * i
        if i * 8 < len(index) and _STAMP.unpack_from(index, i * 8)[0] == minute:
            old_tokens, old_cost = _PAIR.unpack_from(values, at)
            _PAIR.pack_into(values, at, old_tokens + tokens, old_cost + cost)
        else:
            index[i * 8 : i * 8] = _STAMP.pack(minute)
            values[at:at] = _PAIR.pack(tokens, cost)

    def minute_items(self, first: int | None = None, last: int | None = None) -> MinuteItems:
        """(minute, tokens, cost) per active minute in [first, last], ascending; a copy, so
        any thread may read while the engine thread adds."""
        while True:
            latest = (self.minute, self.minute_tokens, self.minute_cost)
            index = array("q", self.minute_index)
            values = array("d", self.minute_values)
            if len(values) == 2 * len(index) and latest[0] == self.minute:
                break  # else the engine thread moved buckets meanwhile: copy again
        lo = 0 if first is None else bisect_left(index, first)
        hi = len(index) if last is None else bisect_right(index, last)
        tokens, costs = values[2 * lo : 2 * hi : 2], values[2 * lo + 1 : 2 * hi : 2]
        items = list(zip(index[lo:hi], tokens, costs, strict=True))
        newest = latest[0]
        if newest >= 0 and (first is None or newest >= first) and (last is None or newest <= last):
            items.append(latest)
        return items

    def thawed_recent(self) -> list[RecentCall]:
        """`recent`, decoded first if it was frozen: for what adds to it."""
        if self.recent_frozen:
            self.recent, self.recent_frozen = _RECENT.decode(self.recent_frozen), b""
        return self.recent

    def recent_calls(self) -> list[RecentCall]:
        """`recent` for reading: a frozen one is decoded, and stays frozen."""
        return _RECENT.decode(self.recent_frozen) if self.recent_frozen else self.recent

    def freeze_recent(self) -> None:
        """Encode `recent` until something adds to it."""
        if self.recent:
            self.recent_frozen, self.recent = self._encoded_recent(), []

    def frozen_copy(self) -> SessionState:
        """A copy with `recent` encoded, this one left as it is (a live session's calls are
        read at every snapshot: decoding them each time would cost more than it saves)."""
        if not self.recent:
            return self
        return msgspec.structs.replace(self, recent=[], recent_frozen=self._encoded_recent())

    def _encoded_recent(self) -> bytes:
        """An answered call drops its id: only an unanswered one is looked up by id (a
        result finds its call)."""
        calls = [
            c if c.outcome < 0 else msgspec.structs.replace(c, call_id="") for c in self.recent
        ]
        return _RECENT_OUT.encode(calls)

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

    def absorb(self, other: SessionState) -> None:
        """Add another partial view of the same session (from a parallel scan)."""
        for model, acc in other.by_model.items():
            mine = self.by_model.setdefault(model, ModelAcc([0] * KINDS))
            mine.tokens = [a + b for a, b in zip(mine.tokens, acc.tokens, strict=True)]
            mine.cost += acc.cost
            mine.unpriced = mine.unpriced or acc.unpriced
            mine.responses += acc.responses
        for minute, tokens, cost in other.minute_items():
            self.add_minute(minute, tokens, cost)
        self.pace = merged_pace(self.pace, other.pace)
        for name, tool in other.tools.items():
            mine_tool = self.tools.setdefault(name, ToolAcc())
            mine_tool.calls += tool.calls
            mine_tool.errors += tool.errors
        for ts, model in other.timeline:
            self.note_model(ts, model)
        merged = sorted(self.thawed_recent() + other.recent_calls(), key=lambda c: c.timestamp)
        self.recent = merged[-RECENT_TOOLS:]
        self.responses_since_change += other.responses_since_change
        self.tokens_since_change += other.tokens_since_change
        self.files += [f for f in other.files if f not in self.files]
        self.cwd = self.cwd or other.cwd
        self.branch = self.branch or other.branch
        self.parent = self.parent or other.parent
        self.estimated = self.estimated or other.estimated
        if other.limits is not None and (
            self.limits is None or other.limits.observed_at > self.limits.observed_at
        ):
            self.limits = other.limits
        self.touch(other.first_ts)
        self.touch(other.last_ts)


_RECENT = msgspec.msgpack.Decoder(list[RecentCall])
_RECENT_OUT = msgspec.msgpack.Encoder()


class LedgerState(msgspec.Struct):
    """Everything needed to resume counting without re-reading files (see cache.py): the
    sessions, and the dedupe tables (dedupe_tables.py) packed, hashed, in `packed`."""

    sessions: dict[str, SessionState] = msgspec.field(default_factory=dict)
    seen: dict[str, int] = msgspec.field(default_factory=dict)
    """Response keys counted since the tables were last sealed, as exact strings -> slot."""
    tool_calls: dict[str, str] = msgspec.field(default_factory=dict)
    """Tool call ids counted since then -> `call_mark(name, outcome)`: the same call or
    result copied into a resumed file counts once. One table for both halves, because a
    call's id is its result's."""
    estimated_slots: list[int] = msgspec.field(default_factory=list)
    """Slots whose tokens are a tokenizer estimate: the first recorded copy replaces them."""
    packed: bytes = b""
    """An encoded PackedDedupe, or empty."""


class PackedDedupe(msgspec.Struct, array_like=True):
    """Dedupe tables as hashes (engine/key_table.py): what a cold scan's worker sends its
    parent, a cache's delta holds and an export carries. Slots count from the first of
    these columns; names are stored once and referred to by index (4 bytes a slot)."""

    digests: bytes = b""
    """16 bytes a response key (dedupe_index.key_digest)."""
    slots: bytes = b""
    """Each key's slot (uint32); empty: the keys are in slot order."""
    tokens: bytes = b""
    cost: bytes = b""
    sessions: list[str] = msgspec.field(default_factory=list)
    session_idx: bytes = b""
    models: list[str] = msgspec.field(default_factory=list)
    model_idx: bytes = b""
    call_digests: bytes = b""
    call_marks: list[str] = msgspec.field(default_factory=list)
    call_mark_idx: bytes = b""


def names_of(values: list[str]) -> tuple[list[str], bytes]:
    """Distinct values, and each value's index among them (uint32s)."""
    names: dict[str, int] = {}
    idx = array("I", [names.setdefault(v, len(names)) for v in values])
    return list(names), idx.tobytes()
