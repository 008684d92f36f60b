"""OpenAI Codex CLI rollouts: `<CODEX_HOME>/{sessions,archived_sessions}/**/rollout-*-<uuid>.jsonl`.

Counting, per file: `token_count` events carry cumulative counters (`total_token_usage`),
often re-emitted as identical copies. A counted event is `total - previous total`; an equal
total is a re-emit. Without a total, `last_token_usage` counts. When a total goes backwards
(any field smaller) its `last` counts and it becomes the new baseline. The first total of a
file counts only when it equals its `last` (a fresh session); otherwise the counters were
seeded elsewhere (a compact fork holding only a `fork_reference` re-emits the parent's totals
at its first turn) and it only sets the baseline. `info: null` and zero deltas count nothing.

Replay rule. A file replays its parent when its own session_meta has `forked_from_id` or a
`source` naming `thread_spawn`, or when a session_meta with another id comes before any
total. Codex copies the parent's history in one burst right after the new header, while the
child's own first usage needs a model round trip; so the replay span is every record stamped
within `REPLAY_WINDOW_S` of the file's first timestamp, and the first later record closes it.
In the span, totals are not counted (their field-wise maximum becomes the baseline) and tool
calls and results, being the parent's, are not emitted. After it, a total not above the
baseline in every field is a late copy of a parent row (Codex appends the parent's unfinished
turn after the child's first turn_context): it counts nothing. Limits: a file without
timestamps never replays; a subagent whose first call returns within the window loses it.

Tokens: input = input_tokens - cached - cache_write (OpenAI's input includes both; the kinds
must be disjoint), cache_read = cached, output = output_tokens - reasoning, reasoning,
cache_write_5m = cache_write_input_tokens; each subtrahend is clamped to its minuend.

Dedupe keys: `codex:<session>:<in>/<cached>/<out>/<reasoning>/<cache_write>` of the
cumulative total (`~<n>:` before it after the n-th backwards reset): stable across re-reads
and archived copies, and distinct because totals strictly rise between counted events.
Events without a total use `codex:<session>:last:<timestamp>:<counts>`.

Rate limits: a `token_count` event also carries the account's own windows, `rate_limits`
(codex_limits.py). They become a LimitsSeen, also from events whose `info` is null (rate
limits only). A rate_limits object that does not fit is one bad line; its tokens still count.

Model: `info.model`, else the last turn_context model, else "gpt-5" as in ccusage. That
fallback is not flagged: a session without turn_context is priced as gpt-5.

Tool results are errors when the output records a non-zero exit code (`"exit_code": n` in
the JSON metadata at its end, or `Exit code: n` / `Process exited with code n` at its start)
or ends with `"success": false`.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import msgspec

from tokentop.model import (
    Event,
    LimitsSeen,
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
    bad_reason,
    env_dirs,
    name_text,
    parse_iso,
    short_hash,
)
from tokentop.sources.codex_limits import rate_limits
from tokentop.sources.codex_scan import select_lines

AGENT = "codex"
FALLBACK_MODEL = "gpt-5"
REPLAY_WINDOW_S = 1.0
"""How long after a fork's first record copied parent records may still arrive."""
_TOOL_CALLS = frozenset({"function_call", "custom_tool_call", "local_shell_call"})
_TOOL_OUTPUTS = frozenset({"function_call_output", "custom_tool_call_output"})
_SHELL_TOOLS = frozenset({"shell", "exec_command", "local_shell", "shell_command"})
_UUID_TAIL = re.compile(r"[0-9a-fA-F]{8}-(?:[0-9a-fA-F]{4}-){3}[0-9a-fA-F]{12}$")
_HEAD_EXIT = re.compile(rb"(?:Exit code:|exited with code)\s*(-?\d+)")
_TAIL_EXIT = re.compile(rb'exit_code\\?"\s*:\s*(-?\d+)')
_TAIL_FAIL = re.compile(rb'"success"\s*:\s*false')
_SPAWN_PARENT = re.compile(rb'"parent_thread_id"\s*:\s*"([^"\\]*)"')

Totals = tuple[int, int, int, int, int]
"""(input incl. cached, cached, output incl. reasoning, reasoning, cache writes)."""

# -- narrow record structs: only the fields read here, so msgspec skips the rest ------------


class _Envelope(msgspec.Struct, gc=False):
    timestamp: str | None = None
    type: str | None = None
    payload: msgspec.Raw = msgspec.Raw()
    id: Any = None
    """Only on the bare first line of very old rollouts: the session id."""


