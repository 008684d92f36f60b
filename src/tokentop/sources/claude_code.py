"""Claude Code transcripts: `projects/<escaped-cwd>/<session>.jsonl` (+ subagent files).

One API response is written as one line per content block, every line carrying the same
`message.id` and a usage snapshot that may grow (output 8, then 322). Each line becomes a
UsageEvent keyed `claude:<message.id>`; the ledger keeps the largest copy of a key, which also
folds sidechain replays and resumed-session copies found in other files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import ClassVar

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
    DirSource,
    FileParser,
    env_dirs,
    name_text,
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
    Message,
    Usage,
    decode_whole,
    epoch,
    output_hash,
)

AGENT = "claude"
SYNTHETIC_MODEL = "<synthetic>"


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


class _Feed:
    """One `feed` call: the response being read, the tool events still to hash, and where
    its lines start (found only if a record needs its offset for a key).

    The pending response's event is built once its last line in the feed is known, so the
    ledger sees one event per response read in one go, and the smaller copies cost no
    objects. The parser sets the fields directly (one method call per line matters here).
    """

    __slots__ = ("calls", "data", "index", "record", "results", "session", "starts", "ts")

    def __init__(self, data: bytes, starts: list[int] | None) -> None:
        self.data = data
        self.starts = starts
        self.index = -1
        """Where the pending response's event goes in `out`; -1 when none is pending."""
        self.record: AnyRecord
        """The pending response's largest copy so far."""
        self.session: SessionKey
        self.ts: float | None = None
        """The pending record's time, once a tool call of the same line needed it."""
        self.calls: list[tuple[int, SessionKey, msgspec.Raw]] = []
        self.results: list[tuple[int, SessionKey, msgspec.Raw]] = []
        """Tool calls and results whose input/output hash is not computed yet (`hash_tail`)."""

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
        """Decode every complete line and turn user/assistant records into events: all
        lines in one call when they are plain records (`decode_whole`), else one by one."""
        whole = decode_whole(data)
        starts = None
        records: Sequence[AnyRecord | Envelope]
        if whole is None:
            records, starts = self._decode_each(data)
            lines = data.count(b"\n")
        else:
            records, lines = whole, len(whole)
        feed = _Feed(data, starts)
        self._read(records, out, feed)
        self._flush(feed, out)
        hash_tail(feed.calls, out, short_hash)
        hash_tail(feed.results, out, output_hash)
        self.lines += lines
        self.offset += len(data)

    def _read(self, records: Sequence[AnyRecord | Envelope], out: list[Event], feed: _Feed) -> None:
        """The cold scan's hot path: one iteration per transcript line, hence the local
        aliases and the usage of an assistant line (most lines) read inline."""
        keys, from_path = _KEYS, self.session_from_path
        for line, record in enumerate(records):
            sid = record.sessionId
            if not self.announced and sid:
                self._announce(sid, record, out)
            message = record.message
            if message is None:
                continue
            if from_path or not sid:
                sid = self.session_id
            session = keys.get(sid) or session_key(sid)
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
                    if total:
                        self._usage(record, total, session, line, out, feed)  # type: ignore[arg-type]
                content = message.content
                if type(content) is list:
                    for index, block in enumerate(content):
                        if block.type == "tool_use":
                            self._tool_call(block, index, session, record, line, out, feed)  # type: ignore[arg-type]
            elif kind == "user" and type(message.content) is list:
                self._user(record, message.content, session, line, out, feed)  # type: ignore[arg-type]

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

    def _announce(self, sid: str, record: AnyRecord | Envelope, out: list[Event]) -> None:
        """One SessionInfo per file, so a session is listed before its first response."""
        self.announced = True
        if not self.session_from_path:
            self.session_id = sid
        model = ""
        if not isinstance(record, Envelope) and record.message is not None:
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

    def _usage(
        self,
        record: AnyRecord,
        total: int,
        session: SessionKey,
        line: int,
        out: list[Event],
        feed: _Feed,
    ) -> None:
        """Keep the line's usage as the pending copy of its response, unless it repeats the
        previous line's key without growing (a copy at least this large is already kept).
        The event is built only when the response's last copy is known."""
        mid = record.message.id  # type: ignore[union-attr]
        key = "claude:" + mid if mid else self._local_key(record, line, feed)
        if key == self.last_key:
            if total <= self.last_total:
                return
            self.last_total = total
            if feed.index >= 0:  # a larger copy replaces the pending one
                feed.record, feed.session, feed.ts = record, session, None
                return
        else:
            self._flush(feed, out)
            self.last_key, self.last_total = key, total
        feed.index = len(out)
        out.append(_PLACEHOLDER)
        feed.record, feed.session, feed.ts = record, session, None

    def _flush(self, feed: _Feed, out: list[Event]) -> None:
        """Build the pending response's event in its place in `out`."""
        if feed.index < 0:
            return
        record = feed.record
        message: Message = record.message  # type: ignore[assignment]
        usage: Usage = message.usage  # type: ignore[assignment]
        split = usage.cache_creation
        if split is None:
            write_5m, write_1h = usage.cache_creation_input_tokens, 0
        else:
            write_5m, write_1h = split.ephemeral_5m_input_tokens, split.ephemeral_1h_input_tokens
        tokens = TokenCounts(
            usage.input_tokens, usage.output_tokens, usage.cache_read_input_tokens,
            write_5m, write_1h,
        )  # fmt: skip
        ts = feed.ts
        out[feed.index] = UsageEvent(
            feed.session,
            self.last_key,
            epoch(record.timestamp) if ts is None else ts,
            message.model or "",
            tokens,
            record.cwd or "",
            record.gitBranch or "",
            record.costUSD,
            bool(record.isSidechain) or self.session_from_path,
            request_id=record.requestId or "",
        )
        feed.index = -1

    def _tool_call(
        self,
        block: Block,
        index: int,
        session: SessionKey,
        record: AnyRecord,
        line: int,
        out: list[Event],
        feed: _Feed,
    ) -> None:
        name = block.name
        call_id = block.id or f"{self._local_key(record, line, feed)}/{index}"
        if feed.index >= 0 and feed.record is record:  # the pending copy: its time is kept
            ts = feed.ts
            if ts is None:
                ts = feed.ts = epoch(record.timestamp)
        else:
            ts = epoch(record.timestamp)
        feed.calls.append((len(out), session, block.input))
        out.append(ToolCall(session, call_id, ts, name, "", name in FILE_CHANGING_TOOLS))

    def _local_key(self, record: AnyRecord, line: int, feed: _Feed) -> str:
        """A key for a record without message id: unique to this file and line."""
        return f"claude:{self.path}#{record.uuid or self.offset + feed.start(line)}"

    def _user(
        self,
        record: AnyRecord,
        blocks: list[Block],
        session: SessionKey,
        line: int,
        out: list[Event],
        feed: _Feed,
    ) -> None:
        """A ToolResult per tool_result block."""
        ts: float | None = None
        for index, block in enumerate(blocks):
            if block.type != "tool_result":
                continue
            if ts is None:
                ts = epoch(record.timestamp)
            call_id = block.tool_use_id or f"{self._local_key(record, line, feed)}/{index}"
            feed.results.append((len(out), session, block.content))
            out.append(ToolResult(session, call_id, ts, bool(block.is_error)))


