"""Kimi Code sessions: `~/.kimi-code/sessions/<wd>/<session>/agents/<agent>/wire.jsonl`.

Verified in MoonshotAI/kimi-code @d723cc47 (`apps/kimi-code/src/utils/paths.ts`: the data
dir is `$KIMI_CODE_HOME`, else `~/.kimi-code`; `packages/agent-core-v2/src/agent/usage/
usageOps.ts` and `llmRequester/llmRequesterService.ts`: every model call writes one durable
`usage.record {agentId, model, usage {inputOther, output, inputCacheRead,
inputCacheCreation}, usageScope}`; the four counts are disjoint). A turn's step also writes
the same usage inside `context.append_loop_event` / `step.end`, with no model: only
`usage.record` is read, so each call counts once, and the `usageScope: "session"` record a
compaction's own call writes (it has no `step.end` twin) counts too. Every agent of a
session (`agents/main`, sub-agents `agents/agent-N`) counts toward that session.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import msgspec

from tokentop.model import Event, SessionInfo, SessionKey, TokenCounts, UsageEvent
from tokentop.sources.base import (
    Count,
    DirSource,
    bounded_ts,
    env_dirs,
    name_text,
    parse_iso,
)
from tokentop.sources.jsonlines import JsonLinesParser
from tokentop.sources.wholefile import read_side_file

AGENT = "kimi"


class _Usage(msgspec.Struct, gc=False):
    inputOther: Count = 0
    output: Count = 0
    inputCacheRead: Count = 0
    inputCacheCreation: Count = 0


class _Step(msgspec.Struct, gc=False):
    usage: _Usage | None = None


class _Record(msgspec.Struct, gc=False):
    type: str = ""
    model: str = ""
    usage: _Usage | None = None
    event: _Step | None = None
    """A `step.end`'s twin of the usage: decoded (a broken one is a bad line), not counted."""
    time: float = 0.0


class _State(msgspec.Struct, gc=False):
    workDir: str = ""
    createdAt: str = ""


_RECORD = msgspec.json.Decoder(_Record)
_STATE = msgspec.json.Decoder(_State)


class KimiSource(DirSource):
    """Finds every agent's `wire.jsonl` under each Kimi Code home's `sessions/`."""

    name: ClassVar[str] = AGENT

    @staticmethod
    def default_dirs(env: Mapping[str, str]) -> list[Path]:
        listed = env_dirs(env, "KIMI_CODE_HOME")
        return listed or [Path(env.get("HOME") or Path.home()) / ".kimi-code"]

    def roots_in(self, folder: Path) -> list[Path]:
        return [folder if folder.name == "sessions" else folder / "sessions"]

    def is_transcript(self, path: Path) -> bool:
        """An agent's `wire.jsonl` (any `.jsonl` in an agent's folder: the wire log is the
        one Kimi Code writes there)."""
        return path.suffix == ".jsonl" and path.parent.parent.name == "agents"

    def new_parser(self, path: Path) -> KimiFileParser:
        session_dir = path.parent.parent.parent
        state = read_side_file(session_dir / "state.json", _STATE) or _State()
        return KimiFileParser(
            path=name_text(path),
            session_id=name_text(session_dir.name),
            agent_id=name_text(path.parent.name),
            cwd=state.workDir,
            started=parse_iso(state.createdAt),
        )


class KimiFileParser(JsonLinesParser, tag="kimi"):
    """One agent's wire file; its `usage.record` lines count toward the session."""

    session_id: str = ""
    agent_id: str = ""
    cwd: str = ""
    started: float = 0.0
    announced: bool = False

    def line(self, raw: bytes, offset: int, out: list[Event]) -> None:
        key = SessionKey(AGENT, self.session_id)
        if not self.announced:
            self.announced = True
            out.append(SessionInfo(key, self.started, self.cwd))
        if b'"usage"' not in raw:
            return  # records without usage
        rec = _RECORD.decode(raw)
        if rec.type != "usage.record" or rec.usage is None:
            return
        u = rec.usage
        tokens = TokenCounts(
            input=u.inputOther,
            output=u.output,
            cache_read=u.inputCacheRead,
            cache_write_5m=u.inputCacheCreation,
        )
        if tokens.total:
            dedupe = f"{AGENT}:{self.session_id}:{self.agent_id}:{offset}"
            ts = bounded_ts(rec.time / 1000.0)
            out.append(UsageEvent(key, dedupe, ts, rec.model, tokens, self.cwd))