class _Git(msgspec.Struct, gc=False):
    branch: str | None = None


class _Header(msgspec.Struct, gc=False):
    """The payload of `session_meta` (id, fork fields, git) and of `turn_context` (model)."""

    id: str | None = None
    cwd: str | None = None
    model: str | None = None
    forked_from_id: str | None = None
    parent_thread_id: str | None = None
    source: msgspec.Raw = msgspec.Raw(b"null")
    git: _Git | None = None


class _Event(msgspec.Struct, gc=False):
    type: str | None = None
    info: msgspec.Raw = msgspec.Raw(b"null")
    rate_limits: msgspec.Raw = msgspec.Raw(b"null")


class _Usage(msgspec.Struct, gc=False):
    input_tokens: Count = 0
    cached_input_tokens: Count = 0
    output_tokens: Count = 0
    reasoning_output_tokens: Count = 0
    cache_write_input_tokens: Count | None = None


class _Info(msgspec.Struct, gc=False):
    total_token_usage: _Usage | None = None
    last_token_usage: _Usage | None = None
    model: str | None = None


class _Item(msgspec.Struct, gc=False):
    type: str | None = None
    name: str | None = None
    call_id: str | None = None
    arguments: msgspec.Raw = msgspec.Raw()
    input: msgspec.Raw = msgspec.Raw()
    action: msgspec.Raw = msgspec.Raw()
    output: msgspec.Raw = msgspec.Raw()


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_HEADER = msgspec.json.Decoder(_Header)
_EVENT = msgspec.json.Decoder(_Event)
_INFO = msgspec.json.Decoder(_Info | None)

_ITEM = msgspec.json.Decoder(_Item)
_DECODE_ERRORS = DECODE_ERRORS

# -- source ---------------------------------------------------------------------------------


class CodexSource(DirSource):
    """Finds rollouts under every Codex home, live and archived."""

    name: ClassVar[str] = AGENT
    layout: ClassVar[str] = "DIR/sessions/YYYY/MM/DD/rollout-*.jsonl (or DIR/archived_sessions/)"

    def __init__(self, homes: list[Path] | None = None, env: Mapping[str, str] | None = None):
        super().__init__(homes, env)

    @staticmethod
    def default_dirs(env: Mapping[str, str]) -> list[Path]:
        return codex_homes(env)

    def roots_in(self, folder: Path) -> list[Path]:
        return [folder / "sessions", folder / "archived_sessions"]

    def new_parser(self, path: Path) -> CodexFileParser:
        return CodexFileParser(
            path=name_text(path), session_id=name_text(session_id_from_name(path))
        )


def codex_homes(env: Mapping[str, str]) -> list[Path]:
    """`$CODEX_HOME` (a comma list is allowed, as in ccusage), else `~/.codex`."""
    return env_dirs(env, "CODEX_HOME") or [Path(env.get("HOME") or Path.home()) / ".codex"]


def session_id_from_name(path: Path) -> str:
    """The uuid ending `rollout-<time>-<uuid>.jsonl`; the bare file stem for other names."""
    match = _UUID_TAIL.search(path.stem)
    return match.group(0) if match else path.stem


# -- parser ---------------------------------------------------------------------------------


