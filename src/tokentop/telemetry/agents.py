"""What each agent's telemetry means: its events and counters -> TelemetryUsage.

- **Claude Code**: the log event `claude_code.api_request` (tokens, `cost_usd`,
  `request_id`, `session.id`) and the counters `claude_code.token.usage` (attribute `type`:
  input, output, cacheRead, cacheCreation) and `claude_code.cost.usage`. Its exports carry
  numbers as strings, so both strings and numbers are read.
- **Codex CLI**: the log event `codex.sse_event` with `event.kind` = `response.completed`
  (OpenAI counting: input includes cached tokens, output includes reasoning), keyed by
  `conversation.id`.
- **Gemini CLI**: the log event `gemini_cli.api_response` (the prompt count includes cached
  content; tool-use prompt tokens are billed as input) and the counter
  `gemini_cli.token.usage` (type input, output, thought, cache, tool), keyed by `session.id`.

The user is `user.email`, else `user.account_uuid` / `user.account_id`; the host is the
resource's `host.name` (the receiver falls back to the sender's address).
"""

from __future__ import annotations

import math
import re

import msgspec

from tokentop.model import TokenCounts
from tokentop.sources.base import parse_iso
from tokentop.telemetry.otlp import Attrs, LogItem, PointItem, Scalar

MAX_COUNT = 10**12
"""Larger token counts are refused (a record with one is bad): no real response is near."""
MAX_COST = 10**6
_DIGITS = re.compile(r"[0-9]{1,13}")
_DECIMAL = re.compile(r"[0-9]{1,16}(?:\.[0-9]{1,16})?(?:[eE][+-]?[0-9]{1,3})?")
"""What a count and a cost may look like as strings (the agents send numbers as text): the
transcript rules, so no "12.7" read as 12, no "1_000", no " 5", no sign."""


class TelemetryUsage(msgspec.Struct, frozen=True, gc=False):
    """One billed response (events) or one counter group (metrics) from telemetry."""

    agent: str
    session_id: str
    via: str
    """"events", "metrics" or "traces": a session counts only one of them."""
    key: str
    """Dedupe key; the same record sent twice (a retried export) gives the same key."""
    time: float
    model: str
    tokens: TokenCounts
    cost_usd: float | None = None
    request_id: str = ""
    host: str = ""
    user: str = ""
    tool: str = ""
    """A tool call (traces): counted as a ToolCall for the loop detectors, with no tokens."""
    input_hash: str = ""
    failed: bool = False
    output_hash: str = ""


class BadRecord(ValueError):
    """A known event or counter with an unusable value: counted, never raised further."""


EVENTS = {"claude_code.api_request", "codex.sse_event", "gemini_cli.api_response"}
COUNTERS = {"claude_code.token.usage", "claude_code.cost.usage", "gemini_cli.token.usage"}


def from_log(item: LogItem) -> TelemetryUsage | None:
    """The usage a log record reports, None for records that carry none."""
    if item.name not in EVENTS:
        return None
    a = item.attrs
    when = _when(a, item.time)
    if item.name == "claude_code.api_request":
        tokens = TokenCounts(
            input=count(a, "input_tokens"), output=count(a, "output_tokens"),
            cache_read=count(a, "cache_read_tokens"),
            cache_write_5m=count(a, "cache_creation_tokens"),
        )  # fmt: skip
        rid = text(a, "request_id")
        sid = text(a, "session.id")
        key = f"claude:otel:{rid}" if rid else f"claude:otel:{sid}:{when}:{_sig(tokens)}"
        return _usage(item, "claude", sid, key, when, tokens, cost(a), rid)
    if item.name == "codex.sse_event":
        if text(a, "event.kind") != "response.completed" or "input_token_count" not in a:
            return None
        tokens = _openai(a)
        sid = text(a, "conversation.id")
        return _usage(item, "codex", sid, f"codex:otel:{sid}:{when}:{_sig(tokens)}", when, tokens)
    tokens = _gemini(a)
    sid = text(a, "session.id")
    return _usage(item, "gemini", sid, f"gemini:otel:{sid}:{when}:{_sig(tokens)}", when, tokens)


