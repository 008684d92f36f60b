"""Cline sessions, files rewritten whole: the CLI's `<id>.messages.json` and the VS Code
extensions' `ui_messages.json`.

Cline CLI 3.x (verified in cline/cline @21cb8d25, `sdk/packages/core/src/services/
session-artifacts.ts`, `extensions/context/basic-compaction.ts`, `agents/src/
agent-runtime.ts`, `llms/src/providers/ai-sdk.ts`): `$CLINE_DATA_DIR` (else `$CLINE_DIR/data`,
else `~/.cline/data`) holds `sessions/<id>/<id>.json` (cwd, model, a fork's parent) and
`<id>.messages.json`, one JSON document rewritten on every update. Each assistant message
carries `metrics {inputTokens, outputTokens, cacheReadTokens, cacheWriteTokens, cost}` and
`modelInfo.id`; `inputTokens` is the AI SDK's total input, cache reads and writes included.
A compaction strips the metrics of every message and keeps their sum, added to the previous
compaction's, in the first message's `metadata.usageBefore`.

So a file is re-read and replaced, never appended to: every message is keyed by its id (a
re-read repeats the same keys, and a fork's copied messages keep theirs), and what a
compaction folded away counts under one key per session, `usageBefore` minus the messages
this parser already counted one by one and no longer sees (a cold scan of a compacted file
counts `usageBefore` whole; a live one adds nothing). Messages a fork copied (older than
its `forkedAt`) are filed under the parent session. Cline's recorded cost is used.

The VS Code extension family (Cline, Roo Code, Kilo Code; `globalStorage/<extension>/
tasks/<id>/ui_messages.json`, from their documented format, no real file seen): each
`say: "api_req_started"` message's `text` is JSON with `tokensIn` (without cache),
`tokensOut`, `cacheWrites`, `cacheReads` and `cost`; it is keyed by task and timestamp.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import msgspec

from tokentop.model import Event, SessionInfo, SessionKey, TokenCounts, UsageEvent
from tokentop.sources.base import Count, DirSource, FileParser, bounded_ts, name_text, parse_iso
from tokentop.sources.jsonlines import DECODE_ERRORS
from tokentop.sources.wholefile import WholeFileParser, os_name, read_side_file

AGENT = "cline"
EXTENSIONS = ("saoudrizwan.claude-dev", "rooveterinaryinc.roo-cline", "kilocode.kilo-code")
EDITORS = ("Code", "Code - Insiders", "VSCodium", "Cursor")


class _Metrics(msgspec.Struct, gc=False):
    inputTokens: Count = 0
    outputTokens: Count = 0
    cacheReadTokens: Count = 0
    cacheWriteTokens: Count = 0
    cost: float = 0.0


class _ModelInfo(msgspec.Struct, gc=False):
    id: str = ""


class _Meta(msgspec.Struct, gc=False):
    kind: str = ""
    usageBefore: _Metrics | None = None


class _Message(msgspec.Struct, gc=False):
    id: str = ""
    role: str = ""
    ts: float = 0.0
    modelInfo: _ModelInfo | None = None
    metrics: _Metrics | None = None
    metadata: _Meta | None = None


class _Document(msgspec.Struct, gc=False):
    sessionId: str = ""
    messages: list[_Message] = msgspec.field(default_factory=list)


class _Fork(msgspec.Struct, gc=False):
    forkedFromSessionId: str = ""
    forkedAt: str = ""


class _SessionMeta(msgspec.Struct, gc=False):
    fork: _Fork | None = None


class _Session(msgspec.Struct, gc=False):
    cwd: str = ""
    model: str = ""
    started_at: str = ""
    metadata: _SessionMeta | None = None


class _UiMessage(msgspec.Struct, gc=False):
    ts: float = 0.0
    say: str = ""
    text: str | None = None


class _ApiRequest(msgspec.Struct, gc=False):
    tokensIn: Count = 0
    tokensOut: Count = 0
    cacheWrites: Count = 0
    cacheReads: Count = 0
    cost: float = 0.0


_DOCUMENT = msgspec.json.Decoder(_Document)
_SESSION = msgspec.json.Decoder(_Session)
_UI = msgspec.json.Decoder(list[_UiMessage])
_API = msgspec.json.Decoder(_ApiRequest)


class ClineSource(DirSource):
    """The CLI's `sessions/` and the VS Code extensions' `tasks/` folders."""

    name: ClassVar[str] = AGENT
    suffixes: ClassVar[tuple[str, ...]] = (".json",)

    @staticmethod
    def default_dirs(env: Mapping[str, str]) -> list[Path]:
        return cline_dirs(env)

    def roots_in(self, folder: Path) -> list[Path]:
        if folder.name in ("sessions", "tasks"):
            return [folder]
        if folder.name in EXTENSIONS or (folder / "tasks").is_dir():
            return [folder / "tasks"]
        return [folder / "sessions"]

    def is_transcript(self, path: Path) -> bool:
        if path.name.endswith(".messages.json"):
            return path.parent.parent.name == "sessions"
        return path.name == "ui_messages.json" and path.parent.parent.name == "tasks"

    def new_parser(self, path: Path) -> FileParser:
        if path.name == "ui_messages.json":
            return ClineTaskParser(
                path=name_text(path), os_path=os_name(path), task_id=name_text(path.parent.name)
            )
        session = path.name.removesuffix(".messages.json")
        return ClineSessionParser(
            path=name_text(path), os_path=os_name(path), session_id=name_text(session)
        )


def cline_dirs(env: Mapping[str, str]) -> list[Path]:
    """The CLI's data dir (`$CLINE_DATA_DIR`, `$CLINE_DIR/data`, `~/.cline/data`) and every
    VS Code-family editor's storage of the three extensions."""
    home = Path(env.get("HOME") or Path.home())
    if env.get("CLINE_DATA_DIR"):
        cli = Path(env["CLINE_DATA_DIR"])
    else:
        cli = Path(env.get("CLINE_DIR") or home / ".cline") / "data"
    config = Path(env.get("XDG_CONFIG_HOME") or home / ".config")
    bases = [config, home / "Library" / "Application Support"]
    editors = [base / editor / "User" / "globalStorage" for base in bases for editor in EDITORS]
    return [cli, *(storage / extension for storage in editors for extension in EXTENSIONS)]