class CodexFileParser(FileParser, tag="codex"):
    """Turns complete rollout lines into events; all state is persisted with the offset."""

    session_id: str = ""
    """From the file name until the file's own session_meta names it."""
    locked: bool = False
    """An event was emitted under `session_id`; a late session_meta may not rename it."""
    own_meta: bool = False
    parent: str = ""
    cwd: str = ""
    branch: str = ""
    model: str = ""
    announced_model: str = ""
    first_ts: float = 0.0
    last_ts: float = 0.0
    replay: int = 0
    """0: not a fork; 1: fork, replay span open; 2: fork, span closed."""
    prev: Totals | None = None
    """The baseline: the previous cumulative total (or the replayed maximum)."""
    resets: int = 0
    """Backwards totals seen; keeps keys of different counter runs apart."""
    unstamped: int = 0
    """Events with neither total nor timestamp, numbered for their keys."""

    def feed(self, data: bytes, out: list[Event]) -> None:
        limit = MAX_LINE_BYTES
        picked = select_lines(data, self.lines == 0, limit)
        self.lines += picked.lines
        if picked.junk:
            self.bad("not a JSON object line (binary, text or blank)", picked.junk)
        if picked.overlong:
            self.bad(f"line over {limit} bytes skipped", picked.overlong)
        for line in picked.needed:
            self._line(line, out)

    def _line(self, line: bytes, out: list[Event]) -> None:
        try:
            env = _ENVELOPE.decode(line)
            self._record(env, line, out)
        except _DECODE_ERRORS as exc:
            self.bad(f"invalid record: {bad_reason(exc)}")

    def _record(self, env: _Envelope, line: bytes, out: list[Event]) -> None:
        ts = self._stamp(env.timestamp)
        kind = env.type
        if kind == "event_msg":
            self._event(_EVENT.decode(env.payload), env.timestamp or "", ts, out)
        elif kind == "response_item":
            self._item(_ITEM.decode(env.payload), ts, out)
        elif kind == "turn_context":
            self._turn(_HEADER.decode(env.payload), ts, out)
        elif kind == "session_meta":
            self._meta(_HEADER.decode(env.payload), ts, out)
        elif kind in _TOOL_CALLS or kind in _TOOL_OUTPUTS:
            if not env.payload:  # an old rollout: response items without envelope
                self._item(_ITEM.decode(line), ts, out)
        elif kind is None and isinstance(env.id, str) and env.id:
            self._meta(_Header(id=env.id), ts, out)

    def _stamp(self, value: str | None) -> float:
        ts = parse_iso(value) if value else 0.0
        if not ts:
            return self.last_ts
        if not self.first_ts:
            self.first_ts = ts
        self.last_ts = ts
        return ts

    def _in_replay(self, ts: float) -> bool:
        if self.replay != 1:
            return False
        if self.first_ts and ts - self.first_ts <= REPLAY_WINDOW_S:
            return True
        self.replay = 2
        return False

    def _key(self) -> SessionKey:
        self.locked = True
        return SessionKey(AGENT, self.session_id)

    # -- records ----------------------------------------------------------------------------

    def _meta(self, meta: _Header, ts: float, out: list[Event]) -> None:
        sid = meta.id or ""
        if not self.own_meta and (not self.locked or sid in ("", self.session_id)):
            self._own_meta(meta, ts, out)
        elif sid and sid != self.session_id and self.prev is None and self.replay == 0:
            self.replay = 1  # a copied parent header: the parent's history follows

    def _own_meta(self, meta: _Header, ts: float, out: list[Event]) -> None:
        self.own_meta = True
        self.session_id = meta.id or self.session_id
        self.cwd = meta.cwd or self.cwd
        self.branch = (meta.git.branch if meta.git else None) or self.branch
        source = bytes(meta.source)  # "cli", or {"subagent": {"thread_spawn": {...}}}
        spawned = b"thread_spawn" in source
        found = _SPAWN_PARENT.search(source) if spawned else None
        spawn_parent = found.group(1).decode(errors="replace") if found else ""
        self.parent = meta.forked_from_id or meta.parent_thread_id or spawn_parent
        if meta.forked_from_id or spawned:
            self.replay = 1
        out.append(SessionInfo(self._key(), ts, self.cwd, self.branch, self.model, self.parent))

    def _turn(self, turn: _Header, ts: float, out: list[Event]) -> None:
        self.model = turn.model or self.model
        self.cwd = turn.cwd or self.cwd
        if self._in_replay(ts) or self.model == self.announced_model:
            return
        self.announced_model = self.model
        out.append(SessionInfo(self._key(), ts, self.cwd, self.branch, self.model, self.parent))

    def _event(self, event: _Event, stamp: str, ts: float, out: list[Event]) -> None:
        if event.type != "token_count":
            return
        if event.rate_limits and not self._in_replay(ts):
            self._rate_limits(event.rate_limits, ts, out)
        info = _INFO.decode(event.info)
        if info is None:
            return  # rate limits only
        self.model = info.model or self.model
        total = _totals(info.total_token_usage)
        last = _totals(info.last_token_usage)
        if self._in_replay(ts):
            if total is not None:
                self.prev = total if self.prev is None else _maximum(self.prev, total)
        elif total is not None:
            self._total(total, last, ts, out)
        elif last is not None:
            self._last_only(last, stamp, ts, out)

    def _rate_limits(self, raw: msgspec.Raw, ts: float, out: list[Event]) -> None:
        try:
            limits = rate_limits(raw, ts)
        except _DECODE_ERRORS as exc:
            self.bad(f"unusable rate_limits: {bad_reason(exc)}")
            return
        if limits is not None:
            out.append(LimitsSeen(self._key(), limits))

    def _total(self, total: Totals, last: Totals | None, ts: float, out: list[Event]) -> None:
        prev = self.prev
        if prev == total:
            return  # a re-emitted copy
        if prev is None:
            self.prev = total
            if last is None or last == total:  # else seeded elsewhere: baseline only
                self._emit(total, total, ts, out)
        elif _at_least(total, prev):
            self.prev = total
            self._emit(_minus(total, prev), total, ts, out)
        elif not self.replay:  # counters went backwards: a new run starts here
            self.resets += 1
            self.prev = total
            if last is not None:
                self._emit(last, total, ts, out)

    def _emit(self, delta: Totals, total: Totals, ts: float, out: list[Event]) -> None:
        run = f"~{self.resets}:" if self.resets else ""
        self._usage(delta, f"codex:{self.session_id}:{run}{_fmt(total)}", ts, out)

    def _last_only(self, last: Totals, stamp: str, ts: float, out: list[Event]) -> None:
        if not stamp:
            self.unstamped += 1
            stamp = f"#{self.unstamped}"
        self._usage(last, f"codex:{self.session_id}:last:{stamp}:{_fmt(last)}", ts, out)

    def _usage(self, delta: Totals, key: str, ts: float, out: list[Event]) -> None:
        tokens = token_counts(delta)
        if not tokens.total:
            return
        model = self.model or FALLBACK_MODEL
        out.append(UsageEvent(self._key(), key, ts, model, tokens, self.cwd, self.branch))

    def _item(self, item: _Item, ts: float, out: list[Event]) -> None:
        kind = item.type
        if not item.call_id or not (kind in _TOOL_CALLS or kind in _TOOL_OUTPUTS):
            return
        if self._in_replay(ts):
            return  # the parent's calls, copied
        if kind in _TOOL_OUTPUTS:
            out.append(ToolResult(self._key(), item.call_id, ts, *tool_outcome(item.output)))
            return
        name = item.name or ("local_shell" if kind == "local_shell_call" else kind or "")
        args = item.arguments or item.input or item.action
        changing = name in FILE_CHANGING_TOOLS or (
            name in _SHELL_TOOLS and b"apply_patch" in bytes(args)
        )
        out.append(ToolCall(self._key(), item.call_id, ts, name, short_hash(args), changing))


