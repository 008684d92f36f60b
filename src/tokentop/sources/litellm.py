"""LiteLLM proxy logs: one StandardLoggingPayload JSON object per line (agent `litellm`).

The proxy has no built-in file logger; `tokentop.integrations.litellm_callback` appends each payload
(see docs/proxy.md). Files are named explicitly (`--proxy-log PATH`), never discovered.

- **Dedupe:** each call `id` counts once (`litellm:<id>`): a callback registered for both
  sync and async hooks, or a log replayed into two files, cannot double count. Of two
  copies, the one with more tokens counts; with as many, the larger `response_cost` (the
  ledger's rule), so the total never depends on which line came first.
- **Failures** (`status: "failure"`) were not billed: they list the session, no tokens.
- **Tokens:** `prompt_tokens` follows OpenAI and includes cached tokens (and, for Anthropic
  through LiteLLM, cache writes); the cache detail sits in the embedded response usage or
  `metadata.usage_object`. Input is split into uncached input, cache reads and cache writes;
  reasoning tokens are split out of `completion_tokens`.
- **Estimates:** a successful call with no recorded usage is estimated from the request
  messages and the response text with the tokenizer, and marked `estimated`.
- **Session:** the caller's session id (`tokentop_session_id`, written by our callback),
  else the payload `session_id`, `metadata.spend_logs_metadata.session_id`,
  `metadata.requester_metadata.session_id`, then `trace_id` (unless our callback recorded
  that no session id was given: LiteLLM then invents a per-call trace id), else the API
  key alias (or hash) plus the end user.
- **Cost:** `response_cost` when above zero, else the price table.
- **Time:** `endTime`, a float epoch or a `"2025-01-24 09:20:46.847371"` string (local time).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar

import msgspec

from tokentop import tokens as tokens_mod
from tokentop.model import Event, SessionInfo, SessionKey, TokenCounts, UsageEvent
from tokentop.sources.base import Count, FileListSource, FileParser, bounded_ts, parse_iso
from tokentop.sources.jsonlines import DECODE_ERRORS, JsonLinesParser

AGENT = "litellm"


class _Details(msgspec.Struct, gc=False):
    cached_tokens: Count | None = None
    cache_creation_tokens: Count | None = None
    reasoning_tokens: Count | None = None


class _Usage(msgspec.Struct, gc=False):
    prompt_tokens: Count | None = None
    completion_tokens: Count | None = None
    cache_read_input_tokens: Count | None = None
    cache_creation_input_tokens: Count | None = None
    prompt_tokens_details: _Details | None = None
    completion_tokens_details: _Details | None = None


class _Response(msgspec.Struct, gc=False):
    usage: _Usage | None = None
    choices: msgspec.Raw = msgspec.Raw(b"null")


class _Metadata(msgspec.Struct, gc=False):
    user_api_key_hash: str | None = None
    user_api_key_alias: str | None = None
    user_api_key_end_user_id: str | None = None
    spend_logs_metadata: dict[str, Any] | None = None
    requester_metadata: dict[str, Any] | None = None
    usage_object: _Usage | None = None


class _Payload(msgspec.Struct, gc=False):
    id: str = ""
    status: str = "success"
    model: str = ""
    model_group: str | None = None
    custom_llm_provider: str | None = None
    prompt_tokens: Count = 0
    completion_tokens: Count = 0
    response_cost: float | None = None
    startTime: float | str | None = None
    endTime: float | str | None = None
    trace_id: str | None = None
    session_id: str | None = None
    tokentop_session_id: str | None = None
    metadata: _Metadata | None = None
    end_user: str | None = None
    response: msgspec.Raw = msgspec.Raw(b"null")
    messages: msgspec.Raw = msgspec.Raw(b"null")


_PAYLOAD = msgspec.json.Decoder(_Payload)
_RESPONSE = msgspec.json.Decoder(_Response)
_ANY = msgspec.json.Decoder()


def epoch(value: float | str | None) -> float:
    """Unix seconds from a float, an ISO string, or LiteLLM's naive local `str(datetime)`."""
    if value is None:
        return 0.0
    if isinstance(value, int | float):
        return bounded_ts(float(value))
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return bounded_ts(parsed.timestamp())  # naive: local time, as the proxy wrote it
    except (ValueError, OverflowError):
        return parse_iso(value)


def session_of(p: _Payload) -> str:
    """The session a call belongs to (the order is in the module doc)."""
    meta = p.metadata or _Metadata()
    for found in (
        p.tokentop_session_id,
        p.session_id,
        (meta.spend_logs_metadata or {}).get("session_id"),
        (meta.requester_metadata or {}).get("session_id"),
        p.trace_id if p.tokentop_session_id is None else None,
    ):
        if found and isinstance(found, str):
            return found
    hashed = meta.user_api_key_hash
    key = meta.user_api_key_alias or (f"key:{hashed[:12]}" if hashed else "no-key")
    user = p.end_user or meta.user_api_key_end_user_id
    return f"{key}/{user}" if user else key


