"""Gemini CLI sessions: `~/.gemini/tmp/<project>/chats/session-*.jsonl` (and legacy `.json`).

JSONL files start with a metadata line `{sessionId, projectHash, startTime, kind}`, then one
line per message, `{"$set": {...}}` metadata updates (`$set.messages` replaces the whole
list) and `{"$rewindTo": id}` markers. A `gemini` message is appended first without
`tokens` and re-appended with the same `id` once usage arrives, so each message is keyed
`gemini:<sessionId>:<message id>` and the ledger keeps its largest copy (last/max wins).
Until then its text is estimated with the tokenizer (marked estimated); the recorded usage
replaces the estimate, larger or smaller.
Rewound messages were billed, so their tokens stay counted.

Legacy `session-*.json` files are one JSON document rewritten on every update; they are
read whole on each change (see `wholefile`). Resuming one converts it to `.jsonl` by
re-appending every message under the same session and message ids, so the two files
count once together.

Tokens: `input` (promptTokenCount) includes `cached`; `thoughts` are billed as output and
kept as reasoning; `tool` (toolUsePromptTokenCount) is extra prompt input.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

import msgspec

from tokentop import tokens as tokens_mod
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
    FileParser,
    env_dirs,
    name_text,
    parse_iso,
    short_hash,
)
from tokentop.sources.jsonlines import DECODE_ERRORS, JsonLinesParser
from tokentop.sources.wholefile import WholeFileParser, os_name, read_regular, signature

AGENT = "gemini"
_DONE = frozenset({"success", "error", "cancelled"})


class _Tokens(msgspec.Struct, gc=False):
    input: Count = 0
    output: Count = 0
    cached: Count = 0
    thoughts: Count | None = 0
    tool: Count | None = 0


class _ToolCall(msgspec.Struct, gc=False):
    id: str = ""
    name: str = ""
    args: msgspec.Raw = msgspec.Raw(b"null")
    result: msgspec.Raw = msgspec.Raw(b"null")
    status: str = ""


class _Message(msgspec.Struct, gc=False):
    id: str = ""
    timestamp: str = ""
    type: str = ""
    model: str | None = None
    tokens: _Tokens | None = None
    toolCalls: list[_ToolCall] | None = None
    content: msgspec.Raw = msgspec.Raw(b"null")
    thoughts: msgspec.Raw = msgspec.Raw(b"null")
    """Kept raw: decoded only to estimate a message whose usage is not written yet."""


class _Set(msgspec.Struct, gc=False):
    sessionId: str | None = None
    messages: list[_Message] | None = None


class _Line(msgspec.Struct, gc=False):
    """Any JSONL record: metadata, message, `$set` or `$rewindTo` (told apart by fields)."""

    sessionId: str | None = None
    startTime: str | None = None
    kind: str | None = None
    id: str | None = None
    timestamp: str = ""
    type: str = ""
    model: str | None = None
    tokens: _Tokens | None = None
    toolCalls: list[_ToolCall] | None = None
    content: msgspec.Raw = msgspec.Raw(b"null")
    thoughts: msgspec.Raw = msgspec.Raw(b"null")
    set: _Set | None = msgspec.field(default=None, name="$set")


class _Conversation(msgspec.Struct, gc=False):
    sessionId: str = ""
    startTime: str = ""
    messages: list[_Message] = msgspec.field(default_factory=list)


_LINE = msgspec.json.Decoder(_Line)
_CONVERSATION = msgspec.json.Decoder(_Conversation)
_REGISTRY = msgspec.json.Decoder(dict[str, dict[str, str]])


class GeminiSource(DirSource):
    """Finds chat files under every Gemini CLI home's `tmp/`."""

    name: ClassVar[str] = AGENT
    suffixes: ClassVar[tuple[str, ...]] = (".jsonl", ".json")

    def __init__(self, homes: list[Path] | None = None, env: Mapping[str, str] | None = None):
        super().__init__(homes, env)
        self._registry: dict[Path, tuple[int, dict[str, str]]] = {}

    @staticmethod
    def default_dirs(env: Mapping[str, str]) -> list[Path]:
        return gemini_homes(env)

    def roots_in(self, folder: Path) -> list[Path]:
        tmp_itself = folder.name == "tmp" and not (folder / "tmp").is_dir()
        return [folder if tmp_itself else folder / "tmp"]

    def _projects(self, gemini_home: Path) -> dict[str, str]:
        """The home's project registry, re-read only when `projects.json` changes."""
        sig = signature(str(gemini_home / "projects.json"))
        stamp = sig[1] if sig else 0
        cached = self._registry.get(gemini_home)
        if cached is None or cached[0] != stamp:
            cached = self._registry[gemini_home] = (stamp, project_dirs(gemini_home))
        return cached[1]

    def is_transcript(self, path: Path) -> bool:
        if path.suffix == ".json" and not path.name.startswith("session-"):
            return False
        return path.suffix in self.suffixes and "chats" in path.parts[-3:-1]

    def new_parser(self, path: Path) -> FileParser:
        chats = path.parent if path.parent.name == "chats" else path.parent.parent
        parent = "" if chats == path.parent else path.parent.name
        cwd = self._projects(chats.parent.parent.parent).get(chats.parent.name, "")
        if path.suffix == ".json":
            return GeminiLegacyParser(
                path=name_text(path),
                os_path=os_name(path),
                session_id=name_text(path.stem),
                cwd=cwd,
            )
        return GeminiFileParser(
            path=name_text(path), session_id=name_text(path.stem), parent=name_text(parent), cwd=cwd
        )


