"""What a span means under the OpenTelemetry GenAI conventions: an LLM call, a tool call, or
neither; its tokens, model, cost and conversation.

**Which spans are LLM calls.** Chains, graphs and agents nest spans, and some of them sum
their children's usage. So a span's role comes from its operation, never from carrying
usage alone:
- `gen_ai.operation.name` `chat`, `text_completion`, `generate_content`, `embeddings` is an
  LLM call (OpenLLMetry's older `llm.request.type`, OpenInference's `openinference.span.kind`
  LLM / EMBEDDING likewise);
- `execute_tool` is a tool call (`traceloop.span.kind` tool, OpenInference TOOL);
- any other operation (`invoke_agent`, `invoke_workflow`, `create_agent`, OpenLLMetry's
  `execute_task`, workflow and task spans, OpenInference AGENT / CHAIN) is an aggregate:
  never counted, whatever usage it carries;
- a span that names no operation but carries usage is taken for an LLM call.
Of LLM calls nested in one another (a framework's span around the SDK's span of the same
request, when two instrumentations are on), one is counted: `traces.TraceBook` keeps that
rule, since it needs the trace's other spans.

**Tokens** follow the conventions: `gen_ai.usage.input_tokens` includes the cache reads and
writes (`gen_ai.usage.cache_read.input_tokens`, `…cache_creation.input_tokens`), and
`output_tokens` includes reasoning (`gen_ai.usage.reasoning.output_tokens`, OpenLLMetry's
`gen_ai.usage.reasoning_tokens`); they are split into tokentop's disjoint kinds. Counts must
be integers (a string, a float, a negative or a huge value makes the span bad). Older names
(`prompt_tokens`, `completion_tokens`, `cache_read_input_tokens`) and OpenInference's
`llm.token_count.*` are read when the new ones are absent.
"""

from __future__ import annotations

import math
from typing import Literal

import msgspec

from tokentop.model import NAME_MAX, TokenCounts
from tokentop.telemetry.agents import MAX_COST, MAX_COUNT, BadRecord, text
from tokentop.telemetry.otlp import Attrs
from tokentop.telemetry.spans import SpanItem

Role = Literal["llm", "tool", "other"]
LLM_OPERATIONS = frozenset({"chat", "text_completion", "generate_content", "embeddings"})
LEGACY_LLM = frozenset({"chat", "completion", "embedding", "rerank"})
INFERENCE_KINDS = frozenset({"LLM", "EMBEDDING"})
CONVERSATION_KEYS = (
    "gen_ai.conversation.id",
    "session.id",
    "traceloop.association.properties.session_id",
    "traceloop.association.properties.thread_id",
)
"""Where a span names its conversation: the convention, then the `session.id` attribute
(OpenInference sets it on every span), then OpenLLMetry's association properties, which it
copies onto every span of a LangGraph thread (the conversation id itself is only on the
graph's root span, which ends last)."""
USAGE_KEYS = {
    "input": ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens", "llm.token_count.prompt"),
    "output": (
        "gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens",
        "llm.token_count.completion",
    ),
    "cache_read": (
        "gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
        "llm.token_count.prompt_details.cache_read",
    ),
    "cache_write": (
        "gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens",
        "llm.token_count.prompt_details.cache_write",
    ),
    "reasoning": (
        "gen_ai.usage.reasoning.output_tokens", "gen_ai.usage.reasoning_tokens",
        "llm.token_count.completion_details.reasoning",
    ),
}  # fmt: skip
UNKNOWN_SERVICE = "unknown_service"


class GenAICall(msgspec.Struct, frozen=True, gc=False):
    """One span read under the conventions; `tokens` is None when it carries no usage."""

    role: Role
    tokens: TokenCounts | None
    model: str
    cost_usd: float | None
    conversation: str
    """The conversation the span names itself ("" when none)."""
    tool: str = ""
    request_id: str = ""


