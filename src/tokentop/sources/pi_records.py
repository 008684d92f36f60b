"""The record shape Pi and OpenClaw share (OpenClaw is built on Pi's session format).

One place decodes an entry and turns an assistant message into its usage and tool calls, and
a tool result into its outcome; each agent's module keeps only its own rules: where files
are, which session an entry belongs to, and how a response is keyed for dedupe.
"""

from __future__ import annotations

import msgspec

from tokentop.model import Event, SessionKey, TokenCounts, ToolCall, ToolResult
from tokentop.sources.base import FILE_CHANGING_TOOLS, Count, short_hash

CHANGING = FILE_CHANGING_TOOLS | {"write", "edit"}
"""Tool names that change files, as Pi and OpenClaw name them."""


class Cost(msgspec.Struct, gc=False):
    total: float = 0.0


class Usage(msgspec.Struct, gc=False):
    input: Count = 0
    """Excludes the cache (both agents)."""
    output: Count = 0
    cacheRead: Count = 0
    cacheWrite: Count = 0
    cost: Cost | None = None


class Block(msgspec.Struct, gc=False):
    type: str = ""
    id: str = ""
    name: str = ""
    arguments: msgspec.Raw = msgspec.Raw(b"null")


class Message(msgspec.Struct, gc=False):
    role: str = ""
    model: str | None = None
    usage: Usage | None = None
    timestamp: float | None = None
    """The message's own time, Unix ms (Pi)."""
    content: list[Block] | str | None = None
    toolCallId: str | None = None
    isError: bool | None = None


class Data(msgspec.Struct, gc=False):
    modelId: str | None = None


class Record(msgspec.Struct, gc=False):
    """Every field either agent reads from an entry."""

    type: str = ""
    id: str | None = None
    timestamp: str | None = None
    cwd: str | None = None
    parentSession: str | None = None
    branchedFrom: str | None = None
    modelId: str | None = None
    message: Message | None = None
    customType: str | None = None
    data: Data | None = None


RECORD = msgspec.json.Decoder(Record)


def tokens_of(usage: Usage) -> TokenCounts:
    """The usage's counts by kind (zero when the response was aborted before it was sent)."""
    return TokenCounts(
        input=usage.input,
        output=usage.output,
        cache_read=usage.cacheRead,
        cache_write_5m=usage.cacheWrite,
    )


def own_cost(usage: Usage) -> float | None:
    """The agent's recorded price, when above zero (zero: a provider it could not price, so
    tokentop's table prices it instead)."""
    return usage.cost.total if usage.cost is not None and usage.cost.total > 0 else None


def tool_events(key: SessionKey, msg: Message, record_id: str, ts: float, out: list[Event]) -> None:
    """An assistant message's tool calls, or a tool result's outcome."""
    if msg.role == "toolResult":
        if msg.toolCallId:
            out.append(ToolResult(key, msg.toolCallId, ts, bool(msg.isError)))
        return
    for index, block in enumerate(msg.content if isinstance(msg.content, list) else ()):
        if block.type == "toolCall":
            call_id = block.id or f"{key.session_id}:{record_id}/{index}"
            args = short_hash(block.arguments)
            out.append(ToolCall(key, call_id, ts, block.name, args, block.name in CHANGING))
