"""Claude Code transcript lines turned into events (see claude_code.py for the format).

One API response is written as one line per content block, every line carrying the same
`message.id` and a usage snapshot that may grow (output 8, then 322): the parser keeps the
largest copy of a response read in one go and emits it once, keyed `claude:<message.id>`.

A feed's lines become runs (`EventRun`): a session's responses, tool calls and results as
tuples, which the engine's ledger counts in bulk; `feed` gives the same as events one by
one, for the other readers.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any, cast

import msgspec

from tokentop.model import (
    RECENT_TOOLS,
    RUN_CALL,
    RUN_RESPONSE,
    RUN_RESULT,
    Event,
    EventRun,
    Response,
    SessionInfo,
    SessionKey,
)
from tokentop.sources.base import (
    DECODE_ERRORS,
    FILE_CHANGING_TOOLS,
    MAX_LINE_BYTES,
    FileParser,
    short_hash,
)
from tokentop.sources.claude_records import (
    ENVELOPE,
    KNOWN_TYPES,
    LOOSE,
    RECORD,
    AnyRecord,
    Block,
    Envelope,
    decode_whole,
    epoch,
    output_hash,
)

NATIVE: ModuleType | None
try:
    from tokentop import _claude_native as NATIVE
except ImportError:  # built without a C compiler: the same parser, in Python
    NATIVE = None
if os.environ.get("TOKENTOP_NATIVE") == "0":  # the Python path, to compare or to rule out C
    NATIVE = None

AGENT = "claude"
SYNTHETIC_MODEL = "<synthetic>"
_PENDING: Response = ("", 0.0, "", 0, 0, 0, 0, 0, None, "", "", False, "", SessionKey("", ""))
"""Holds a response's place in its run until `_Feed.flush` fills it in."""
Item = Event | EventRun
ToHash = list[tuple[list[Any], int, SessionKey, msgspec.Raw]]
"""(a run's calls or results, an index in them, the session, the raw input or output)."""


class _Feed:
    """One `feed` call: the items so far, the run being filled, the response being read,
    the tool events still to hash, and where lines start (found only if a record needs its
    offset for a key). The parser sets the fields directly (a call per line matters)."""

    __slots__ = (
        "call_at", "calls", "data", "index", "items", "pending", "record", "results", "run",
        "session", "starts", "ts",
    )  # fmt: skip

    def __init__(self, data: bytes, starts: list[int] | None) -> None:
        self.data, self.starts = data, starts
        self.items: list[Item] = []
        self.run: EventRun | None = None
        self.call_at: dict[str, int] = {}
        """The open run's calls not answered yet: id -> index (a result pairs with one)."""
        self.index = -1
        """Where the pending response goes in its run's responses; -1: none pending."""
        self.pending: EventRun
        self.record: AnyRecord
        """The pending response's largest copy so far."""
        self.session: SessionKey
        self.ts: float | None = None
        """The pending record's time, once a tool call of the same line needed it."""
        self.calls: ToHash = []
        self.results: ToHash = []
        """Tool calls and results whose input/output hash is not computed yet (`hash_tail`)."""

    def open(self, session: SessionKey) -> EventRun:
        """The run the next event of `session` goes to."""
        run = self.run
        if run is None or run.session is not session:
            run = self.run = EventRun(session)
            self.items.append(run)
            self.call_at = {}
        return run

    def start(self, line: int) -> int:
        """Where the feed's `line`-th record starts in its data."""
        if self.starts is None:
            starts, pos, find = [0], 0, self.data.find
            while (pos := find(b"\n", pos) + 1) and pos < len(self.data):
                starts.append(pos)
            self.starts = starts
        return self.starts[line]