def gemini_homes(env: Mapping[str, str]) -> list[Path]:
    """`$GEMINI_DATA_DIR` (comma list, as ccusage), else `$GEMINI_CLI_HOME/.gemini`, else
    `~/.gemini`."""
    listed = env_dirs(env, "GEMINI_DATA_DIR")
    if listed:
        return listed
    home = env.get("GEMINI_CLI_HOME") or env.get("HOME") or str(Path.home())
    return [Path(home) / ".gemini"]


def project_dirs(gemini_home: Path) -> dict[str, str]:
    """Project id -> absolute project path, from the `projects.json` registry of newer
    builds; older builds name folders by sha256 of the path, which cannot be reversed."""
    try:
        data = _REGISTRY.decode(read_regular(gemini_home / "projects.json"))
    except (OSError, *DECODE_ERRORS):
        return {}
    return {short: root for root, short in data.get("projects", {}).items()}


def token_counts(t: _Tokens) -> TokenCounts:
    cached = min(max(t.cached, 0), max(t.input, 0))
    return TokenCounts(
        input=max(t.input, 0) - cached + max(t.tool or 0, 0),
        output=max(t.output, 0),
        cache_read=cached,
        reasoning=max(t.thoughts or 0, 0),
    )


class _Part(msgspec.Struct, gc=False):
    text: str = ""


class _Thought(msgspec.Struct, gc=False):
    subject: str = ""
    description: str = ""


_CONTENT = msgspec.json.Decoder(str | list[_Part] | None)
_THOUGHTS = msgspec.json.Decoder(list[_Thought] | None)


def estimated_output(msg: _Message | _Line) -> TokenCounts:
    """The tokenizer's count of a message's text (output) and thoughts (reasoning)."""
    try:
        content = _CONTENT.decode(msg.content)
        thoughts = _THOUGHTS.decode(msg.thoughts) or []
    except DECODE_ERRORS:
        return TokenCounts()
    text = content if isinstance(content, str) else "".join(p.text for p in content or ())
    thought = "\n".join(f"{t.subject}\n{t.description}" for t in thoughts)
    if not text and not thought:
        return TokenCounts()
    count = tokens_mod.get_tokenizer().count
    return TokenCounts(
        output=count(text) if text else 0, reasoning=count(thought) if thought else 0
    )


class _Messages:
    """Message handling shared by the JSONL and legacy parsers (a slot-less mixin)."""

    __slots__ = ()
    session_id: str
    cwd: str

    def message(self, msg: _Message | _Line, out: list[Event]) -> None:
        """A message's usage (if recorded) and its tool calls and results."""
        if not msg.id:
            return
        key = SessionKey(AGENT, self.session_id)
        ts = parse_iso(msg.timestamp) if msg.timestamp else 0.0
        tokens = token_counts(msg.tokens) if msg.tokens is not None else None
        dedupe = f"{AGENT}:{self.session_id}:{msg.id}"
        if tokens is not None and tokens.total:
            out.append(UsageEvent(key, dedupe, ts, msg.model or "", tokens, self.cwd))
        elif msg.type == "gemini" and (estimate := estimated_output(msg)).total:
            # appended before its usage (still streaming): estimated until re-appended
            out.append(
                UsageEvent(key, dedupe, ts, msg.model or "", estimate, self.cwd, estimated=True)
            )
        for call in msg.toolCalls or ():
            if call.id:
                self.tool_call(key, ts, call, out)

    def tool_call(self, key: SessionKey, ts: float, call: _ToolCall, out: list[Event]) -> None:
        call_id = f"{AGENT}:{self.session_id}:{call.id}"
        name = call.name
        out.append(ToolCall(key, call_id, ts, name, short_hash(call.args), name in _CHANGING))
        if call.status in _DONE:
            failed = call.status == "error"
            out.append(ToolResult(key, call_id, ts, failed, short_hash(call.result)))


_CHANGING = FILE_CHANGING_TOOLS | {"write_file", "replace", "edit_file"}


class GeminiFileParser(JsonLinesParser, _Messages, tag="gemini"):
    """One `.jsonl` chat file; the session id is the metadata line's, else the file stem."""

    session_id: str = ""
    cwd: str = ""
    parent: str = ""
    announced: bool = False

    def line(self, raw: bytes, offset: int, out: list[Event]) -> None:
        rec = _LINE.decode(raw)
        if rec.id is None and rec.sessionId and not self.announced:
            self.announced = True
            self.session_id = rec.sessionId
            ts = parse_iso(rec.startTime or "")
            info = SessionInfo(SessionKey(AGENT, self.session_id), ts, self.cwd, parent=self.parent)
            out.append(info)
        elif rec.id is not None:
            self.message(rec, out)
        elif rec.set is not None:
            for msg in rec.set.messages or ():
                self.message(msg, out)


class GeminiLegacyParser(WholeFileParser, _Messages, tag="gemini-json"):
    """A legacy `session-*.json` document, re-read whole whenever it changes."""

    session_id: str = ""
    cwd: str = ""

    def parse_whole(self, data: bytes, out: list[Event]) -> str:
        try:
            doc = _CONVERSATION.decode(data)
        except DECODE_ERRORS as exc:
            return f"not a Gemini session document: {exc}"
        self.session_id = doc.sessionId or self.session_id
        key = SessionKey(AGENT, self.session_id)
        out.append(SessionInfo(key, parse_iso(doc.startTime), self.cwd))
        self.lines = len(doc.messages)
        for msg in doc.messages:
            self.message(msg, out)
        return ""
