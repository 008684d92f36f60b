"""GitHub Copilot CLI sessions: `~/.copilot/session-state/<session id>/events.jsonl`.

Verified against the CLI's own event schema as the official SDK generates it
(github/copilot-sdk @cc0438d6, `nodejs/src/generated/session-events.ts`, and
`docs/features/usage-and-billing.md`): per-call usage (`assistant.usage`) is ephemeral and
never written; what reaches the file is `assistant.message` with `outputTokens` and, when
the process ends, `session.shutdown` with `modelMetrics.<model>.usage {inputTokens,
outputTokens, cacheReadTokens, cacheWriteTokens, reasoningTokens?}`. Input and reasoning
follow OpenAI's convention (input includes cache reads; reasoning is part of output), as
the schema says of `reasoningTokens` and as a shutdown's own `tokenDetails.input` (input
without cache reads) shows. Older CLIs wrote only `tokenDetails {input, output, cache_read,
cache_write}` (input already without cache reads) and a request count per model.

Live, each response counts its recorded output and an estimated input (the conversation so
far, one token per 4 bytes: every call re-sends it), marked estimated, per model and
"leg" (the run up to the next shutdown). The shutdown's exact totals replace the estimate
under the same keys; a model estimated but absent from the shutdown is replaced by zero.
A shutdown whose metrics carry no usage at all keeps the estimates and says so on the file.
Resumed sessions append to the same file: shutdown metrics are running totals across legs
(copilot-sdk's usage tracker only adds), so each leg counts the difference from the last
shutdown; a total that went down means an older CLI that restarted its counters, and then
the shutdown counts whole.
"""

from __future__ import annotations

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
    MAX_COUNT,
    Count,
    DirSource,
    env_dirs,
    name_text,
    parse_iso,
    short_hash,
)
from tokentop.sources.jsonlines import JsonLinesParser

AGENT = "copilot"
BYTES_PER_TOKEN = 4
_CHANGING = frozenset({"create", "edit", "write", "str_replace_editor", "apply_patch"})


class _Context(msgspec.Struct, gc=False):
    cwd: str = ""
    branch: str = ""


class _Usage(msgspec.Struct, gc=False):
    inputTokens: Count = 0
    outputTokens: Count = 0
    cacheReadTokens: Count = 0
    cacheWriteTokens: Count = 0
    reasoningTokens: Count | None = 0


class _Metric(msgspec.Struct, gc=False):
    usage: _Usage | None = None


class _Detail(msgspec.Struct, gc=False):
    tokenCount: Count = 0


class _Request(msgspec.Struct, gc=False):
    toolCallId: str = ""
    name: str = ""
    arguments: msgspec.Raw = msgspec.Raw(b"null")


class _Result(msgspec.Struct, gc=False):
    content: str | None = None


class _Data(msgspec.Struct, gc=False):
    sessionId: str | None = None
    context: _Context | None = None
    selectedModel: str | None = None
    newModel: str | None = None
    model: str | None = None
    content: str | None = None
    outputTokens: Count | None = None
    toolRequests: list[_Request] | None = None
    toolCallId: str | None = None
    success: bool | None = None
    result: _Result | None = None
    modelMetrics: dict[str, _Metric] | None = None
    tokenDetails: dict[str, _Detail] | None = None
    currentModel: str | None = None


class _Event(msgspec.Struct, gc=False):
    type: str = ""
    timestamp: str = ""
    data: _Data | None = None


_EVENT = msgspec.json.Decoder(_Event)


class CopilotSource(DirSource):
    """Finds `events.jsonl` under every Copilot home's `session-state/`."""

    name: ClassVar[str] = AGENT

    @staticmethod
    def default_dirs(env: Mapping[str, str]) -> list[Path]:
        return env_dirs(env, "COPILOT_HOME") or [Path(env.get("HOME") or Path.home()) / ".copilot"]

    def roots_in(self, folder: Path) -> list[Path]:
        return [folder if folder.name == "session-state" else folder / "session-state"]

    def new_parser(self, path: Path) -> CopilotFileParser:
        session = path.parent.name if path.name == "events.jsonl" else path.stem
        return CopilotFileParser(path=name_text(path), session_id=name_text(session))