class ClaudeFileParser(FileParser, tag="claude"):
    """Turns complete transcript lines into events; all state is persisted with the offset.

    Every line is decoded: msgspec skips undeclared fields (tool output, text) at ~2.5 GB/s,
    and almost all bytes sit in usage or tool_result lines anyway. Measured on the 18 MB
    benchmark corpus, finding the marked lines (`iter_marked_lines`) alone took longer than
    splitting and decoding every line, and decoding also finds every malformed line.
    """

    session_id: str = ""
    """Session for records without a `sessionId`; the parent's id for subagent files."""
    session_from_path: bool = False
    """Subagent file: every record belongs to the parent session named by the folder."""
    announced: bool = False
    offset: int = 0
    """Bytes fed so far; keys records that have neither a message id nor a uuid."""
    last_key: str = ""
    last_total: int = 0
    """Largest total emitted for `last_key`; a following copy that is not larger is dropped."""

    def feed(self, data: bytes, out: list[Event]) -> None:
        for item in self._items(data):
            if type(item) is EventRun:
                out.extend(item.events())
            else:
                out.append(item)  # type: ignore[arg-type]

    def feed_runs(self, data: bytes, out: list[Event | EventRun]) -> None:
        out.extend(self._items(data))

    def _items(self, data: bytes) -> list[Item]:
        """Decode every complete line and turn user/assistant records into runs: in C when
        it can prove the result the same (`_claude_native`), else here, all lines in one
        call when they are plain records (`decode_whole`), else one by one."""
        if NATIVE is not None:
            done = NATIVE.items(
                data,
                (self.session_id, self.session_from_path, self.announced, self.last_key,
                 self.last_total),
                session_key, EventRun, SessionInfo, FILE_CHANGING_TOOLS, short_hash,
                output_hash, HASHED_PER_SESSION,
            )  # fmt: skip
            if done is not None:
                items, lines, self.session_id, self.announced, self.last_key, self.last_total = done
                self.lines += lines
                self.offset += len(data)
                return cast("list[Item]", items)
        whole = decode_whole(data)
        starts = None
        records: Sequence[AnyRecord | Envelope]
        if whole is None:
            records, starts = self._decode_each(data)
            lines = data.count(b"\n")
        else:
            records, lines = whole, len(whole)
        feed = _Feed(data, starts)
        self._read(records, feed)
        self._flush(feed)
        hash_tail(feed.calls, 3, short_hash)
        hash_tail(feed.results, 3, output_hash)
        self.lines += lines
        self.offset += len(data)
        return feed.items

    def _read(self, records: Sequence[AnyRecord | Envelope], feed: _Feed) -> None:
        """The cold scan's hot path: one iteration per transcript line, hence the locals
        and the usage of an assistant line (most lines) read inline."""
        from_path, announced = self.session_from_path, self.announced
        last_sid, session = "", SessionKey(AGENT, "")
        for line, record in enumerate(records):
            sid = record.sessionId
            if not announced and sid:
                self._announce(sid, record, feed)
                announced = True
            message = record.message
            if message is None:
                continue
            if from_path or not sid:
                sid = self.session_id
            if sid != last_sid:
                last_sid, session = sid, _KEYS.get(sid) or session_key(sid)
            kind = record.type
            if kind == "assistant" or not kind:  # old or hand-made lines have no type
                usage = message.usage
                if usage is not None and message.model != SYNTHETIC_MODEL:
                    split = usage.cache_creation
                    total = usage.input_tokens + usage.output_tokens + (
                        usage.cache_read_input_tokens
                    ) + (
                        usage.cache_creation_input_tokens if split is None
                        else split.ephemeral_5m_input_tokens + split.ephemeral_1h_input_tokens
                    )  # fmt: skip
                    if total:  # the pending copy of its response, unless a larger one is
                        mid = message.id
                        key = "claude:" + mid if mid else self._local_key(record, line, feed)  # type: ignore[arg-type]
                        if key != self.last_key:
                            self._flush(feed)
                            self.last_key, self.last_total = key, total
                            self._pend(record, session, feed)  # type: ignore[arg-type]
                        elif total > self.last_total:
                            self.last_total = total
                            self._replace(record, session, feed)  # type: ignore[arg-type]
                content = message.content
                if type(content) is list:
                    for block in content:
                        if block.type == "tool_use":
                            self._tool_call(block, content, session, record, line, feed)  # type: ignore[arg-type]
            elif kind == "user" and type(message.content) is list:
                self._user(record, message.content, session, line, feed)  # type: ignore[arg-type]

    def _decode_each(self, data: bytes) -> tuple[list[AnyRecord | Envelope], list[int]]:
        """The lines one by one: each bad one counted with its reason, and an unknown
        record type kept as an Envelope (it may name the session). Also where each starts."""
        find, view, decode = data.find, memoryview(data), RECORD.decode
        records: list[AnyRecord | Envelope] = []
        starts: list[int] = []
        pos = count = 0
        while (end := find(b"\n", pos)) >= 0:
            start, pos = pos, end + 1
            count += 1
            number = self.lines + count
            if end - start > MAX_LINE_BYTES:
                self.bad(f"line {number}: over {MAX_LINE_BYTES} bytes, skipped")
                continue
            try:
                record: AnyRecord | Envelope | None = decode(view[start:end])
            except msgspec.ValidationError as exc:  # valid JSON of another shape
                record = self._refit(view[start:end], number, str(exc))
            except msgspec.DecodeError as exc:
                if end > start:  # an empty line is harmless; anything else that fails is junk
                    self.bad(f"line {number}: invalid JSON ({exc})")
                continue
            except RecursionError:  # nested deeper than msgspec will follow
                self.bad(f"line {number}: JSON nested too deep")
                continue
            if record is not None:
                records.append(record)
                starts.append(start)
        return records, starts

    def _refit(self, line: memoryview, number: int, error: str) -> AnyRecord | Envelope | None:
        """A valid JSON line that did not fit `Record`: retry with a text timestamp, else
        keep its envelope if it is an unknown record type (it may name the session), and
        count it as bad if it is a known one."""
        try:
            return LOOSE.decode(line)
        except DECODE_ERRORS:
            pass
        try:
            env = ENVELOPE.decode(line)
        except DECODE_ERRORS:
            self.bad(f"line {number}: not a transcript record ({error})")
            return None
        if env.type in KNOWN_TYPES:
            self.bad(f"line {number}: unusable {env.type} record ({error})")
            return None
        return env

    def _announce(self, sid: str, record: AnyRecord | Envelope, feed: _Feed) -> None:
        """One SessionInfo per file, so a session is listed before its first response."""
        self.announced = True
        if not self.session_from_path:
            self.session_id = sid
        model = ""
        if not isinstance(record, Envelope) and record.message is not None:
            model = record.message.model or ""
        feed.run = None  # what follows comes after it
        feed.items.append(
            SessionInfo(
                session_key(self.session_id),
                epoch(record.timestamp),
                record.cwd or "",
                record.gitBranch or "",
                "" if model == SYNTHETIC_MODEL else model,
            )
        )

    def _pend(self, record: AnyRecord, session: SessionKey, feed: _Feed) -> None:
        """A new response: its place in the run, filled in once its last copy is known."""
        run = feed.run
        if run is None or run.session is not session:
            run = feed.open(session)
        feed.pending = run
        run.order.append(RUN_RESPONSE)
        feed.index = len(run.responses)
        run.responses.append(_PENDING)
        feed.record, feed.session, feed.ts = record, session, None

    def _replace(self, record: AnyRecord, session: SessionKey, feed: _Feed) -> None:
        """A larger copy of the last response: it replaces the pending one, or, when that
        was read in an earlier feed, is a response of its own."""
        if feed.index < 0:
            self._pend(record, session, feed)
            return
        if session is not feed.pending.session:
            feed.pending.mixed = True
        feed.record, feed.session, feed.ts = record, session, None

    def _flush(self, feed: _Feed) -> None:
        """Fill in the pending response in its place in its run."""
        if feed.index < 0:
            return
        record = feed.record
        message = record.message
        usage = message.usage  # type: ignore[union-attr]
        split = usage.cache_creation  # type: ignore[union-attr]
        if split is None:
            write_5m, write_1h = usage.cache_creation_input_tokens, 0  # type: ignore[union-attr]
        else:
            write_5m, write_1h = split.ephemeral_5m_input_tokens, split.ephemeral_1h_input_tokens
        ts = feed.ts
        feed.pending.responses[feed.index] = (
            self.last_key,
            epoch(record.timestamp) if ts is None else ts,
            message.model or "",  # type: ignore[union-attr]
            usage.input_tokens,  # type: ignore[union-attr]
            usage.output_tokens,  # type: ignore[union-attr]
            usage.cache_read_input_tokens,  # type: ignore[union-attr]
            write_5m,
            write_1h,
            record.costUSD,
            record.cwd or "",
            record.gitBranch or "",
            bool(record.isSidechain) or self.session_from_path,
            record.requestId or "",
            feed.session,
        )
        feed.index = -1

    def _tool_call(
        self,
        block: Block,
        blocks: list[Block],
        session: SessionKey,
        record: AnyRecord,
        line: int,
        feed: _Feed,
    ) -> None:
        name = block.name
        call_id = block.id or f"{self._local_key(record, line, feed)}/{_index(blocks, block)}"
        if feed.index >= 0 and feed.record is record:  # the pending copy: its time is kept
            ts = feed.ts
            if ts is None:
                ts = feed.ts = epoch(record.timestamp)
        else:
            ts = epoch(record.timestamp)
        run = feed.run
        if run is None or run.session is not session:
            run = feed.open(session)
        run.order.append(RUN_CALL)
        calls = run.calls
        feed.call_at[call_id] = len(calls)
        feed.calls.append((calls, len(calls), session, block.input))
        changing = name in FILE_CHANGING_TOOLS
        calls.append((call_id, ts, name, "", changing, len(run.responses)))

    def _local_key(self, record: AnyRecord, line: int, feed: _Feed) -> str:
        """A key for a record without message id: unique to this file and line."""
        return f"claude:{self.path}#{record.uuid or self.offset + feed.start(line)}"

    def _user(
        self,
        record: AnyRecord,
        blocks: list[Block],
        session: SessionKey,
        line: int,
        feed: _Feed,
    ) -> None:
        """A result per tool_result block, paired with its call if that came earlier in
        the run."""
        ts: float | None = None
        for index, block in enumerate(blocks):
            if block.type != "tool_result":
                continue
            if ts is None:
                ts = epoch(record.timestamp)
            call_id = block.tool_use_id or f"{self._local_key(record, line, feed)}/{index}"
            run = feed.run
            if run is None or run.session is not session:
                run = feed.open(session)
            run.order.append(RUN_RESULT)
            results = run.results
            feed.results.append((results, len(results), session, block.content))
            paired = feed.call_at.pop(call_id, -1)
            results.append((call_id, ts, bool(block.is_error), "", paired, len(run.calls)))


