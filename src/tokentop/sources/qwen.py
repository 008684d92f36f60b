"""Qwen Code sessions: `~/.qwen/projects/<project>/chats/<session id>.jsonl`.

Qwen Code is a Gemini CLI fork whose recorder writes Claude-Code-like records (verified in
QwenLM/qwen-code @015346f1, `packages/core/src/services/chatRecordingService.ts`: a
`ChatRecord` per line with `uuid`, `parentUuid`, `sessionId`, `timestamp`, `type`
(`user`/`assistant`/`tool_result`/`system`), `cwd`, `gitBranch`; assistant records carry
`model` and Gemini's `usageMetadata {promptTokenCount, candidatesTokenCount,
thoughtsTokenCount, cachedContentTokenCount}`). The same counts are written again in
`system` records of subtype `ui_telemetry` (`qwen-code.api_response`): only the assistant
record is read. A message written again under the same `uuid` is one response: it is keyed
`qwen:<session>:<uuid>` and counts once, at its largest. Rewound messages were billed and
stay counted. Token kinds follow Gemini's (as in `gemini.py`): the prompt includes the
cached tokens, thoughts are billed as output.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import msgspec

from tokentop.model import Event, SessionInfo, SessionKey, TokenCounts, UsageEvent
from tokentop.sources.base import Count, DirSource, env_dirs, name_text, parse_iso
from tokentop.sources.jsonlines import JsonLinesParser

AGENT = "qwen"


class _Usage(msgspec.Struct, gc=False):
    promptTokenCount: Count | None = 0
    candidatesTokenCount: Count | None = 0
    thoughtsTokenCount: Count | None = 0
    cachedContentTokenCount: Count | None = 0
    toolUsePromptTokenCount: Count | None = 0


class _Record(msgspec.Struct, gc=False):
    type: str = ""
    uuid: str = ""
    sessionId: str = ""
    timestamp: str = ""
    cwd: str = ""
    gitBranch: str | None = None
    model: str | None = None
    usageMetadata: _Usage | None = None


_RECORD = msgspec.json.Decoder(_Record)


class QwenSource(DirSource):
    """Finds chat files under every Qwen home's `projects/*/chats/`."""

    name: ClassVar[str] = AGENT

    @staticmethod
    def default_dirs(env: Mapping[str, str]) -> list[Path]:
        listed = env_dirs(env, "QWEN_HOME")
        return listed or [Path(env.get("HOME") or Path.home()) / ".qwen"]

    def roots_in(self, folder: Path) -> list[Path]:
        return [folder if folder.name == "projects" else folder / "projects"]

    def is_transcript(self, path: Path) -> bool:
        return path.suffix == ".jsonl" and path.parent.name == "chats"

    def new_parser(self, path: Path) -> QwenFileParser:
        return QwenFileParser(path=name_text(path), session_id=name_text(path.stem))


def usage_counts(u: _Usage) -> TokenCounts:
    """Gemini's counts split into disjoint kinds (the prompt includes the cached part)."""
    prompt = u.promptTokenCount or 0
    cached = min(u.cachedContentTokenCount or 0, prompt)
    return TokenCounts(
        input=prompt - cached + (u.toolUsePromptTokenCount or 0),
        output=u.candidatesTokenCount or 0,
        cache_read=cached,
        reasoning=u.thoughtsTokenCount or 0,
    )


class QwenFileParser(JsonLinesParser, tag="qwen"):
    """One chat file; the session id is the records', else the file stem."""

    session_id: str = ""
    announced: bool = False

    def line(self, raw: bytes, offset: int, out: list[Event]) -> None:
        if b'"assistant"' not in raw and self.announced:
            return  # user, tool and telemetry records carry nothing counted
        rec = _RECORD.decode(raw)
        ts = parse_iso(rec.timestamp)
        if not self.announced and rec.sessionId:
            self.announced = True
            self.session_id = name_text(rec.sessionId)
            key = SessionKey(AGENT, self.session_id)
            out.append(SessionInfo(key, ts, rec.cwd, rec.gitBranch or ""))
        if rec.type != "assistant" or rec.usageMetadata is None:
            return
        tokens = usage_counts(rec.usageMetadata)
        if tokens.total:
            key = SessionKey(AGENT, self.session_id)
            dedupe = f"{AGENT}:{self.session_id}:{rec.uuid or f'@{offset}'}"
            model = rec.model or ""
            out.append(UsageEvent(key, dedupe, ts, model, tokens, rec.cwd, rec.gitBranch or ""))