class CopilotFileParser(JsonLinesParser, tag="copilot"):
    """One session's events: live estimates per leg, replaced by each shutdown's totals."""

    session_id: str = ""
    cwd: str = ""
    branch: str = ""
    model: str = ""
    announced: bool = False
    leg: int = 0
    context_bytes: int = 0
    live: dict[str, list[int]] = msgspec.field(default_factory=dict)
    """This leg's estimate per model: [estimated input, recorded output]."""
    totals: dict[str, list[int]] = msgspec.field(default_factory=dict)
    """The last shutdown's running totals per model (the TokenCounts fields)."""

    def line(self, raw: bytes, offset: int, out: list[Event]) -> None:
        event = _EVENT.decode(raw)
        data = event.data
        if data is None:
            return
        kind = event.type
        ts = parse_iso(event.timestamp)
        if kind in ("session.start", "session.resume"):
            self._start(data, ts, out)
        elif kind == "session.model_change":
            self.model = data.newModel or self.model
        elif kind == "assistant.turn_start":
            self.model = data.model or self.model
        elif kind == "user.message":
            self._grow_context(data.content)
        elif kind == "assistant.message":
            self._message(data, ts, out)
        elif kind == "tool.execution_complete":
            self._tool_done(data, ts, out)
        elif kind == "session.shutdown":
            self._shutdown(data, ts, out)

    def _key(self) -> SessionKey:
        return SessionKey(AGENT, self.session_id)

    def _grow_context(self, text: str | None) -> None:
        self.context_bytes = min(MAX_COUNT, self.context_bytes + len(text or ""))

    def _start(self, data: _Data, ts: float, out: list[Event]) -> None:
        self.model = data.selectedModel or self.model
        if data.context is not None:
            self.cwd = data.context.cwd or self.cwd
            self.branch = data.context.branch or self.branch
        if not self.announced:
            self.announced = True
            self.session_id = name_text(data.sessionId or self.session_id)
            out.append(SessionInfo(self._key(), ts, self.cwd, self.branch))

    def _message(self, data: _Data, ts: float, out: list[Event]) -> None:
        model = data.model or self.model
        self._grow_context(data.content)
        estimate = self.live.setdefault(model, [0, 0])
        estimate[0] = min(MAX_COUNT, estimate[0] + self.context_bytes // BYTES_PER_TOKEN)
        estimate[1] = min(MAX_COUNT, estimate[1] + (data.outputTokens or 0))
        tokens = TokenCounts(input=estimate[0], output=estimate[1])
        if tokens.total:
            out.append(self._usage(model, ts, tokens, estimated=True))
        for request in data.toolRequests or ():
            if request.toolCallId:
                name = request.name
                args = short_hash(request.arguments)
                call = ToolCall(self._key(), request.toolCallId, ts, name, args, name in _CHANGING)
                out.append(call)

    def _tool_done(self, data: _Data, ts: float, out: list[Event]) -> None:
        self._grow_context(data.result.content if data.result else None)
        if data.toolCallId:
            out.append(ToolResult(self._key(), data.toolCallId, ts, data.success is False))

    def _usage(self, model: str, ts: float, tokens: TokenCounts, estimated: bool) -> UsageEvent:
        key = f"{AGENT}:{self.session_id}:{self.leg}:{model}"
        return UsageEvent(
            self._key(), key, ts, model, tokens, self.cwd, self.branch, estimated=estimated
        )

    def _shutdown(self, data: _Data, ts: float, out: list[Event]) -> None:
        running = shutdown_totals(data)
        if not running:
            self.last_error = "session.shutdown without token usage: live estimates kept (≈)"
            self.leg += 1
            self.live = {}
            return
        for model in dict.fromkeys([*running, *self.live]):
            now = running.get(model)
            if now is None:
                out.append(self._usage(model, ts, TokenCounts(), estimated=False))
                continue
            before = self.totals.get(model)
            grew = before is not None and all(n >= b for n, b in zip(now, before, strict=True))
            leg = [n - b for n, b in zip(now, before, strict=True)] if grew and before else now
            self.totals[model] = now
            out.append(
                self._usage(
                    model,
                    ts,
                    TokenCounts(leg[0], leg[1], leg[2], leg[3], 0, leg[4]),
                    estimated=False,
                )
            )
        self.leg += 1
        self.live = {}


def shutdown_totals(data: _Data) -> dict[str, list[int]]:
    """Per model: [input without cache reads, output without reasoning, cache read, cache
    write, reasoning], from `modelMetrics.*.usage`, else the older `tokenDetails`."""
    found: dict[str, list[int]] = {}
    for model, metric in (data.modelMetrics or {}).items():
        u = metric.usage
        if u is not None:
            reasoning = min(u.reasoningTokens or 0, u.outputTokens)
            uncached = max(0, u.inputTokens - u.cacheReadTokens)
            found[model] = [
                uncached, u.outputTokens - reasoning, u.cacheReadTokens, u.cacheWriteTokens,
                reasoning,
            ]  # fmt: skip
    details = data.tokenDetails
    if found or not details:
        return found
    model = data.currentModel or next(iter(data.modelMetrics or {}), "")
    counts = [details[k].tokenCount if k in details else 0 for k in _DETAIL_KINDS]
    return {model: [*counts, 0]} if any(counts) else {}


_DETAIL_KINDS = ("input", "output", "cache_read", "cache_write")
