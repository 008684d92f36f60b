"""Frozen value types passed between layers: events in, snapshots out.

The small ones are `gc=False`: they never form reference cycles, and a cold scan makes
hundreds of thousands of them, which the cyclic collector then need not track.
"""

from __future__ import annotations

import re
from typing import Literal

import msgspec

Action = Literal["pause", "resume", "terminate", "kill"]
"""What tokentop can do to a session's process (keys, policy, the hook's escalation)."""
RECENT_TOOLS = 30
"""Tool calls kept per session for the loop detectors (and hashed by the parsers)."""
NAME_MAX = 40
"""A project name longer than this is cut: a table column, not a path."""
_SEPARATORS = re.compile(r"[\\/]")


def path_tail(path: str) -> str:
    """The last part of a POSIX or Windows path (C:\\work\\shop -> shop): a transcript
    may record either kind, whatever this machine is."""
    parts = [p for p in _SEPARATORS.split(path) if p]
    return parts[-1] if parts else ""


def base_name(path: str) -> str:
    """`path_tail`, at most NAME_MAX characters: a session's project name everywhere."""
    name = path_tail(path)
    return name if len(name) <= NAME_MAX else name[: NAME_MAX - 1] + "…"


class SessionKey(msgspec.Struct, frozen=True, order=True, array_like=True, gc=False):
    """Identifies one agent session across files (a resumed or subagent file maps to its parent)."""

    agent: str
    """Source name: "claude", "codex", ..."""
    session_id: str

    def __str__(self) -> str:
        return f"{self.agent}:{self.session_id}"

    @classmethod
    def parse(cls, text: str) -> SessionKey | None:
        """The key `str(key)` wrote ("agent:session id"), or None without a colon."""
        agent, sep, session_id = text.partition(":")
        return cls(agent, session_id) if sep else None


