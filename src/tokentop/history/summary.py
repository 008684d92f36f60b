"""Session summaries: what a finished session spent, how, and what it left behind.

`build_summary` is pure: a snapshot, the per-minute burn, the store's events and actions,
the git assessment and the consumer estimate go in, a frozen `SessionSummary` comes out.
`SummaryRecorder` decides *when* (`end_reason`: the process exited, it was killed, or it has
been idle past `[history] idle_end_s`), does the I/O (git, transcripts) and hands the result
to a sink (the store), which upserts it, so recording a session again updates its row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Literal, Protocol

import msgspec

from tokentop.clock import Clock, SystemClock
from tokentop.config import Alerts, Budget, Config, History
from tokentop.history.context_use import Calibration, Consumers, top_consumers
from tokentop.history.fingerprint import SHOWN_CHARS, key_of, normalised
from tokentop.history.git_output import NOT_A_REPO, GitValue, assess, label_for
from tokentop.model import (
    NAME_MAX,
    LedgerSnapshot,
    SessionKey,
    SessionSnapshot,
    TokenCounts,
    ToolStat,
)
from tokentop.model import base_name as base_name  # the UI's import of it
from tokentop.policy.budgets import budget_use
from tokentop.sources.base import FILE_CHANGING_TOOLS
from tokentop.sources.prompts import first_prompt, main_file
from tokentop.tokens import Tokenizer, get_tokenizer

EndReason = Literal["exited", "killed", "terminated", "paused-then-exited", "idle", "open"]
"""Why the summary was recorded; "open" is a snapshot of a session that may still go on."""
Minutes = Mapping[int, Sequence[float]]
"""Minute index (unix seconds // 60) -> [tokens, cost], as the ledger keeps it."""
MinutesFn = Callable[[SessionKey], Minutes]
"""A session's buckets: a running engine's `Engine.minutes`, copied under its lock."""
SUMMARY_SCHEMA = 1
MAX_RECORDS_PER_OBSERVE = 16
"""Sessions recorded per `observe` call at most, so a backlog never stalls a UI tick."""


class ModelShare(msgspec.Struct, frozen=True):
    model: str
    tokens: TokenCounts
    cost_usd: float | None
    responses: int
    timeline_share: float
    """Share of the session's timeline (0..1) during which this model was the one in use."""


class EventRecord(msgspec.Struct, frozen=True):
    """A detector decision (budget, loop, drift ...) about the session."""

    timestamp: float
    detector: str
    action: str
    reason: str
    level: int = 1


class ActionRecord(msgspec.Struct, frozen=True):
    """An action on the session's process, by key ("key:k") or by policy ("policy:loop")."""

    timestamp: float
    action: str
    ok: bool
    origin: str
    reason: str
    message: str = ""


class SessionSummary(msgspec.Struct, frozen=True):
    """One session, as recorded when it ended; outlives the transcripts it was built from."""

    agent: str
    session_id: str
    project: str
    cwd: str
    branch: str
    start: float
    end: float
    active_s: float
    end_reason: EndReason
    recorded_at: float
    tokens: TokenCounts
    cost_usd: float
    unpriced_models: tuple[str, ...]
    responses: int
    models: tuple[ModelShare, ...]
    peak_tokens_per_min: float
    mean_tokens_per_min: float
    """Tokens per active minute (a session shorter than a minute counts as one)."""
    budget_usd: float | None
    budget_tokens: int | None
    budget_used_pct: float | None
    tool_calls: int
    tool_errors: int
    tools: tuple[ToolStat, ...]
    events: tuple[EventRecord, ...] = ()
    actions: tuple[ActionRecord, ...] = ()
    consumers: Consumers | None = None
    git: GitValue | None = None
    parent: str = ""
    estimated: bool = False
    """Some tokens were estimated with a tokenizer rather than recorded by the agent."""
    schema: int = SUMMARY_SCHEMA
    prompt: str = ""
    """The first user prompt, normalised (history/fingerprint.py) and cut: names its job."""
    prompt_key: str = ""
    """Hash of the cwd and the normalised first prompt: sessions sharing it are one job."""

    @property
    def key(self) -> SessionKey:
        return SessionKey(self.agent, self.session_id)

    @property
    def label(self) -> str:
        return self.git.label if self.git is not None else "unknown"


class SummarySink(Protocol):
    """Where summaries go and where a session's events and actions come from (the store)."""

    def record_summary(self, summary: SessionSummary) -> None: ...

    def events_for(self, session: str) -> list[EventRecord]: ...

    def actions_for(self, session: str) -> list[ActionRecord]: ...

    def recorded_marks(self) -> dict[str, tuple[int, int]]: ...


# -- pure parts ------------------------------------------------------------------------------


def end_reason(
    snapshot: SessionSnapshot, now: float, cfg: History, process_alive: bool | None = None
) -> EndReason | None:
    """Whether the session has ended, and how; None while it may still go on."""
    if process_alive is False:
        return "exited"
    if now - snapshot.last_ts >= cfg.idle_end_s:
        return "idle"
    return None


def active_seconds(minutes: Iterable[int], gap_s: float) -> float:
    """Each active minute counts, and so does a quiet stretch shorter than `gap_s` between two."""
    ordered = sorted(set(minutes))
    if not ordered:
        return 0.0
    total = 60.0
    for a, b in pairwise(ordered):
        quiet = (b - a - 1) * 60.0
        total += 60.0 + (quiet if quiet < gap_s else 0.0)
    return total


def series_minutes(snapshot: SessionSnapshot, now: float) -> Minutes | None:
    """Minute buckets from the snapshot's burn series, if it spans the whole session."""
    end = int(now // 60)
    first = end - len(snapshot.burn_series) + 1
    if not snapshot.burn_series or snapshot.first_ts < first * 60:
        return None
    return {first + i: (float(v), 0.0) for i, v in enumerate(snapshot.burn_series) if v}


def timeline_shares(snapshot: SessionSnapshot) -> dict[str, float]:
    """Each model's share of the time from its first use to the session's end."""
    timeline = snapshot.model_timeline
    spans: dict[str, float] = {}
    for i, (ts, model) in enumerate(timeline):
        nxt = timeline[i + 1][0] if i + 1 < len(timeline) else snapshot.last_ts
        spans[model] = spans.get(model, 0.0) + max(0.0, nxt - ts)
    total = sum(spans.values())
    if total <= 0:  # a single instant: share by responses instead
        counts = {m.model: float(m.responses) for m in snapshot.models}
        total, spans = sum(counts.values()), counts
    return {m: v / total for m, v in spans.items()} if total > 0 else {}


def file_changes(snapshot: SessionSnapshot) -> bool:
    """Whether a file-changing tool call (Edit, Write, apply_patch ...) succeeded: a denied
    or failed one (`is_error: true`) changed nothing, so more calls than errors are needed."""
    if any(t.name in FILE_CHANGING_TOOLS and t.calls > t.errors for t in snapshot.tools):
        return True
    return any(r.file_changing and r.is_error is False for r in snapshot.recent_tools)


def budget_pct(snapshot: SessionSnapshot, budget: Budget) -> float | None:
    fraction = budget_use(snapshot, budget, Alerts()).fraction
    return None if fraction is None or math.isinf(fraction) else fraction * 100.0


def project_name(cwd: str, git: GitValue | None) -> str:
    root = git.repo if git is not None and git.repo else cwd
    return base_name(root) or root[:NAME_MAX]


def build_summary(
    snapshot: SessionSnapshot,
    *,
    now: float,
    reason: EndReason,
    config: Config,
    minutes: Minutes | None = None,
    events: Sequence[EventRecord] = (),
    actions: Sequence[ActionRecord] = (),
    git: GitValue | None = None,
    consumers: Consumers | None = None,
    budget: Budget | None = None,
    prompt: str = "",
) -> SessionSummary:
    """Freeze one session into a summary; `minutes` (the ledger's buckets) give active time.

    `budget` is the session's budget if it was changed live; by default the configured one.
    `prompt` is the session's first user prompt as written (its job's fingerprint).
    """
    s = snapshot
    buckets = minutes if minutes is not None else series_minutes(s, now)
    if buckets:
        active = active_seconds(
            (m for m, b in buckets.items() if b[0] > 0), config.history.active_gap_s
        )
        peak = max(float(b[0]) for b in buckets.values())
        active = min(active, max(0.0, s.last_ts - s.first_ts))  # buckets round up to minutes
    else:
        active = max(0.0, s.last_ts - s.first_ts)
        peak = float(max(s.burn_series, default=0))
    mean = s.tokens.total / max(active / 60.0, 1.0)
    # A short session split across two calendar minutes can average more per minute than
    # either bucket holds; the peak is never below the mean.
    shares = timeline_shares(s)
    budget = budget or config.budget_for(s.key.agent, s.cwd, s.key.session_id)
    text = normalised(prompt)
    return SessionSummary(
        agent=s.key.agent,
        session_id=s.key.session_id,
        project=project_name(s.cwd, git),
        cwd=s.cwd,
        branch=s.branch or (git.branch if git is not None else ""),
        start=s.first_ts,
        end=s.last_ts,
        active_s=active,
        end_reason=reason,
        recorded_at=now,
        tokens=s.tokens,
        cost_usd=s.cost_usd,
        unpriced_models=s.unpriced_models,
        responses=s.responses,
        models=tuple(
            ModelShare(m.model, m.tokens, m.cost_usd, m.responses, shares.get(m.model, 0.0))
            for m in s.models
        ),
        peak_tokens_per_min=max(peak, mean),
        mean_tokens_per_min=mean,
        budget_usd=budget.usd,
        budget_tokens=budget.tokens,
        budget_used_pct=budget_pct(s, budget),
        tool_calls=s.tool_calls,
        tool_errors=s.tool_errors,
        tools=s.tools,
        events=tuple(sorted(events, key=lambda e: e.timestamp)),
        actions=tuple(sorted(actions, key=lambda a: a.timestamp)),
        consumers=consumers,
        git=git,
        parent=s.parent,
        estimated=s.estimated,
        prompt=text[:SHOWN_CHARS],
        prompt_key=key_of(s.cwd, text),
    )


# -- recording -------------------------------------------------------------------------------


class SummaryRecorder:
    """Records a summary for each session that ends; call `observe` on every snapshot or tick."""

    def __init__(
        self,
        sink: SummarySink,
        config: Config,
        clock: Clock | None = None,
        *,
        minutes_for: MinutesFn | None = None,
        tokenizer: Tokenizer | None = None,
        use_git: bool = True,
        consumers: bool = True,
    ) -> None:
        self.sink = sink
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.minutes_for = minutes_for
        self.use_git = use_git
        self.with_consumers = consumers
        """False: summaries are recorded without top consumers (filled in when shown)."""
        self._tokenizer = tokenizer
        self._calibration: Calibration | None = None
        """Shared by every session recorded: only the first results are tokenized."""
        self._no_repo: set[str] = set()
        """Working directories already found not to be in a git repository."""
        self.budgets: dict[SessionKey, Budget] = {}
        """Budgets set live (the app's budget key), which beat the configured ones."""
        self._marks: dict[str, tuple[int, int]] = sink.recorded_marks()
        """Per session, (responses, total tokens) when last recorded: unchanged ones are skipped."""

    def observe(
        self, snapshot: LedgerSnapshot, alive: Mapping[SessionKey, bool] | None = None
    ) -> list[SessionSummary]:
        """Record the sessions that have ended (and changed since they were last recorded)."""
        now = self.clock.now()
        done: list[SessionSummary] = []
        for session in snapshot.sessions:
            reason = end_reason(session, now, self.config.history, (alive or {}).get(session.key))
            if reason is not None and self.changed(session):
                done.append(self.record(session, reason))
                if len(done) >= MAX_RECORDS_PER_OBSERVE:
                    break
        return done

    def changed(self, session: SessionSnapshot) -> bool:
        return self._marks.get(str(session.key)) != _mark(session)

    def record(self, session: SessionSnapshot, reason: EndReason) -> SessionSummary:
        """Build and store the summary now (the process exited, was killed, or a scan asked)."""
        now = self.clock.now()
        sid = str(session.key)
        git = self.assess_git(session)
        summary = build_summary(
            session,
            now=now,
            reason=reason,
            config=self.config,
            minutes=self.minutes_for(session.key) if self.minutes_for else None,
            events=self.sink.events_for(sid),
            actions=self.sink.actions_for(sid),
            git=git,
            consumers=self.consumers(session),
            budget=self.budgets.get(session.key),
            prompt=first_prompt(
                session.key.agent,
                main_file(session.key.session_id, session.files),
            ),
        )
        self.sink.record_summary(summary)
        self._marks[sid] = _mark(session)
        return summary

    def assess_git(self, session: SessionSnapshot) -> GitValue | None:
        if not self.use_git:
            return None
        cfg = self.config.history
        changed = file_changes(session)
        if session.cwd in self._no_repo:
            label = label_for(session.cost_usd, 0, changed, False, cfg)
            return GitValue(NOT_A_REPO, label, file_changes=changed)
        value = assess(
            session.cwd, session.first_ts, session.last_ts, session.cost_usd, changed, cfg
        )
        if value.status == NOT_A_REPO:
            self._no_repo.add(session.cwd)
        return value

    def consumers(self, session: SessionSnapshot) -> Consumers | None:
        top = self.config.history.top_consumers
        if not top or not session.files or not self.with_consumers:
            return None
        if self._calibration is None:
            self._calibration = Calibration(self._tokenizer or get_tokenizer())
        return top_consumers(session.files, self._calibration, top)


def _mark(session: SessionSnapshot) -> tuple[int, int]:
    return (session.responses, session.tokens.total)


def fill_consumers(
    sink: SummarySink,
    summaries: list[SessionSummary],
    top: int,
    files_of: Callable[[str], list[str]],
) -> dict[SessionKey, SessionSummary]:
    """Compute the top consumers of summaries shown in full that were recorded without them
    (a bulk `report` leaves them out: they cost a second read of every transcript), from
    the files each session was read from (`files_of(str(key))`), and store them."""
    filled: dict[SessionKey, SessionSummary] = {}
    calibration: Calibration | None = None
    for s in summaries:
        files = files_of(str(s.key)) if s.consumers is None and top else []
        if not files:
            continue
        calibration = calibration or Calibration(get_tokenizer())
        done = msgspec.structs.replace(s, consumers=top_consumers(files, calibration, top))
        sink.record_summary(done)
        filled[s.key] = done
    return filled
