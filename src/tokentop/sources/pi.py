"""Pi coding agent sessions: `~/.pi/agent/sessions/--<cwd>--/<timestamp>_<session id>.jsonl`.

Verified in badlogic/pi-mono @83378aad, `packages/coding-agent/src/core/session-manager.ts`
(and `docs/session.md`, `src/config.ts`): the agent dir is `$PI_CODING_AGENT_DIR`, else
`~/.pi/agent`; every entry is appended with `appendFileSync` (the file is written only once
the first assistant message exists, then whole, then line by line); the first line is the
header `{"type":"session","id","timestamp","cwd","parentSession"?}` (`branchedFrom` before
the tree format, commit 989af797). Assistant `message` entries carry
`usage {input, output, cacheRead, cacheWrite, totalTokens, cost{…, total}}` (input excludes
the cache), `model`, `provider`, `stopReason` and the message's own `timestamp` (ms).
Aborted and error responses keep their usage: they were billed, so they count.

Branches (`createBranchedSession`) and forks (`forkFrom`) copy the parent's entries into
the new file unchanged, older than the new header. Those copies are the parent's spending:
they are keyed by content (message timestamp, model and counts, none of which a copy or the
v1 -> v3 in-place migration changes) and filed under the parent's session id (taken from the
parent file's name, never opened), so a branch next to its parent counts each response
once, in the parent, whichever file is read first. Pi's recorded `cost.total` is used when
above zero, as for OpenClaw. Pi files written before 2025-12-03 with an OpenAI provider
counted cached tokens inside `input` too (pi-ai fixed it then); they are read as written.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import msgspec

from tokentop.model import (
    Event,
    SessionInfo,
    SessionKey,
    TokenCounts,
    ToolCall,
    ToolResult,
    UsageEvent,
)
from tokentop.sources.base import (
    FILE_CHANGING_TOOLS,
    Count,
    DirSource,
    bounded_ts,
    env_dirs,
    name_text,
    parse_iso,
    short_hash,
)
from tokentop.sources.jsonlines import JsonLinesParser

AGENT = "pi"
_CHANGING = FILE_CHANGING_TOOLS | {"write", "edit"}


class _Cost(msgspec.Struct, gc=False):
    total: float = 0.0


class _Usage(msgspec.Struct, gc=False):
    input: Count = 0
    output: Count = 0
    cacheRead: Count = 0
    cacheWrite: Count = 0
    cost: _Cost | None = None


class _Block(msgspec.Struct, gc=False):
    type: str = ""
    id: str = ""
    name: str = ""
    arguments: msgspec.Raw = msgspec.Raw(b"null")


class _Message(msgspec.Struct, gc=False):
    role: str = ""
    model: str | None = None
    usage: _Usage | None = None
    timestamp: float | None = None
    content: list[_Block] | str | None = None
    toolCallId: str | None = None
    isError: bool | None = None


class _Record(msgspec.Struct, gc=False):
    type: str = ""
    id: str | None = None
    timestamp: str | None = None
    cwd: str | None = None
    parentSession: str | None = None
    branchedFrom: str | None = None
    modelId: str | None = None
    message: _Message | None = None


_RECORD = msgspec.json.Decoder(_Record)


class PiSource(DirSource):
    """Finds session files under every Pi agent dir's `sessions/`."""

    name: ClassVar[str] = AGENT

    @staticmethod
    def default_dirs(env: Mapping[str, str]) -> list[Path]:
        return pi_dirs(env)

    def roots_in(self, folder: Path) -> list[Path]:
        return [folder if folder.name == "sessions" else folder / "sessions"]

    def new_parser(self, path: Path) -> PiFileParser:
        return PiFileParser(path=name_text(path), session_id=session_of(path.name))


def pi_dirs(env: Mapping[str, str]) -> list[Path]:
    """`$PI_CODING_AGENT_DIR` (as Pi itself reads it), else `~/.pi/agent`."""
    listed = env_dirs(env, "PI_CODING_AGENT_DIR")
    if listed:
        return listed
    return [Path(env.get("HOME") or Path.home()) / ".pi" / "agent"]


def session_of(file_name: str) -> str:
    """`<timestamp>_<session id>.jsonl` -> the session id (the whole stem if it has no `_`)."""
    stem = file_name.removesuffix(".jsonl")
    return name_text(stem.split("_", 1)[1] if "_" in stem else stem)