class TokenCounts(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Token counts split by how they are billed; every field is disjoint from the others.

    `input` excludes cached tokens and `output` excludes reasoning, so the sum of all
    fields is the total a budget counts and each field maps to one price.
    """

    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write_5m: int = 0
    cache_write_1h: int = 0
    reasoning: int = 0

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    @property
    def total(self) -> int:
        return (
            self.input
            + self.output
            + self.cache_read
            + self.cache_write_5m
            + self.cache_write_1h
            + self.reasoning
        )

    def __add__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(
            self.input + other.input,
            self.output + other.output,
            self.cache_read + other.cache_read,
            self.cache_write_5m + other.cache_write_5m,
            self.cache_write_1h + other.cache_write_1h,
            self.reasoning + other.reasoning,
        )

    def __sub__(self, other: TokenCounts) -> TokenCounts:
        return TokenCounts(
            self.input - other.input,
            self.output - other.output,
            self.cache_read - other.cache_read,
            self.cache_write_5m - other.cache_write_5m,
            self.cache_write_1h - other.cache_write_1h,
            self.reasoning - other.reasoning,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "input": self.input,
            "output": self.output,
            "cache_read": self.cache_read,
            "cache_write": self.cache_write,
            "cache_write_5m": self.cache_write_5m,
            "cache_write_1h": self.cache_write_1h,
            "reasoning": self.reasoning,
            "total": self.total,
        }


ZERO = TokenCounts()


class UsageEvent(msgspec.Struct, frozen=True, gc=False):
    """One billed API response (or a difference of cumulative counters) from a transcript."""

    session: SessionKey
    dedupe_key: str
    """Global across files. The ledger counts each key once, at its largest total."""
    timestamp: float
    """Unix seconds (UTC)."""
    model: str
    tokens: TokenCounts
    cwd: str = ""
    branch: str = ""
    cost_usd: float | None = None
    """Cost recorded by the writer itself, if any; preferred over the price table."""
    sidechain: bool = False
    estimated: bool = False
    """True when the tokens were estimated with a tokenizer, not recorded."""
    request_id: str = ""
    """The API request id, where the writer records one (telemetry matches on it)."""


class ToolCall(msgspec.Struct, frozen=True, gc=False):
    """A tool invocation; the loop detectors compare `name` + `input_hash`."""

    session: SessionKey
    call_id: str
    timestamp: float
    name: str
    input_hash: str
    file_changing: bool = False


class ToolResult(msgspec.Struct, frozen=True, gc=False):
    """The outcome of a tool call, matched to the call by `call_id`."""

    session: SessionKey
    call_id: str
    timestamp: float
    is_error: bool
    output_hash: str = ""


TELEMETRY_ORIGIN = "otlp:"
"""How telemetry shows in a session's `files` (`otlp:HOST`): it came from no file here."""


class SessionInfo(msgspec.Struct, frozen=True, gc=False):
    """Metadata seen in a transcript that carries no tokens (session start, cwd, model switch)."""

    session: SessionKey
    timestamp: float
    cwd: str = ""
    branch: str = ""
    model: str = ""
    parent: str = ""
    """Parent session id for forks and subagents, when the format records one."""
    host: str = ""
    """The machine the session runs on, for sessions reported by telemetry; "" is this one."""


MAX_PERCENT = 10_000.0
"""A vendor window's used share beyond this is nonsense from a hostile file: capped, not
trusted (Codex's rollouts and Claude Code's status line alike)."""


class LimitWindow(msgspec.Struct, frozen=True, gc=False):
    """One of a vendor's own usage windows, as the agent was told it (not computed here)."""

    name: str
    """The vendor's name for it: Codex "primary" / "secondary", Claude "five_hour" / "seven_day"."""
    used_pct: float
    """0-100 as the vendor reports it (it can pass 100)."""
    window_min: int = 0
    """The window's length in minutes; 0 when not reported."""
    resets_at: float = 0.0
    """Unix seconds when the window resets; 0 when not reported."""


class RateLimits(msgspec.Struct, frozen=True, gc=False):
    """A vendor's usage windows at one moment (Codex `rate_limits`, Claude's status line)."""

    observed_at: float
    """When the agent recorded them: their age is how stale they are."""
    windows: tuple[LimitWindow, ...]
    plan: str = ""


class LimitsSeen(msgspec.Struct, frozen=True, gc=False):
    """Official rate limits read in a transcript; the ledger keeps the newest per session."""

    session: SessionKey
    limits: RateLimits


Event = UsageEvent | ToolCall | ToolResult | SessionInfo | LimitsSeen

Response = tuple[
    str, float, str, int, int, int, int, int, "float | None", str, str, bool, str, SessionKey
]
"""A UsageEvent's fields in a tuple: dedupe key, time, model, input, output, cache read,
cache writes 5m and 1h, recorded cost, cwd, branch, sidechain, request id, session."""
Call = tuple[str, float, str, str, bool, int]
"""A ToolCall's fields: call id, time, name, input hash, file changing; and how many of the
run's responses come before it."""
Result = tuple[str, float, bool, str, int, int]
"""A ToolResult's fields: call id, time, error, output hash; the index of its call among the
run's calls when that came earlier in the run, else -1; and how many calls come before it."""


class EventRun(msgspec.Struct, gc=False):
    """Consecutive responses, tool calls and results of one session read from one file in
    one go, as tuples: one object where there were hundreds of events, which the ledger
    counts in bulk (a cold scan reads most lines this way). `events()` gives the same as
    UsageEvent, ToolCall and ToolResult events, in their order."""

    session: SessionKey
    order: bytearray = msgspec.field(default_factory=bytearray)
    """One byte an event: RUN_RESPONSE, RUN_CALL or RUN_RESULT."""
    responses: list[Response] = msgspec.field(default_factory=list)
    calls: list[Call] = msgspec.field(default_factory=list)
    results: list[Result] = msgspec.field(default_factory=list)
    mixed: bool = False
    """A response's session is not `session` (a copy written under another one)."""

    def events(self) -> list[UsageEvent | ToolCall | ToolResult]:
        """The run one event at a time."""
        out: list[UsageEvent | ToolCall | ToolResult] = []
        responses, calls, results = iter(self.responses), iter(self.calls), iter(self.results)
        key = self.session
        for code in self.order:
            if code == RUN_RESPONSE:
                dedupe, ts, model, ti, to, tr, w5, w1, cost, cwd, branch, side, req, session = next(
                    responses
                )
                tokens = TokenCounts(ti, to, tr, w5, w1)
                out.append(
                    UsageEvent(session, dedupe, ts, model, tokens, cwd, branch, cost, side,
                               request_id=req)
                )  # fmt: skip
            elif code == RUN_CALL:
                call_id, ts, name, input_hash, changing, _ = next(calls)
                out.append(ToolCall(key, call_id, ts, name, input_hash, changing))
            else:
                call_id, ts, error, output_hash, _, _ = next(results)
                out.append(ToolResult(key, call_id, ts, error, output_hash))
        return out


RUN_RESPONSE, RUN_CALL, RUN_RESULT = b"ucr"


class ModelUsage(msgspec.Struct, frozen=True, gc=False):
    """A session's tokens and cost for one model; `cost_usd` is None when the model is unpriced."""

    model: str
    tokens: TokenCounts
    cost_usd: float | None
    responses: int


class ToolStat(msgspec.Struct, frozen=True, gc=False):
    name: str
    calls: int
    errors: int


class RecentTool(msgspec.Struct, frozen=True, gc=False):
    timestamp: float
    name: str
    input_hash: str
    is_error: bool | None
    """None while the result has not arrived."""
    output_hash: str = ""
    file_changing: bool = False


class FileHealth(msgspec.Struct, frozen=True, gc=False):
    """Per-file read state, shown so that unparseable input is never silent."""

    path: str
    agent: str
    bytes_read: int
    lines: int
    bad_lines: int
    last_error: str = ""


class SessionSnapshot(msgspec.Struct, frozen=True):
    """Everything the UI and JSON output show for one session at one instant."""

    key: SessionKey
    cwd: str
    branch: str
    first_ts: float
    last_ts: float
    tokens: TokenCounts
    cost_usd: float
    """Cost of the priced models only; see `unpriced_models`."""
    unpriced_models: tuple[str, ...]
    models: tuple[ModelUsage, ...]
    model_timeline: tuple[tuple[float, str], ...]
    """(first timestamp, model) for each change of model, in order."""
    responses: int
    tokens_per_min: float
    """Burn: the session's current pace (engine/pace.py); zero once it has stopped."""
    usd_per_hour: float
    burn_series: tuple[int, ...]
    """Tokens per minute for the last minutes, oldest first (sparkline)."""
    tool_calls: int
    tool_errors: int
    tools: tuple[ToolStat, ...]
    recent_tools: tuple[RecentTool, ...]
    files: tuple[str, ...]
    bad_lines: int
    estimated: bool = False
    parent: str = ""
    responses_since_change: int = 0
    """Responses since the last file-changing tool call (the drift detector reads it)."""
    tokens_since_change: int = 0
    tokens_today: int = 0
    """Tokens (all kinds) spent since local midnight of the snapshot's clock."""
    cost_today: float = 0.0
    host: str = ""
    """Another machine's name for a session known from its telemetry; "" is this machine."""
    last_response_ts: float = 0.0
    """When its newest response was written (the LAST column); 0 when none has a time."""
    burn_age_s: float = 0.0
    """Seconds since the newest response: the ETA counts down from it (engine/pace.py)."""
    held_tokens_per_min: float = 0.0
    """The pace as of the newest response, which the ETA is measured at (burn decays from it
    once the session is late; the ETA does not rise meanwhile)."""
    held_usd_per_hour: float = 0.0
    limits: RateLimits | None = None
    """The vendor's own usage windows as last recorded in the session (Codex rate_limits)."""

    @property
    def remote(self) -> bool:
        """On another machine: its processes can't be signalled from here (alerts only)."""
        return bool(self.host)

    @property
    def from_telemetry(self) -> bool:
        """Counted, wholly or in part, from telemetry: a stranger's word, not evidence read
        here, so decisions about it are alerts only, whatever host it names."""
        return self.remote or any(f.startswith(TELEMETRY_ORIGIN) for f in self.files)


class LedgerSnapshot(msgspec.Struct, frozen=True):
    """An immutable view of all sessions; the UI assigns it to a reactive and renders it."""

    taken_at: float
    sessions: tuple[SessionSnapshot, ...]
    files: tuple[FileHealth, ...]
    bad_lines: int
    version: int
    """Increases on every change, so consumers can skip identical snapshots."""