def _index(blocks: list[Block], block: Block) -> int:
    """Where `block` is among `blocks` (by identity: equal blocks are not the same)."""
    return next(i for i, b in enumerate(blocks) if b is block)


HASHED_PER_SESSION = 2 * RECENT_TOOLS
"""Tool calls (and results) per session and feed whose hashes are computed: the loop
detectors only compare the ledger's last RECENT_TOOLS calls, and the older ones of a feed
are pushed out of that list by the newer ones of the same feed. Twice as many, so a
result whose call is still listed always has its hash."""


def hash_tail(to_hash: ToHash, field: int, digest: Callable[[bytes], str]) -> None:
    """Fill in the input (or output) hashes, `field` of their tuples, of each session's
    latest tool calls (results).

    Hashing every tool output would read most of a transcript's bytes a second time; on a
    cold scan only the newest calls of each session ever reach the loop detectors. A feed
    is nearly always one session: then its last entries are taken as they are.
    """
    if len({session for _, _, session, _ in to_hash}) > 1:
        to_hash = _latest_per_session(to_hash)
    else:
        to_hash = to_hash[-HASHED_PER_SESSION:]
    for entries, at, _, raw in to_hash:
        entry = entries[at]
        entries[at] = (*entry[:field], digest(raw), *entry[field + 1 :])


def _latest_per_session(to_hash: ToHash) -> ToHash:
    left: dict[SessionKey, int] = {}
    latest = []
    for entry in reversed(to_hash):
        n = left.get(entry[2], HASHED_PER_SESSION)
        if n:
            left[entry[2]] = n - 1
            latest.append(entry)
    return latest


_KEYS: dict[str, SessionKey] = {}


def session_key(session_id: str) -> SessionKey:
    """Shared SessionKey objects: one per session rather than one per line."""
    key = _KEYS.get(session_id)
    if key is None:
        if len(_KEYS) > 65536:
            _KEYS.clear()
        key = _KEYS[session_id] = SessionKey(AGENT, session_id)
    return key
