"""OTLP spans -> flat, bounded SpanItems holding only what the GenAI conventions need.

An LLM framework's span carries the whole prompt and answer in its attributes (tens of
kilobytes), and older instrumentations spread a conversation over hundreds of
`gen_ai.prompt.N.*` attributes, so the generic `otlp.attributes` (the first 128, cut to 256
characters) would lose the token counts an instrumentation sets last. Here every attribute
is looked at (the request's size and message count were bounded before parsing), only the
known keys are kept, and the texts that identify a call (the prompt, a tool's arguments, its
result) are kept as digests of their whole value, never as text.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from tokentop.telemetry.otlp import Attrs, attributes, clean, scalar

STATUS_ERROR = 2
"""`Status.STATUS_CODE_ERROR`: the span's operation failed."""
KEPT = frozenset({
    "gen_ai.operation.name", "gen_ai.provider.name", "gen_ai.system",
    "gen_ai.request.model", "gen_ai.response.model", "gen_ai.response.id",
    "gen_ai.conversation.id", "session.id",
    "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens",
    "gen_ai.usage.prompt_tokens", "gen_ai.usage.completion_tokens",
    "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
    "gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens",
    "gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens",
    "gen_ai.usage.cost", "gen_ai.tool.name", "error.type",
    "llm.request.type", "traceloop.span.kind",
    "traceloop.association.properties.session_id", "traceloop.association.properties.thread_id",
    "openinference.span.kind", "llm.model_name", "tool.name",
    "llm.token_count.prompt", "llm.token_count.completion",
    "llm.token_count.prompt_details.cache_read", "llm.token_count.prompt_details.cache_write",
    "llm.token_count.completion_details.reasoning",
})  # fmt: skip
"""Attributes read from a span (GenAI conventions, OpenLLMetry's older names, OpenInference)."""
PROMPT_KEYS = ("gen_ai.input.messages", "gen_ai.system_instructions", "input.value")
PROMPT_PREFIXES = ("gen_ai.prompt.", "llm.input_messages.")
ARGUMENT_KEYS = ("gen_ai.tool.call.arguments", "traceloop.entity.input", "input.value")
RESULT_KEYS = ("gen_ai.tool.call.result", "traceloop.entity.output", "output.value")
TEXT_KEYS = frozenset((*PROMPT_KEYS, *ARGUMENT_KEYS, *RESULT_KEYS))
MAX_PARSED = 256 * 1024
"""Largest tool input parsed as JSON to find LangChain's `input_str`; larger ones are
hashed whole."""


class SpanItem(msgspec.Struct, frozen=True, gc=False):
    """One span: ids as hex ("" when malformed), the kept attributes, and digests."""

    trace_id: str
    span_id: str
    parent_id: str
    name: str
    end: float
    """end_time_unix_nano in seconds (a sender's clock)."""
    failed: bool
    attrs: Attrs
    resource: Attrs
    prompt: str = ""
    """Digest of the whole prompt (every prompt attribute); "" when the span records none."""
    arguments: str = ""
    result: str = ""


def span_items(request: ExportTraceServiceRequest) -> Iterator[SpanItem]:
    for rs in request.resource_spans:
        resource = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for span in ss.spans:
                yield _item(span, resource)


def _item(span: Any, resource: Attrs) -> SpanItem:
    kept, texts = _read(span.attributes)
    end = span.end_time_unix_nano or span.start_time_unix_nano
    return SpanItem(
        _hex(span.trace_id, 16), _hex(span.span_id, 8), _hex(span.parent_span_id, 8),
        clean(span.name), end / 1e9, span.status.code == STATUS_ERROR, kept, resource,
        _digest(_prompt(texts)), _digest(_arguments(texts)), _digest(_first(texts, RESULT_KEYS)),
    )  # fmt: skip


def _read(kvs: Any) -> tuple[Attrs, dict[str, str]]:
    """(kept attributes, whole texts of the identifying ones) from every attribute."""
    kept: Attrs = {}
    texts: dict[str, str] = {}
    for kv in kvs:
        key = kv.key
        if key in KEPT:
            value = scalar(kv.value)
            if value is not None:
                kept[key] = value
        elif key in TEXT_KEYS or key.startswith(PROMPT_PREFIXES):
            texts[key] = _whole(kv.value)
    return kept, texts


def _whole(value: AnyValue) -> str:
    if value.WhichOneof("value") == "string_value":
        return str(value.string_value)
    return value.SerializeToString().hex()


def _prompt(texts: dict[str, str]) -> list[str]:
    return [
        f"{k}={v}" for k, v in texts.items() if k in PROMPT_KEYS or k.startswith(PROMPT_PREFIXES)
    ]


def _arguments(texts: dict[str, str]) -> list[str]:
    """A tool's input. OpenLLMetry's LangChain spans wrap it with the run's metadata (its
    step number changes every call), so only LangChain's `input_str` is taken from those."""
    found = _first(texts, ARGUMENT_KEYS)
    if not found or len(found[0]) > MAX_PARSED or '"input_str"' not in found[0]:
        return found
    try:
        doc = msgspec.json.decode(found[0])
    except msgspec.DecodeError:
        return found
    inner = doc.get("input_str") if isinstance(doc, dict) else None
    return [inner] if isinstance(inner, str) else found


def _first(texts: dict[str, str], keys: Iterable[str]) -> list[str]:
    for key in keys:
        if key in texts:
            return [texts[key]]
    return []


def _digest(parts: list[str]) -> str:
    if not parts:
        return ""
    h = hashlib.blake2b(digest_size=12)
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def _hex(raw: bytes, size: int) -> str:
    """An id as hex; "" unless it has its size and is not all zeros (OTLP's "none")."""
    return raw.hex() if len(raw) == size and any(raw) else ""