def model_name(p: _Payload) -> str:
    """The provider's model name: `openai/gpt-4o-mini` routed to openai is `gpt-4o-mini`."""
    model = p.model or p.model_group or ""
    prefix = f"{p.custom_llm_provider}/"
    return model[len(prefix) :] if p.custom_llm_provider and model.startswith(prefix) else model


def token_counts(prompt: int, completion: int, usage: _Usage | None) -> TokenCounts:
    """Disjoint kinds from OpenAI-style totals that include cache and reasoning."""
    u = usage or _Usage()
    pd = u.prompt_tokens_details or _Details()
    cd = u.completion_tokens_details or _Details()
    prompt, completion = max(prompt, 0), max(completion, 0)
    read = min(max(u.cache_read_input_tokens or pd.cached_tokens or 0, 0), prompt)
    write = min(max(u.cache_creation_input_tokens or pd.cache_creation_tokens or 0, 0), prompt)
    write = min(write, prompt - read)
    reasoning = min(max(cd.reasoning_tokens or 0, 0), completion)
    return TokenCounts(
        input=prompt - read - write,
        output=completion - reasoning,
        cache_read=read,
        cache_write_5m=write,
        reasoning=reasoning,
    )


class LiteLLMFileParser(JsonLinesParser, tag="litellm"):
    """One proxy log file; no state beyond the offset, so any split parses the same."""

    def line(self, raw: bytes, offset: int, out: list[Event]) -> None:
        p = _PAYLOAD.decode(raw)
        if not p.id:
            raise msgspec.ValidationError("payload without an `id`")
        key = SessionKey(AGENT, session_of(p))
        ts = epoch(p.endTime) or epoch(p.startTime)
        model = model_name(p)
        out.append(SessionInfo(key, epoch(p.startTime) or ts, model=model))
        if p.status != "success":
            return  # a failed call was not billed
        response = _response(p.response)
        usage = response.usage if response else None
        if usage is None and p.metadata is not None:
            usage = p.metadata.usage_object
        prompt = p.prompt_tokens or (usage.prompt_tokens or 0 if usage else 0)
        completion = p.completion_tokens or (usage.completion_tokens or 0 if usage else 0)
        counts = token_counts(prompt, completion, usage)
        estimated = not counts.total
        if estimated:
            counts = estimate(p.messages, response.choices if response else None)
        if not counts.total:
            return
        cost = p.response_cost if p.response_cost and p.response_cost > 0 else None
        dedupe = f"{AGENT}:{p.id}"
        out.append(UsageEvent(key, dedupe, ts, model, counts, cost_usd=cost, estimated=estimated))


def _response(raw: msgspec.Raw) -> _Response | None:
    try:
        return _RESPONSE.decode(raw)
    except DECODE_ERRORS:
        return None  # a string, list or null response (non-chat call types)


def estimate(messages: msgspec.Raw, choices: msgspec.Raw | None) -> TokenCounts:
    """Tokens counted from the request and response text, when no usage was recorded."""
    prompt = _text(_loads(messages))
    answer = _text(_loads(choices)) if choices is not None else ""
    if not prompt and not answer:
        return TokenCounts()
    count = tokens_mod.get_tokenizer().count
    return TokenCounts(input=count(prompt) if prompt else 0, output=count(answer) if answer else 0)


def _loads(raw: msgspec.Raw) -> object:
    try:
        return _ANY.decode(raw)
    except DECODE_ERRORS:
        return None


MAX_TEXT_DEPTH = 32
"""Chat messages nest a few levels; a client's deeper structure is not searched for text."""


def _text(node: object, depth: int = 0) -> str:
    """All `content`/`text` strings inside a messages or choices structure, joined."""
    if depth > MAX_TEXT_DEPTH:
        return ""
    if isinstance(node, list):
        return "\n".join(t for t in (_text(n, depth + 1) for n in node) if t)
    if isinstance(node, dict):
        parts = [v for k, v in node.items() if k in ("content", "text") and isinstance(v, str)]
        parts += [_text(v, depth + 1) for k, v in node.items() if isinstance(v, dict | list)]
        return "\n".join(t for t in parts if t)
    return ""


class LiteLLMSource(FileListSource):
    """Proxy log files given by path (each one is its own root)."""

    name: ClassVar[str] = AGENT
    parser_type: ClassVar[type[FileParser]] = LiteLLMFileParser
