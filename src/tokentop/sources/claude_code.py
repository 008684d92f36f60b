"""Claude Code transcripts: `projects/<escaped-cwd>/<session>.jsonl` (+ subagent files).

One API response is written as one line per content block, every line carrying the same
`message.id` and a usage snapshot that may grow (output 8, then 322). Each line becomes a
UsageEvent keyed `claude:<message.id>`; the ledger keeps the largest copy of a key, which also
folds sidechain replays and resumed-session copies found in other files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import ClassVar
from zlib import crc32

import msgspec

from tokentop.model import (
    RECENT_TOOLS,
    Event,
    SessionInfo,
    SessionKey,
    TokenCounts,
    ToolCall,
    ToolResult,
    UsageEvent,
)
from tokentop.sources.base import (
    DECODE_ERRORS,
    FILE_CHANGING_TOOLS,
    MAX_LINE_BYTES,
    Count,
    DirSource,
    FileParser,
    env_dirs,
    name_text,
    short_hash,
)

AGENT = "claude"
SYNTHETIC_MODEL = "<synthetic>"


# -- narrow record structs: only the fields tokentop reads, so msgspec skips the rest ---------
# Fields are declared in the order Claude Code writes them: msgspec tries the next declared
# field first when matching keys, which saves a few percent on the hot path.


class _CacheSplit(msgspec.Struct, gc=False):
    ephemeral_5m_input_tokens: Count = 0
    ephemeral_1h_input_tokens: Count = 0


class _Usage(msgspec.Struct, gc=False):
    input_tokens: Count = 0
    cache_creation_input_tokens: Count = 0
    cache_read_input_tokens: Count = 0
    cache_creation: _CacheSplit | None = None
    output_tokens: Count = 0


class _Block(msgspec.Struct, gc=False):
    """A content block; text and thinking bodies are never decoded, tool bodies stay Raw."""

    tool_use_id: str = ""
    type: str = ""
    id: str = ""
    name: str = ""
    input: msgspec.Raw = msgspec.Raw(b"null")
    content: msgspec.Raw = msgspec.Raw(b"null")
    is_error: bool | None = None


class _Message(msgspec.Struct, gc=False):
    id: str | None = None
    model: str | None = None
    content: list[_Block] | str | None = None
    usage: _Usage | None = None


class _RecordBase(msgspec.Struct, gc=False):
    isSidechain: bool | None = None
    cwd: str | None = None
    sessionId: str | None = None
    gitBranch: str | None = None
    type: str = ""
    message: _Message | None = None
    uuid: str | None = None
    costUSD: float | None = None
    requestId: str | None = None


class _Record(_RecordBase, gc=False):
    timestamp: datetime | None = None
    """Parsed by msgspec in C; a line whose timestamp does not parse is retried loosely."""


class _LooseRecord(_RecordBase, gc=False):
    timestamp: str | None = None


class _Envelope(msgspec.Struct, gc=False):
    """Fallback view of a line whose body did not fit `_Record` (e.g. a new record type)."""

    type: str = ""
    sessionId: str | None = None
    timestamp: str | None = None
    cwd: str | None = None
    gitBranch: str | None = None


_RECORD = msgspec.json.Decoder(_Record)
_LOOSE = msgspec.json.Decoder(_LooseRecord)
_ENVELOPE = msgspec.json.Decoder(_Envelope)
AnyRecord = _Record | _LooseRecord
_KNOWN_TYPES = frozenset({"assistant", "user"})


# -- source ---------------------------------------------------------------------------------


class ClaudeCodeSource(DirSource):
    """Finds Claude Code's `projects/` folders the way Claude Code and ccusage do."""

    name: ClassVar[str] = AGENT
    layout: ClassVar[str] = (
        "DIR/projects/<project>/<session>.jsonl, or DIR/<project>/<session>.jsonl"
    )

    def __init__(
        self, config_dirs: list[Path] | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(config_dirs, env)

    @staticmethod
    def default_dirs(env: Mapping[str, str]) -> list[Path]:
        return default_config_dirs(env)

    def roots_in(self, folder: Path) -> list[Path]:
        return [projects_dir(folder)]

    def new_parser(self, path: Path) -> ClaudeFileParser:
        parent = subagent_parent(path)
        return ClaudeFileParser(
            path=name_text(path),
            session_id=name_text(parent or path.stem),
            session_from_path=bool(parent),
        )


def default_config_dirs(env: Mapping[str, str]) -> list[Path]:
    """`$CLAUDE_CONFIG_DIR` (comma list) if set, else both XDG and legacy locations."""
    listed = env_dirs(env, "CLAUDE_CONFIG_DIR")
    if listed:
        return listed
    home = Path(env.get("HOME") or Path.home())
    xdg = env.get("XDG_CONFIG_HOME") or str(home / ".config")
    return [Path(xdg) / "claude", home / ".claude"]


def projects_dir(folder: Path) -> Path:
    """A config dir's `projects/`, or the folder itself when it already is one: named
    `projects`, or, whatever its name, holding project folders of transcripts (a copy of
    someone's `projects/`) and no `projects/` of its own."""
    if (folder / "projects").is_dir():
        return folder / "projects"
    if folder.name == "projects" or holds_projects(folder):
        return folder
    return folder / "projects"


def holds_projects(folder: Path) -> bool:
    """Whether a sub-folder of `folder` holds `*.jsonl` files directly (a project folder)."""
    try:
        subs = [e for e in os.scandir(folder) if e.is_dir(follow_symlinks=True)]
        return any(name.endswith(".jsonl") for sub in subs[:MAX_PEEK] for name in _names(sub.path))
    except OSError:
        return False


def _names(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


MAX_PEEK = 200
"""Sub-folders looked into before a folder is taken for a config dir (its projects/ absent)."""


def subagent_parent(path: Path) -> str:
    """The parent session of `<parent>/subagents/agent-*.jsonl`, else ""."""
    if path.parent.name == "subagents" and path.name.startswith("agent-"):
        return path.parent.parent.name
    return ""


# -- parser ---------------------------------------------------------------------------------


_PLACEHOLDER = SessionInfo(SessionKey(AGENT, ""), 0.0)
"""Holds the pending response's place in a feed's events until `_flush` builds it."""


class _Pending:
    """The response being read in one feed: its place in `out` and its largest copy so far.

    Its event is built once the response's last line in the feed is known, so the ledger
    sees one event per response read in one go, and the smaller copies cost no objects.
    The parser sets the fields directly (one method call per line matters here).
    """

    __slots__ = (
        "index", "message", "record", "session", "stamp", "to_hash", "usage", "write_1h",
        "write_5m",
    )  # fmt: skip

    def __init__(self) -> None:
        self.index = -1
        self.to_hash: list[tuple[int, SessionKey, msgspec.Raw]] = []
        """Tool calls and results whose input/output hash is not computed yet (see `hash_tail`)."""
        self.record: AnyRecord
        self.message: _Message
        self.usage: _Usage
        self.session: SessionKey
        self.stamp: datetime | str | None
        self.write_5m: int
        self.write_1h: int


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
        """Decode every complete line and turn user/assistant records into events.

        This loop is the cold scan's hot path (one iteration per transcript line), hence
        the local aliases; each record kind is then handled by one method.
        """
        find = data.find
        view = memoryview(data)
        decode = _RECORD.decode
        base = self.offset
        pos = count = 0
        pending = _Pending()
        record: AnyRecord | None
        while (end := find(b"\n", pos)) >= 0:
            start = pos
            pos = end + 1
            count += 1
            if end - start > MAX_LINE_BYTES:
                self.bad(f"line {self.lines + count}: over {MAX_LINE_BYTES} bytes, skipped")
                continue
            try:
                record = decode(view[start:end])
            except msgspec.ValidationError as exc:  # valid JSON of another shape
                record = self._refit(view[start:end], self.lines + count, str(exc), out)
                if record is None:
                    continue
            except msgspec.DecodeError as exc:
                if end > start:  # an empty line is harmless; anything else that fails is junk
                    self.bad(f"line {self.lines + count}: invalid JSON ({exc})")
                continue
            except RecursionError:  # nested deeper than msgspec will follow
                self.bad(f"line {self.lines + count}: JSON nested too deep")
                continue
            if not self.announced and record.sessionId:
                self._announce(record.sessionId, record, out)
            message = record.message
            if message is None:
                continue
            kind = record.type
            if kind == "assistant" or not kind:  # old or hand-made lines have no type
                self._assistant(record, message, base + start, out, pending)
            elif kind == "user" and type(message.content) is list:
                self._user(record, message.content, base + start, out, pending)
        self._flush(pending, out)
        hash_tail(pending.to_hash, out)
        self.lines += count
        self.offset = base + pos

    def _refit(
        self, line: memoryview, number: int, error: str, out: list[Event]
    ) -> _LooseRecord | None:
        """A valid JSON line that did not fit `_Record`: retry with a text timestamp, else
        ignore it if it is an unknown record type, and count it as bad if it is a known one."""
        try:
            return _LOOSE.decode(line)
        except DECODE_ERRORS:
            pass
        try:
            env = _ENVELOPE.decode(line)
        except DECODE_ERRORS:
            self.bad(f"line {number}: not a transcript record ({error})")
            return None
        if env.type in _KNOWN_TYPES:
            self.bad(f"line {number}: unusable {env.type} record ({error})")
        elif not self.announced and env.sessionId:
            self._announce(env.sessionId, env, out)
        return None

    def _announce(self, sid: str, record: AnyRecord | _Envelope, out: list[Event]) -> None:
        """One SessionInfo per file, so a session is listed before its first response."""
        self.announced = True
        if not self.session_from_path:
            self.session_id = sid
        model = ""
        if not isinstance(record, _Envelope) and record.message is not None:
            model = record.message.model or ""
        out.append(
            SessionInfo(
                session_key(self.session_id),
                epoch(record.timestamp),
                record.cwd or "",
                record.gitBranch or "",
                "" if model == SYNTHETIC_MODEL else model,
            )
        )

    def _assistant(
        self, record: AnyRecord, message: _Message, offset: int, out: list[Event], pending: _Pending
    ) -> None:
        sid = record.sessionId
        if self.session_from_path or not sid:
            sid = self.session_id
        session = _KEYS.get(sid) or session_key(sid)  # inlined: one call per line matters here
        stamp = record.timestamp  # made a number only if used: most copies are dropped
        usage = message.usage
        if usage is not None and message.model != SYNTHETIC_MODEL:
            self._usage(record, message, usage, session, stamp, offset, out, pending)
        content = message.content
        if type(content) is list:
            for index, block in enumerate(content):
                if block.type == "tool_use":
                    ts = epoch(stamp)
                    pending.to_hash.append((len(out), session, block.input))
                    out.append(self._tool_call(block, index, session, ts, record, offset))

    def _usage(
        self,
        record: AnyRecord,
        message: _Message,
        usage: _Usage,
        session: SessionKey,
        stamp: datetime | str | None,
        offset: int,
        out: list[Event],
        pending: _Pending,
    ) -> None:
        """Keep the line's usage as the pending copy of its response, unless it repeats the
        previous line's key without growing (a copy at least this large is already kept) or
        is all zero. The event is built only when the response's last copy is known."""
        split = usage.cache_creation
        if split is not None:
            write_5m = split.ephemeral_5m_input_tokens
            write_1h = split.ephemeral_1h_input_tokens
        else:
            write_5m = usage.cache_creation_input_tokens
            write_1h = 0
        total = (
            usage.input_tokens + usage.output_tokens + usage.cache_read_input_tokens
            + write_5m + write_1h
        )  # fmt: skip
        key = "claude:" + message.id if message.id else self._local_key(record, offset)
        if not total:
            return
        if key == self.last_key:
            if total <= self.last_total:
                return
            if pending.index >= 0:  # a larger copy replaces the pending one
                self.last_total = total
                pending.record, pending.message, pending.usage = record, message, usage
                pending.session, pending.stamp = session, stamp
                pending.write_5m, pending.write_1h = write_5m, write_1h
                return
        self._flush(pending, out)
        self.last_key = key
        self.last_total = total
        pending.index = len(out)
        out.append(_PLACEHOLDER)
        pending.record, pending.message, pending.usage = record, message, usage
        pending.session, pending.stamp = session, stamp
        pending.write_5m, pending.write_1h = write_5m, write_1h

    def _flush(self, p: _Pending, out: list[Event]) -> None:
        """Build the pending response's event in its place in `out`."""
        if p.index < 0:
            return
        usage, record = p.usage, p.record
        tokens = TokenCounts(
            usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens,
            p.write_5m, p.write_1h,
        )  # fmt: skip
        out[p.index] = UsageEvent(
            p.session,
            self.last_key,
            epoch(p.stamp),
            p.message.model or "",
            tokens,
            record.cwd or "",
            record.gitBranch or "",
            record.costUSD,
            bool(record.isSidechain) or self.session_from_path,
            request_id=record.requestId or "",
        )
        p.index = -1

    def _tool_call(
        self,
        block: _Block,
        index: int,
        session: SessionKey,
        ts: float,
        record: AnyRecord,
        offset: int,
    ) -> ToolCall:
        name = block.name
        call_id = block.id or f"{self._local_key(record, offset)}/{index}"
        return ToolCall(session, call_id, ts, name, "", name in FILE_CHANGING_TOOLS)

    def _local_key(self, record: AnyRecord, offset: int) -> str:
        """A key for a record without message id: unique to this file and line."""
        return f"claude:{self.path}#{record.uuid or offset}"

    def _user(
        self,
        record: AnyRecord,
        blocks: list[_Block],
        offset: int,
        out: list[Event],
        pending: _Pending,
    ) -> None:
        """A ToolResult per tool_result block."""
        session: SessionKey | None = None
        ts = 0.0
        for index, block in enumerate(blocks):
            if block.type != "tool_result":
                continue
            if session is None:
                sid = record.sessionId
                if self.session_from_path or not sid:
                    sid = self.session_id
                session = _KEYS.get(sid) or session_key(sid)
                stamp = record.timestamp
                ts = stamp.timestamp() if type(stamp) is datetime and stamp.tzinfo else epoch(stamp)
            call_id = block.tool_use_id or f"{self._local_key(record, offset)}/{index}"
            pending.to_hash.append((len(out), session, block.content))
            out.append(ToolResult(session, call_id, ts, bool(block.is_error)))


HASHED_PER_SESSION = 2 * RECENT_TOOLS
"""Tool calls (and results) per session and feed whose hashes are computed: the loop
detectors only compare the ledger's last RECENT_TOOLS calls, and the older ones of a feed
are pushed out of that list by the newer ones of the same feed. Twice as many, so a
result whose call is still listed always has its hash."""


def hash_tail(to_hash: list[tuple[int, SessionKey, msgspec.Raw]], out: list[Event]) -> None:
    """Fill in the input/output hashes of each session's latest tool calls and results.

    Hashing every tool output would read most of a transcript's bytes a second time; on a
    cold scan only the newest calls of each session ever reach the loop detectors. The walk
    from the end stops once every session has its share of both kinds (a feed is nearly
    always one session: its last ~120 entries), instead of visiting every call of the feed.
    """
    if not to_hash:
        return
    wanted = len({session for _, session, _ in to_hash}) * 2
    done = 0
    seen: dict[tuple[SessionKey, type], int] = {}
    for index, session, raw in reversed(to_hash):
        event = out[index]
        kind = type(event)
        n = seen.get((session, kind), 0)
        if n >= HASHED_PER_SESSION:
            continue
        seen[session, kind] = n + 1
        if kind is ToolCall:
            out[index] = msgspec.structs.replace(event, input_hash=short_hash(raw))
        else:
            out[index] = msgspec.structs.replace(event, output_hash=output_hash(raw))
        if n + 1 == HASHED_PER_SESSION:
            done += 1
            if done == wanted:
                break


_KEYS: dict[str, SessionKey] = {}


def session_key(session_id: str) -> SessionKey:
    """Shared SessionKey objects: one per session rather than one per line."""
    key = _KEYS.get(session_id)
    if key is None:
        if len(_KEYS) > 65536:
            _KEYS.clear()
        key = _KEYS[session_id] = SessionKey(AGENT, session_id)
    return key


def output_hash(raw: bytes) -> str:
    """Fingerprint of a tool output: crc32 and length, 16 hex digits.

    Outputs are most of a transcript's bytes (often MBs); crc32 runs at ~3 GB/s where
    blake2b manages ~0.6, and equality within one session is all the loop detector needs.
    """
    return (crc32(raw) << 32 | (len(raw) & 0xFFFFFFFF)).to_bytes(8).hex()


def epoch(value: datetime | str | None) -> float:
    """Unix seconds of a record timestamp (naive times taken as UTC); 0.0 when unparseable."""
    if type(value) is datetime and value.tzinfo is not None:
        return value.timestamp()
    if value is None:
        return 0.0
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return 0.0
    return value.replace(tzinfo=value.tzinfo or UTC).timestamp()
