"""GenAI spans -> sessions: one usage per LLM call, tool calls for the loop detectors.

- **Session.** The conversation a span names (`genai.CONVERSATION_KEYS`), else the one an
  earlier span of its trace named, else the trace itself; within one agent (`service.name`)
  and host (another host's conversation id gets "@host"). A trace's spans that arrive
  before any of them names a conversation stay in the trace's session.
- **One usage per LLM call.** Of LLM spans nested in one another in a trace, only one is
  counted: a span with a counted descendant (its children end first, so they usually arrive
  first) or a counted ancestor is the same request seen by another layer and is dropped
  (counted in `ignored`). Aggregates (agent, workflow, task spans) never count at all
  (`genai.role_of`). A span sent twice keeps its key, and the ledger counts it once.
- **Tool calls** (and LLM calls whose prompt is recorded) become ToolCall events with a
  digest of their input, so the loop detectors see the same tool with the same arguments,
  or the same prompt, again and again.

Everything here is bounded per receiver: live sessions (`MAX_LIVE_SESSIONS`; spans of a new
session past it are dropped until others go quiet), traces and the span links kept to tell
parents from children (`MAX_LINKS`; the oldest traces are forgotten first). Parent links
are a sender's word: walks along them stop after `MAX_DEPTH` steps or a span seen twice,
so a cycle costs nothing.
"""

from __future__ import annotations

from collections import OrderedDict

from tokentop.model import ZERO, SessionKey
from tokentop.telemetry.agents import TelemetryUsage
from tokentop.telemetry.genai import GenAICall
from tokentop.telemetry.spans import SpanItem

MAX_LIVE_SESSIONS = 1000
"""Trace sessions with a span in the last `LIVE_S`; a new one past this is refused."""
LIVE_S = 900.0
MAX_TRACES = 10_000
MAX_LINKS = 200_000
"""Span ids remembered (parent links and marks) over all traces."""
MAX_DEPTH = 256
"""Longest parent chain walked; deeper nesting than this is not a real framework's."""


class _Trace:
    """What one trace needs to tell which LLM span to count."""

    __slots__ = ("conversation", "counted", "covered", "parent")

    def __init__(self) -> None:
        self.conversation = ""
        self.parent: dict[str, str] = {}
        self.counted: set[str] = set()
        self.covered: set[str] = set()
        """Spans with a counted descendant."""

    @property
    def size(self) -> int:
        return len(self.parent) + len(self.counted) + len(self.covered)


class TraceBook:
    """Bounded trace state of one receiver; not thread-safe (the hub's lock guards it)."""

    def __init__(self) -> None:
        self.traces: OrderedDict[tuple[str, str, str], _Trace] = OrderedDict()
        self.links = 0
        self.live: OrderedDict[SessionKey, float] = OrderedDict()
        self.ignored = 0
        """Nested LLM spans not counted (the same request seen twice)."""
        self.refused = 0
        """Spans of new sessions dropped because `MAX_LIVE_SESSIONS` were live."""

    def add(
        self, span: SpanItem, call: GenAICall, agent: str, host: str, now: float
    ) -> TelemetryUsage | None:
        """The usage (or tool call) a span makes, None when it makes none."""
        if not span.trace_id or not span.span_id:
            return None
        trace = self._trace((agent, host, span.trace_id))
        self._link(trace, span)
        named = call.conversation or trace.conversation
        if call.conversation and not trace.conversation:
            trace.conversation = call.conversation
        sid = f"{named}@{host}" if named and host else named or span.trace_id
        if call.role == "llm" and call.tokens is not None and self._nested(trace, span):
            self.ignored += 1
            return None
        usage = self._usage(span, call, agent, sid, host, now)
        if usage is None or not self._admit(SessionKey(agent, sid), now):
            return None
        if call.role == "llm" and call.tokens is not None and span.span_id not in trace.counted:
            trace.counted.add(span.span_id)
            self.links += 1
            self._cover(trace, span.parent_id)
        return usage

    def _usage(
        self, span: SpanItem, call: GenAICall, agent: str, sid: str, host: str, now: float
    ) -> TelemetryUsage | None:
        key = f"otelt:{agent}|{host}|{span.trace_id}|{span.span_id}"
        when = min(span.end, now) if span.end > 0 else now
        if call.role == "llm" and call.tokens is not None:
            return TelemetryUsage(
                agent, sid, "traces", key, when, call.model, call.tokens, call.cost_usd,
                call.request_id, host, input_hash=span.prompt,
                tool=f"llm {call.model or '?'}" if span.prompt else "",
            )  # fmt: skip
        if call.role == "tool":
            return TelemetryUsage(
                agent, sid, "traces", key, when, call.model, ZERO, tool=call.tool, host=host,
                input_hash=span.arguments, failed=span.failed, output_hash=span.result,
            )  # fmt: skip
        return None

    # -- nesting -----------------------------------------------------------------------

    def _link(self, trace: _Trace, span: SpanItem) -> None:
        if span.span_id not in trace.parent:
            self.links += 1
        trace.parent[span.span_id] = span.parent_id
        if span.span_id in trace.covered or span.span_id in trace.counted:
            self._cover(trace, span.parent_id)  # its parent arrived after a counted child

    def _nested(self, trace: _Trace, span: SpanItem) -> bool:
        """Whether a counted LLM span sits below or above `span` (itself excepted)."""
        if span.span_id in trace.counted:
            return False  # sent again: the same key, counted once by the ledger
        if span.span_id in trace.covered:
            return True
        seen: set[str] = {span.span_id}
        ancestor = span.parent_id
        while ancestor and ancestor not in seen and len(seen) <= MAX_DEPTH:
            if ancestor in trace.counted:
                return True
            seen.add(ancestor)
            ancestor = trace.parent.get(ancestor, "")
        return False

    def _cover(self, trace: _Trace, start: str) -> None:
        """Mark `start` and its known ancestors as having a counted descendant."""
        ancestor, steps = start, 0
        while ancestor and ancestor not in trace.covered and steps < MAX_DEPTH:
            trace.covered.add(ancestor)
            self.links += 1
            ancestor = trace.parent.get(ancestor, "")
            steps += 1

    # -- bounds ------------------------------------------------------------------------

    def _trace(self, key: tuple[str, str, str]) -> _Trace:
        trace = self.traces.get(key)
        if trace is None:
            trace = self.traces[key] = _Trace()
            while len(self.traces) > MAX_TRACES:
                self._forget_oldest()
        else:
            self.traces.move_to_end(key)
        return trace

    def _forget_oldest(self) -> None:
        self.links -= self.traces.popitem(last=False)[1].size

    def trim(self) -> None:
        """Forget the oldest traces (the newest too, if one alone is over) while the links
        are over their bound; the hub calls it after each request."""
        while self.links > MAX_LINKS and self.traces:
            self._forget_oldest()

    def _admit(self, key: SessionKey, now: float) -> bool:
        """Whether a span of session `key` may be counted: a known live one always; a new
        one while fewer than MAX_LIVE_SESSIONS are live."""
        if key in self.live:
            self.live[key] = now
            self.live.move_to_end(key)
            return True
        while self.live and next(iter(self.live.values())) < now - LIVE_S:
            self.live.popitem(last=False)
        if len(self.live) >= MAX_LIVE_SESSIONS:
            self.refused += 1
            return False
        self.live[key] = now
        return True