def metric_counts(m: _Metrics) -> TokenCounts:
    """Cline's AI SDK totals split: input without the cache reads and writes it includes."""
    cached = m.cacheReadTokens + m.cacheWriteTokens
    return TokenCounts(
        input=max(0, m.inputTokens - cached),
        output=m.outputTokens,
        cache_read=m.cacheReadTokens,
        cache_write_5m=m.cacheWriteTokens,
    )


class ClineSessionParser(WholeFileParser, tag="cline"):
    """A CLI `<id>.messages.json`, re-read whole (see the module doc)."""

    session_id: str = ""
    counted: dict[str, list[float]] = msgspec.field(default_factory=dict)
    """Messages counted one by one: their TokenCounts fields and cost."""

    def parse_whole(self, data: bytes, out: list[Event]) -> str:
        try:
            doc = _DOCUMENT.decode(data)
        except DECODE_ERRORS as exc:
            return f"not a Cline messages file: {exc}"
        meta = self._session_meta()
        self.session_id = name_text(doc.sessionId or self.session_id)
        key = SessionKey(AGENT, self.session_id)
        fork = meta.metadata.fork if meta.metadata and meta.metadata.fork else None
        parent = name_text(fork.forkedFromSessionId) if fork else ""
        out.append(SessionInfo(key, parse_iso(meta.started_at), meta.cwd, parent=parent))
        forked_at = parse_iso(fork.forkedAt) * 1000 if fork and parent else 0.0
        self.lines = len(doc.messages)
        seen: set[str] = set()
        for msg in doc.messages:
            owner = SessionKey(AGENT, parent) if msg.ts and msg.ts < forked_at else key
            self._message(owner, msg, meta, seen, out)
        self._compacted(key, doc, meta, seen, out)
        return ""

    def _session_meta(self) -> _Session:
        """`<id>.json` beside the messages: cwd, model, fork (absent or bad: nothing)."""
        path = self.fs_path().removesuffix(".messages.json") + ".json"
        return read_side_file(path, _SESSION) or _Session()

    def _message(
        self, owner: SessionKey, msg: _Message, meta: _Session, seen: set[str], out: list[Event]
    ) -> None:
        m = msg.metrics
        if msg.role != "assistant" or m is None or not msg.id:
            return
        tokens = metric_counts(m)
        seen.add(msg.id)
        self.counted[msg.id] = [*msgspec.structs.astuple(tokens), max(m.cost, 0.0)]
        if not tokens.total:
            return
        ts = bounded_ts(msg.ts / 1000.0)
        model = msg.modelInfo.id if msg.modelInfo and msg.modelInfo.id else meta.model
        cost = m.cost if m.cost > 0 else None
        cwd = meta.cwd if owner.session_id == self.session_id else ""
        dedupe = f"{AGENT}:{msg.id}"
        out.append(UsageEvent(owner, dedupe, ts, model, tokens, cwd, cost_usd=cost))

    def _compacted(
        self, key: SessionKey, doc: _Document, meta: _Session, seen: set[str], out: list[Event]
    ) -> None:
        """What compactions folded away and this parser never counted one by one."""
        first = doc.messages[0] if doc.messages else None
        before = first.metadata.usageBefore if first and first.metadata else None
        if before is None:
            return
        folded = [v for k, v in self.counted.items() if k not in seen]
        whole = [*msgspec.structs.astuple(metric_counts(before)), before.cost]
        rest = [max(0.0, w - sum(f[i] for f in folded)) for i, w in enumerate(whole)]
        tokens = TokenCounts(*(int(n) for n in rest[:6]))
        if not tokens.total:
            return
        ts = bounded_ts(first.ts / 1000.0) if first else 0.0
        cost = rest[6] if rest[6] > 0 else None
        dedupe = f"{AGENT}:{self.session_id}:compacted"
        out.append(UsageEvent(key, dedupe, ts, meta.model, tokens, meta.cwd, cost_usd=cost))


