"""OpenClaw transcripts: `~/.openclaw/agents/<agent>/sessions/<session>.jsonl`.

Archived copies (`….jsonl.deleted.<ts>`, `….jsonl.reset.<ts>`) are read too: their tokens
were spent. The first line `{"type":"session","id",...,"cwd"}` names the session; assistant
`message` records carry `usage {input, output, cacheRead, cacheWrite, cost{total}}`, where
`input` excludes the cache. Each record is keyed `openclaw:<session>:<record id>`, so a
record seen in a live file and in its archive counts once. Error retries with all-zero usage
are skipped. `cost.total` is OpenClaw's own price and is used when above zero; a zero cost
(providers it cannot price) falls back to tokentop's price table.
"""

from __future__ import annotations

import re
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
    env_dirs,
    name_text,
    parse_iso,
    short_hash,
)
from tokentop.sources.jsonlines import JsonLinesParser

AGENT = "openclaw"
LEGACY_DIRS = (".openclaw", ".clawdbot", ".moltbot", ".moldbot")
_ARCHIVED = re.compile(r"\.jsonl\.(?:deleted|reset)\.[^/]+$")
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
    content: list[_Block] | str | None = None
    toolCallId: str | None = None
    isError: bool | None = None


class _Data(msgspec.Struct, gc=False):
    modelId: str | None = None


class _Record(msgspec.Struct, gc=False):
    type: str = ""
    id: str | None = None
    timestamp: str | None = None
    cwd: str | None = None
    message: _Message | None = None
    modelId: str | None = None
    customType: str | None = None
    data: _Data | None = None


_RECORD = msgspec.json.Decoder(_Record)


class OpenClawSource(DirSource):
    """Finds session transcripts under every OpenClaw state dir."""

    name: ClassVar[str] = AGENT
    suffixes: ClassVar[tuple[str, ...]] = ("",)  # archived copies end in a timestamp

    @staticmethod
    def default_dirs(env: Mapping[str, str]) -> list[Path]:
        return openclaw_dirs(env)

    def roots_in(self, folder: Path) -> list[Path]:
        return [folder if folder.name == "agents" else folder / "agents"]

    def is_transcript(self, path: Path) -> bool:
        if path.parent.name != "sessions":
            return False
        return path.suffix == ".jsonl" or _ARCHIVED.search(path.name) is not None

    def new_parser(self, path: Path) -> OpenClawFileParser:
        session_id = name_text(path.name.split(".jsonl")[0])
        return OpenClawFileParser(path=name_text(path), session_id=session_id)


def openclaw_dirs(env: Mapping[str, str]) -> list[Path]:
    """`$OPENCLAW_DIR` (comma list, as ccusage), else `~/.openclaw` and its legacy names."""
    listed = env_dirs(env, "OPENCLAW_DIR")
    if listed:
        return listed
    home = Path(env.get("HOME") or Path.home())
    return [home / name for name in LEGACY_DIRS]


class OpenClawFileParser(JsonLinesParser, tag="openclaw"):
    """One transcript; the session id is the header's, else the file name's."""

    session_id: str = ""
    cwd: str = ""
    model: str = ""
    """The latest model-snapshot / model_change, for messages that name none."""
    announced: bool = False

    def line(self, raw: bytes, offset: int, out: list[Event]) -> None:
        rec = _RECORD.decode(raw)
        kind = rec.type
        if kind == "session":
            self._header(rec, out)
        elif kind == "message" and rec.message is not None:
            self._message(rec, rec.message, offset, out)
        elif kind == "model_change" and rec.modelId:
            self.model = rec.modelId
        elif kind == "custom" and rec.customType == "model-snapshot" and rec.data:
            self.model = rec.data.modelId or self.model

    def _key(self) -> SessionKey:
        return SessionKey(AGENT, self.session_id)

    def _header(self, rec: _Record, out: list[Event]) -> None:
        if self.announced:
            return
        self.announced = True
        self.session_id = rec.id or self.session_id
        self.cwd = rec.cwd or ""
        out.append(SessionInfo(self._key(), parse_iso(rec.timestamp or ""), self.cwd))

    def _message(self, rec: _Record, msg: _Message, offset: int, out: list[Event]) -> None:
        ts = parse_iso(rec.timestamp or "")
        record_id = rec.id or f"@{offset}"
        if msg.role == "assistant":
            self._usage(msg, record_id, ts, out)
            for index, block in enumerate(msg.content if isinstance(msg.content, list) else ()):
                if block.type == "toolCall":
                    call_id = block.id or f"{self.session_id}:{record_id}/{index}"
                    name = block.name
                    args = short_hash(block.arguments)
                    out.append(ToolCall(self._key(), call_id, ts, name, args, name in _CHANGING))
        elif msg.role == "toolResult" and msg.toolCallId:
            out.append(ToolResult(self._key(), msg.toolCallId, ts, bool(msg.isError)))

    def _usage(self, msg: _Message, record_id: str, ts: float, out: list[Event]) -> None:
        u = msg.usage
        if u is None:
            return
        tokens = TokenCounts(
            input=max(u.input, 0),
            output=max(u.output, 0),
            cache_read=max(u.cacheRead, 0),
            cache_write_5m=max(u.cacheWrite, 0),
        )
        if not tokens.total:
            return  # an error retry: nothing was billed
        cost = u.cost.total if u.cost is not None and u.cost.total > 0 else None
        key = f"{AGENT}:{self.session_id}:{record_id}"
        model = msg.model or self.model
        out.append(UsageEvent(self._key(), key, ts, model, tokens, self.cwd, cost_usd=cost))
