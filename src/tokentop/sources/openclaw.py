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

from tokentop.model import Event, SessionInfo, SessionKey, UsageEvent
from tokentop.sources.base import DirSource, env_dirs, name_text, parse_iso
from tokentop.sources.jsonlines import JsonLinesParser
from tokentop.sources.pi_records import RECORD, Message, Record, own_cost, tokens_of, tool_events

AGENT = "openclaw"
LEGACY_DIRS = (".openclaw", ".clawdbot", ".moltbot", ".moldbot")
_ARCHIVED = re.compile(r"\.jsonl\.(?:deleted|reset)\.[^/]+$")


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
        rec = RECORD.decode(raw)
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

    def _header(self, rec: Record, out: list[Event]) -> None:
        if self.announced:
            return
        self.announced = True
        self.session_id = rec.id or self.session_id
        self.cwd = rec.cwd or ""
        out.append(SessionInfo(self._key(), parse_iso(rec.timestamp or ""), self.cwd))

    def _message(self, rec: Record, msg: Message, offset: int, out: list[Event]) -> None:
        ts = parse_iso(rec.timestamp or "")
        record_id = rec.id or f"@{offset}"
        if msg.role == "assistant" and msg.usage is not None:
            tokens = tokens_of(msg.usage)
            if tokens.total:  # else an error retry: nothing was billed
                key = f"{AGENT}:{self.session_id}:{record_id}"
                model = msg.model or self.model
                cost = own_cost(msg.usage)
                out.append(UsageEvent(self._key(), key, ts, model, tokens, self.cwd, cost_usd=cost))
        tool_events(self._key(), msg, record_id, ts, out)