HASHED_PER_SESSION = 2 * RECENT_TOOLS
"""Tool calls (and results) per session and feed whose hashes are computed: the loop
detectors only compare the ledger's last RECENT_TOOLS calls, and the older ones of a feed
are pushed out of that list by the newer ones of the same feed. Twice as many, so a
result whose call is still listed always has its hash."""


def hash_tail(
    to_hash: list[tuple[int, SessionKey, msgspec.Raw]],
    out: list[Event],
    digest: Callable[[bytes], str],
) -> None:
    """Fill in the input (or output) hashes of each session's latest tool calls (results).

    Hashing every tool output would read most of a transcript's bytes a second time; on a
    cold scan only the newest calls of each session ever reach the loop detectors. A feed
    is nearly always one session: then its last entries are taken as they are.
    """
    if len({session for _, session, _ in to_hash}) > 1:
        to_hash = _latest_per_session(to_hash)
    else:
        to_hash = to_hash[-HASHED_PER_SESSION:]
    replace = msgspec.structs.replace
    for index, _, raw in to_hash:
        event = out[index]
        if type(event) is ToolCall:
            out[index] = replace(event, input_hash=digest(raw))
        else:
            out[index] = replace(event, output_hash=digest(raw))


def _latest_per_session(
    to_hash: list[tuple[int, SessionKey, msgspec.Raw]],
) -> list[tuple[int, SessionKey, msgspec.Raw]]:
    left: dict[SessionKey, int] = {}
    latest = []
    for entry in reversed(to_hash):
        n = left.get(entry[1], HASHED_PER_SESSION)
        if n:
            left[entry[1]] = n - 1
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