# -- helpers --------------------------------------------------------------------------------


def _totals(usage: _Usage | None) -> Totals | None:
    if usage is None:
        return None
    return (
        usage.input_tokens,
        usage.cached_input_tokens,
        usage.output_tokens,
        usage.reasoning_output_tokens,
        usage.cache_write_input_tokens or 0,
    )


def _at_least(a: Totals, b: Totals) -> bool:
    return a[0] >= b[0] and a[1] >= b[1] and a[2] >= b[2] and a[3] >= b[3] and a[4] >= b[4]


def _minus(a: Totals, b: Totals) -> Totals:
    return (a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3], a[4] - b[4])


def _maximum(a: Totals, b: Totals) -> Totals:
    return (max(a[0], b[0]), max(a[1], b[1]), max(a[2], b[2]), max(a[3], b[3]), max(a[4], b[4]))


def _fmt(t: Totals) -> str:
    return f"{t[0]}/{t[1]}/{t[2]}/{t[3]}/{t[4]}"


def token_counts(t: Totals) -> TokenCounts:
    """Codex's overlapping counters split into disjoint billed kinds (see module doc)."""
    cached = min(t[1], t[0])
    written = min(t[4], t[0] - cached)
    reasoning = min(t[3], t[2])
    return TokenCounts(
        input=t[0] - cached - written,
        output=t[2] - reasoning,
        cache_read=cached,
        cache_write_5m=written,
        reasoning=reasoning,
    )


def tool_outcome(output: msgspec.Raw) -> tuple[bool, str]:
    """(is_error, fingerprint) of a tool output; crc32 + length, as outputs can be MBs."""
    view = memoryview(output)
    tail = view[-400:]
    match = _TAIL_EXIT.search(tail) or _HEAD_EXIT.search(view[:400])
    failed = int(match.group(1)) != 0 if match else _TAIL_FAIL.search(tail) is not None
    return failed, f"{zlib.crc32(view):08x}{len(view) & 0xFFFFFFFF:08x}"