class PiFileParser(JsonLinesParser, tag="pi"):
    """One session file; copies of a parent's entries are filed under the parent."""

    session_id: str = ""
    cwd: str = ""
    model: str = ""
    parent: str = ""
    """The session this one was branched or forked from ("" for none)."""
    born: float = 0.0
    """The header's time: entries older than it in a branch are the parent's copies."""
    announced: bool = False

    def line(self, raw: bytes, offset: int, out: list[Event]) -> None:
        rec = _RECORD.decode(raw)
        if rec.type == "session":
            self._header(rec, out)
        elif rec.type == "message" and rec.message is not None:
            self._message(rec, rec.message, offset, out)
        elif rec.type == "model_change" and rec.modelId:
            self.model = rec.modelId

    def _header(self, rec: _Record, out: list[Event]) -> None:
        if self.announced:
            return
        self.announced = True
        self.session_id = name_text(rec.id or self.session_id)
        self.cwd = rec.cwd or ""
        self.model = rec.modelId or self.model
        origin = rec.parentSession or rec.branchedFrom or ""
        self.parent = session_of(os.path.basename(origin)) if origin else ""
        self.born = parse_iso(rec.timestamp or "")
        key = SessionKey(AGENT, self.session_id)
        out.append(SessionInfo(key, self.born, self.cwd, parent=self.parent))

    def _owner(self, rec: _Record) -> tuple[SessionKey, str]:
        """The session an entry belongs to, and the cwd to file with it."""
        copied = self.parent and self.born and parse_iso(rec.timestamp or "") < self.born
        if copied:
            return SessionKey(AGENT, self.parent), ""
        return SessionKey(AGENT, self.session_id), self.cwd

    def _message(self, rec: _Record, msg: _Message, offset: int, out: list[Event]) -> None:
        key, cwd = self._owner(rec)
        ts = parse_iso(rec.timestamp or "")
        if msg.role == "assistant":
            self._usage(key, cwd, msg, rec, offset, ts, out)
            self._tool_calls(key, msg, rec.id or f"@{offset}", ts, out)
        elif msg.role == "toolResult" and msg.toolCallId:
            out.append(ToolResult(key, msg.toolCallId, ts, bool(msg.isError)))

    def _usage(
        self,
        key: SessionKey,
        cwd: str,
        msg: _Message,
        rec: _Record,
        offset: int,
        ts: float,
        out: list[Event],
    ) -> None:
        u = msg.usage
        if u is None:
            return
        tokens = TokenCounts(
            input=u.input, output=u.output, cache_read=u.cacheRead, cache_write_5m=u.cacheWrite
        )
        if not tokens.total:
            return  # an abort before anything was sent
        model = msg.model or self.model
        cost = u.cost.total if u.cost is not None and u.cost.total > 0 else None
        dedupe = self._dedupe(msg, rec, model, tokens, offset)
        out.append(UsageEvent(key, dedupe, ts or _ms(msg), model, tokens, cwd, cost_usd=cost))

    def _dedupe(self, msg: _Message, rec: _Record, model: str, t: TokenCounts, offset: int) -> str:
        """The same response in a parent, its branches and a migrated file: one key."""
        when = repr(msg.timestamp) if msg.timestamp is not None else rec.timestamp
        if not when:
            return f"{AGENT}:{self.session_id}:@{offset}"
        return f"{AGENT}:{when}:{model}:{t.input}:{t.output}:{t.cache_read}:{t.cache_write_5m}"

    def _tool_calls(
        self, key: SessionKey, msg: _Message, record_id: str, ts: float, out: list[Event]
    ) -> None:
        for index, block in enumerate(msg.content if isinstance(msg.content, list) else ()):
            if block.type == "toolCall":
                call_id = block.id or f"{key.session_id}:{record_id}/{index}"
                args = short_hash(block.arguments)
                out.append(ToolCall(key, call_id, ts, block.name, args, block.name in _CHANGING))


def _ms(msg: _Message) -> float:
    """A message's own time (Unix ms), for entries without an ISO timestamp."""
    try:
        return bounded_ts((msg.timestamp or 0.0) / 1000.0)
    except (OverflowError, ValueError):
        return 0.0