def read_call(span: SpanItem) -> GenAICall:
    """A span's role and usage; BadRecord when its usage is unusable (the span is bad)."""
    a = span.attrs
    role = role_of(a, has_usage(a))
    tokens = usage(a) if role == "llm" and has_usage(a) else None
    model = text(a, "gen_ai.response.model") or text(a, "gen_ai.request.model")
    model = model or text(a, "llm.model_name")
    tool = (
        (text(a, "gen_ai.tool.name") or text(a, "tool.name") or span.name) if role == "tool" else ""
    )
    cost = span_cost(a) if tokens is not None else None
    return GenAICall(
        role, tokens, model, cost, conversation(a), tool, text(a, "gen_ai.response.id")
    )


def role_of(a: Attrs, carries_usage: bool) -> Role:
    operation = text(a, "gen_ai.operation.name")
    if operation:
        if operation in LLM_OPERATIONS:
            return "llm"
        return "tool" if operation == "execute_tool" else "other"
    legacy = text(a, "llm.request.type")
    if legacy:
        return "llm" if legacy in LEGACY_LLM else "other"
    kind = text(a, "openinference.span.kind").upper() or text(a, "traceloop.span.kind").upper()
    if kind:
        if kind in INFERENCE_KINDS:
            return "llm"
        return "tool" if kind == "TOOL" else "other"
    return "llm" if carries_usage else "other"


def has_usage(a: Attrs) -> bool:
    return any(key in a for key in (*USAGE_KEYS["input"], *USAGE_KEYS["output"]))


def usage(a: Attrs) -> TokenCounts:
    """The span's tokens in tokentop's disjoint kinds (see the module doc)."""
    raw = {kind: _first_count(a, keys) for kind, keys in USAGE_KEYS.items()}
    cache_read = min(raw["cache_read"], raw["input"])
    cache_write = min(raw["cache_write"], raw["input"] - cache_read)
    reasoning = min(raw["reasoning"], raw["output"])
    return TokenCounts(
        input=raw["input"] - cache_read - cache_write, output=raw["output"] - reasoning,
        cache_read=cache_read, cache_write_5m=cache_write, reasoning=reasoning,
    )  # fmt: skip


def _first_count(a: Attrs, keys: tuple[str, ...]) -> int:
    for key in keys:
        if key in a:
            return span_count(a, key)
    return 0


def span_count(a: Attrs, key: str) -> int:
    """An integer attribute in 0..MAX_COUNT; anything else (a string, a float, a bool, a
    negative) is bad: the conventions define counts as ints."""
    value = a[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRecord(f"{key} is not an integer")
    if not 0 <= value <= MAX_COUNT:
        raise BadRecord(f"{key} out of range")
    return value


def span_cost(a: Attrs) -> float | None:
    """`gen_ai.usage.cost` (USD, as OpenLIT and Laminar record it), when the span has it."""
    value = a.get("gen_ai.usage.cost")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRecord("gen_ai.usage.cost is not a number")
    usd = float(value)
    if not math.isfinite(usd) or not 0 <= usd <= MAX_COST:
        raise BadRecord("gen_ai.usage.cost out of range")
    return usd


def conversation(a: Attrs) -> str:
    for key in CONVERSATION_KEYS:
        found = text(a, key)
        if found:
            return found
    return ""


def agent_label(resource: Attrs) -> str:
    """`service.name` as the agent column shows it: bounded, and without ":", which
    separates agent and session id in "agent:session" strings (the action log)."""
    name = text(resource, "service.name").strip() or UNKNOWN_SERVICE
    name = name.replace(":", "-")
    return name if len(name) <= NAME_MAX else name[: NAME_MAX - 1] + "…"


def process_pid(resource: Attrs) -> int:
    """The resource's `process.pid`, 0 when absent or not a plausible pid."""
    pid = resource.get("process.pid")
    if isinstance(pid, bool) or not isinstance(pid, int) or not 0 < pid < 1 << 31:
        return 0
    return pid
