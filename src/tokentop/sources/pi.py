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

from tokentop.model import Event, SessionInfo, SessionKey, TokenCounts, UsageEvent
from tokentop.sources.base import DirSource, bounded_ts, env_dirs, name_text, parse_iso
from tokentop.sources.jsonlines import JsonLinesParser
from tokentop.sources.pi_records import RECORD, Message, Record, own_cost, tokens_of, tool_events

AGENT = "pi"


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
        rec = RECORD.decode(raw)
        if rec.type == "session":
            self._header(rec, out)
        elif rec.type == "message" and rec.message is not None:
            self._message(rec, rec.message, offset, out)
        elif rec.type == "model_change" and rec.modelId:
            self.model = rec.modelId

    def _header(self, rec: Record, out: list[Event]) -> None:
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

    def _owner(self, rec: Record) -> tuple[SessionKey, str]:
        """The session an entry belongs to, and the cwd to file with it."""
        copied = self.parent and self.born and parse_iso(rec.timestamp or "") < self.born
        if copied:
            return SessionKey(AGENT, self.parent), ""
        return SessionKey(AGENT, self.session_id), self.cwd

    def _message(self, rec: Record, msg: Message, offset: int, out: list[Event]) -> None:
        key, cwd = self._owner(rec)
        ts = parse_iso(rec.timestamp or "")
        if msg.role == "assistant" and msg.usage is not None:
            tokens = tokens_of(msg.usage)
            if tokens.total:  # else an abort before anything was sent
                model = msg.model or self.model
                dedupe = self._dedupe(msg, rec, model, tokens, offset)
                cost = own_cost(msg.usage)
                out.append(
                    UsageEvent(key, dedupe, ts or _ms(msg), model, tokens, cwd, cost_usd=cost)
                )
        tool_events(key, msg, rec.id or f"@{offset}", ts, out)

    def _dedupe(self, msg: Message, rec: Record, model: str, t: TokenCounts, offset: int) -> str:
        """The same response in a parent, its branches and a migrated file: one key."""
        when = repr(msg.timestamp) if msg.timestamp is not None else rec.timestamp
        if not when:
            return f"{AGENT}:{self.session_id}:@{offset}"
        return f"{AGENT}:{when}:{model}:{t.input}:{t.output}:{t.cache_read}:{t.cache_write_5m}"


def _ms(msg: Message) -> float:
    """A message's own time (Unix ms), for entries without an ISO timestamp."""
    try:
        return bounded_ts((msg.timestamp or 0.0) / 1000.0)
    except (OverflowError, ValueError):
        return 0.0