class ClineTaskParser(WholeFileParser, tag="cline-task"):
    """A VS Code extension's `ui_messages.json`, re-read whole."""

    task_id: str = ""

    def parse_whole(self, data: bytes, out: list[Event]) -> str:
        try:
            messages = _UI.decode(data)
        except DECODE_ERRORS as exc:
            return f"not a Cline task file: {exc}"
        key = SessionKey(AGENT, self.task_id)
        self.lines = len(messages)
        first = bounded_ts(messages[0].ts / 1000.0) if messages else 0.0
        out.append(SessionInfo(key, first))
        for msg in messages:
            if msg.say == "api_req_started" and msg.text:
                self._request(key, msg, out)
        return ""

    def _request(self, key: SessionKey, msg: _UiMessage, out: list[Event]) -> None:
        try:
            req = _API.decode(msg.text or "")
        except DECODE_ERRORS:
            self.bad_lines += 1  # one request's text is broken; the file goes on
            return
        tokens = TokenCounts(
            input=req.tokensIn,
            output=req.tokensOut,
            cache_read=req.cacheReads,
            cache_write_5m=req.cacheWrites,
        )
        if tokens.total:
            cost = req.cost if req.cost > 0 else None
            dedupe = f"{AGENT}:{self.task_id}:{msg.ts!r}"
            ts = bounded_ts(msg.ts / 1000.0)
            out.append(UsageEvent(key, dedupe, ts, "", tokens, cost_usd=cost))