def _usage(
    item: LogItem,
    agent: str,
    sid: str,
    key: str,
    when: float,
    tokens: TokenCounts,
    cost_usd: float | None = None,
    rid: str = "",
) -> TelemetryUsage:
    if not sid:
        raise BadRecord(f"{item.name} without a session id")
    model = text(item.attrs, "model")
    host, user = identity(item.attrs, item.resource)
    return TelemetryUsage(agent, sid, "events", key, when, model, tokens, cost_usd, rid, host, user)


def _openai(a: Attrs) -> TokenCounts:
    prompt, completion = count(a, "input_token_count"), count(a, "output_token_count")
    cached = min(count(a, "cached_token_count"), prompt)
    reasoning = min(count(a, "reasoning_token_count"), completion)
    return TokenCounts(
        input=prompt - cached, output=completion - reasoning, cache_read=cached, reasoning=reasoning
    )


def _gemini(a: Attrs) -> TokenCounts:
    prompt = count(a, "input_token_count")
    cached = min(count(a, "cached_content_token_count"), prompt)
    return TokenCounts(
        input=prompt - cached + count(a, "tool_token_count"),
        output=count(a, "output_token_count"),
        cache_read=cached,
        reasoning=count(a, "thoughts_token_count"),
    )


KIND_FIELDS = {
    "claude_code.token.usage": {
        "input": "input", "output": "output", "cacheRead": "cache_read",
        "cacheCreation": "cache_write_5m",
    },
    "gemini_cli.token.usage": {
        "input": "input", "output": "output", "thought": "reasoning", "cache": "cache_read",
        "tool": "tool",
    },
}  # fmt: skip
"""Counter -> its `type` attribute values -> TokenCounts field ("tool" is added to input)."""


def point_kind(point: PointItem) -> str | None:
    """The TokenCounts field a point adds to, "cost" for the cost counter, None to skip."""
    if point.metric == "claude_code.cost.usage":
        return "cost"
    fields = KIND_FIELDS.get(point.metric)
    if fields is None:
        return None
    return fields.get(text(point.attrs, "type"))


def point_value(point: PointItem, kind: str) -> float:
    value = point.value
    limit = MAX_COST if kind == "cost" else MAX_COUNT
    if not math.isfinite(value) or not 0 <= value <= limit:
        raise BadRecord(f"{point.metric}: value out of range")
    return value


def identity(attrs: Attrs, resource: Attrs) -> tuple[str, str]:
    """(host, user) from the record's or the resource's attributes."""
    host = text(resource, "host.name") or text(attrs, "host.name")
    user = ""
    for name in ("user.email", "user.account_uuid", "user.account_id", "user.id"):
        user = text(attrs, name) or text(resource, name)
        if user:
            break
    return host, user


def text(attrs: Attrs, name: str) -> str:
    value = attrs.get(name)
    if isinstance(value, bool) or value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def count(attrs: Attrs, name: str) -> int:
    """A token count sent as an integer or as a string of digits (Claude Code's exports);
    absent is 0. A bool, a float ("12.7", 12.7, even 12.0) or any other spelling is bad, as
    in a transcript (`sources.base.Count`)."""
    value: Scalar | None = attrs.get(name)
    if value is None or value == "":
        return 0
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        n = int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        raise BadRecord(f"{name} is not a count")
    if not 0 <= n <= MAX_COUNT:
        raise BadRecord(f"{name} out of range")
    return n


def cost(attrs: Attrs) -> float | None:
    value = attrs.get("cost_usd")
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str) and not _DECIMAL.fullmatch(value):
        raise BadRecord("cost_usd is not a number")
    usd = float(value)
    if not math.isfinite(usd) or not 0 <= usd <= MAX_COST:
        raise BadRecord("cost_usd out of range")
    return usd


def _when(attrs: Attrs, fallback: float) -> float:
    """`event.timestamp` (ISO, as the agents write it) else the record's time."""
    stamp = attrs.get("event.timestamp")
    return (parse_iso(stamp) if isinstance(stamp, str) else 0.0) or fallback


def _sig(tokens: TokenCounts) -> str:
    return ".".join(str(n) for n in (tokens.input, tokens.output, tokens.cache_read,
                                     tokens.cache_write_5m, tokens.reasoning))  # fmt: skip
