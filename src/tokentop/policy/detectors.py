"""Detectors and decisions: pure functions of a session snapshot, the config and the clock.

Policy decides, something else acts: `evaluate` returns Decisions (warn, pause, kill, with a
reason) and the guard, `tokentop run` or the hook carry them out. Each decision is emitted once
per crossing, not on every refresh; the little memory that needs (levels seen, since when a
rate has been high) lives in a `PolicyState` the caller keeps.

Only live sessions are judged, so history loaded at start-up never fires a burst; a session
that goes quiet is forgotten, so when it comes back its conditions fire again (a resumed
session over its budget is stopped again). Stall is the exception: it is about a quiet session.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Sequence
from typing import Literal

import msgspec

from tokentop.config import Budget, Config
from tokentop.model import Action, RecentTool, SessionKey, SessionSnapshot, TokenCounts
from tokentop.policy.budgets import Level, budget_use
from tokentop.policy.settings import ALL_TOKEN_KINDS, LoopPolicy, PolicyAction, TokenKind
from tokentop.quantities import compact, spent_of

Detector = Literal["budget", "loop", "drift", "runaway", "stall", "soft-stop"]
DETECTORS: tuple[Detector, ...] = ("budget", "loop", "drift", "runaway", "stall")
WARN_LEVEL = 1
LIMIT_LEVEL = 2


class Decision(msgspec.Struct, frozen=True):
    """What a detector found about one session, and what the config says to do about it."""

    session: SessionKey
    detector: Detector
    action: PolicyAction
    """"warn" only reports; "pause" and "kill" ask the caller to act on the process."""
    reason: str
    """One sentence for people (and, from the hook, for the agent)."""
    timestamp: float
    level: int = WARN_LEVEL
    """1 for a warning threshold, 2 for a limit; a rise is a new crossing."""

    @property
    def verb(self) -> Action:
        """What to do to the process for a "pause" or "kill" decision."""
        return "pause" if self.action == "pause" else "kill"


class PolicyState:
    """What `evaluate` remembers between calls; one per consumer (guard, run, app)."""

    def __init__(self) -> None:
        self.levels: dict[tuple[SessionKey, Detector], int] = {}
        self.high_since: dict[SessionKey, float] = {}
        """When each session's burn rate last rose above the runaway limit."""

    def forget(self, key: SessionKey) -> None:
        for detector in DETECTORS:
            if detector != "stall":
                self.levels.pop((key, detector), None)
        self.high_since.pop(key, None)

    def prune(self, keep: Collection[SessionKey]) -> None:
        """Forget every session not in `keep` (no longer judged)."""
        self.levels = {k: v for k, v in self.levels.items() if k[0] in keep}
        self.high_since = {k: v for k, v in self.high_since.items() if k in keep}


def evaluate(
    snapshot: SessionSnapshot,
    config: Config,
    now: float,
    state: PolicyState,
    *,
    process_alive: bool | None = None,
) -> list[Decision]:
    """The decisions that became true since the last call for this session.

    `process_alive` says whether the session's process runs (None: unknown); only the stall
    detector reads it.
    """
    key = snapshot.key
    live = config.activity(snapshot.last_ts, now) == "live"
    if not live:
        state.forget(key)
    found = detect(snapshot, config, now, state, process_alive=process_alive, live=live)
    return crossed(found, key, state, live=live)


def crossed(
    found: Sequence[Decision], key: SessionKey, state: PolicyState, *, live: bool
) -> list[Decision]:
    """Of what `detect` found for `key`, the decisions whose level rose since the last call;
    the levels are remembered in `state` (only stall is judged on a session not live)."""
    by_detector = {d.detector: d for d in found}
    new: list[Decision] = []
    for detector in DETECTORS if live else ("stall",):
        decision = by_detector.get(detector)
        level = decision.level if decision is not None else 0
        if decision is not None and level > state.levels.get((key, detector), 0):
            new.append(decision)
        if level:
            state.levels[key, detector] = level
        else:  # 0 is the default: a session judged once holds nothing
            state.levels.pop((key, detector), None)
    return new


def detect(
    snapshot: SessionSnapshot,
    config: Config,
    now: float,
    state: PolicyState | None = None,
    *,
    process_alive: bool | None = None,
    live: bool = True,
    budget: Budget | None = None,
) -> list[Decision]:
    """Every condition that holds now (not only new ones), e.g. for a row flag in the app.

    Without a `state` the runaway detector cannot tell how long a rate has been high; without
    a `budget` the session's configured one applies.
    """
    policy = config.policy
    found: list[Finding | None] = []
    if live:
        if policy.budget.action != "none":
            found.append(budget_finding(snapshot, config, budget))
        if policy.loop.action != "none":
            found.append(loop_finding(snapshot, config, now))
        if policy.drift.action != "none":
            found.append(drift_finding(snapshot, config))
        if policy.runaway.action != "none":
            found.append(runaway_finding(snapshot, config, now, state))
    if process_alive and policy.stall.action != "none":
        found.append(stall_finding(snapshot, config, now))
    return [_decided(snapshot.key, f, now) for f in found if f is not None]


class Finding(msgspec.Struct, frozen=True):
    detector: Detector
    action: PolicyAction
    reason: str
    level: int = WARN_LEVEL


def _decided(key: SessionKey, f: Finding, now: float) -> Decision:
    return Decision(key, f.detector, f.action, f.reason, now, f.level)


# -- budget -------------------------------------------------------------------------------


def budget_finding(
    snapshot: SessionSnapshot, config: Config, budget: Budget | None = None
) -> Finding | None:
    """Warn at alerts.warn_pct, act (policy.budget.action) at alerts.over_pct, against
    `budget` (the Watchdog's, which honours live overrides) or the configured one."""
    if budget is None:
        budget = config.budget_for(snapshot.key.agent, snapshot.cwd, snapshot.key.session_id)
    if not budget.is_set:
        return None
    kinds = config.policy.budget.token_kinds
    tokens = counted_tokens(snapshot.tokens, kinds)
    counted = (
        snapshot if tokens is snapshot.tokens else msgspec.structs.replace(snapshot, tokens=tokens)
    )
    use = budget_use(counted, budget, config.alerts)
    if use.level is Level.OK or use.fraction is None:
        return None
    spent = _spent(counted, budget, kinds)
    if use.level is Level.OVER:
        reason = f"over budget: {spent} ({use.fraction:.0%})"
        return Finding("budget", config.policy.budget.action, reason, LIMIT_LEVEL)
    return Finding("budget", "warn", f"{use.fraction:.0%} of budget used: {spent}")


def counted_tokens(tokens: TokenCounts, kinds: Sequence[TokenKind]) -> TokenCounts:
    """`tokens` with the kinds a budget does not count set to zero (so `.total` is the sum)."""
    if len(kinds) == len(ALL_TOKEN_KINDS):
        return tokens
    return TokenCounts(**{k: getattr(tokens, k) for k in kinds})


def _spent(snapshot: SessionSnapshot, budget: Budget, kinds: Sequence[TokenKind]) -> str:
    parts = []
    if budget.usd is not None:
        # "≥$x": part unpriced
        parts.append(spent_of(snapshot.cost_usd, budget.usd, not snapshot.unpriced_models))
    if budget.tokens is not None:
        which = "" if len(kinds) == len(ALL_TOKEN_KINDS) else f" ({'+'.join(kinds)})"
        parts.append(f"{snapshot.tokens.total:,} of {budget.tokens:,} tokens{which}")
    return ", ".join(parts)


# -- loop ---------------------------------------------------------------------------------

Signature = tuple[str, str]


def loop_finding(
    snapshot: SessionSnapshot, config: Config, now: float, *, ongoing: bool = False
) -> Finding | None:
    """The same call repeated, the same error repeated, or two calls in ping-pong.

    With `ongoing`, only a loop that the newest call continues counts: the hook blocks the
    looping call, not an agent that has moved on to something else.
    """
    loop = config.policy.loop
    calls = [t for t in snapshot.recent_tools if now - t.timestamp <= loop.window_s]
    reason = _loop_reason(calls, loop, ongoing) if calls else ""
    return Finding("loop", loop.action, f"looping: {reason}") if reason else None


def _loop_reason(calls: Sequence[RecentTool], loop: LoopPolicy, ongoing: bool) -> str:
    newest = (calls[-1].name, calls[-1].input_hash)
    answered = [c for c in calls if c.is_error is not None]
    last_error = (answered[-1].name, answered[-1].output_hash) if answered else None
    minutes = f"{loop.window_s / 60:g} min"
    call = repeated_call(calls, loop.repeats) if loop.repeats else None
    if call and (not ongoing or call[0] == newest):
        return f"the same {call[0][0]} call {call[1]} times in {minutes} with no other file change"
    error = repeated_error(calls, loop.error_repeats) if loop.error_repeats else None
    if error and (not ongoing or error[0] == last_error):
        return f"the same {error[0][0]} error {error[1]} times in {minutes}"
    pair = ping_pong(calls, loop.ping_pong) if loop.ping_pong else None
    return f"{pair[0][0]} and {pair[1][0]} alternating {loop.ping_pong} times over" if pair else ""


def repeated_call(calls: Sequence[RecentTool], limit: int) -> tuple[Signature, int] | None:
    """((name, input hash), count) of a call made `limit` times since the last *other* file
    change.

    A different file-changing call is progress (run tests, edit, run tests), so counting
    stops there, newest first; the same edit made again and again keeps counting.
    """
    counts: dict[Signature, int] = {}
    only: Signature | None = None
    for call in reversed(calls):
        sig = (call.name, call.input_hash)
        if only is not None and sig != only:
            continue
        counts[sig] = counts.get(sig, 0) + 1
        if counts[sig] >= limit:
            return sig, counts[sig]
        if call.file_changing:
            only = sig
    return None


def repeated_error(calls: Sequence[RecentTool], limit: int) -> tuple[Signature, int] | None:
    """((name, output hash), count) of an error output that came back `limit` times."""
    counts: dict[Signature, int] = {}
    for call in calls:
        if call.is_error and call.output_hash:
            sig = (call.name, call.output_hash)
            counts[sig] = counts.get(sig, 0) + 1
            if counts[sig] >= limit:
                return sig, counts[sig]
    return None


def ping_pong(calls: Sequence[RecentTool], cycles: int) -> tuple[Signature, Signature] | None:
    """Two distinct calls that alternate over the newest 2 × `cycles` calls (so a ping-pong
    that is found is always ongoing)."""
    tail = list(_signatures(calls))[-2 * cycles :]
    if len(tail) < 2 * cycles:
        return None
    a, b = tail[0], tail[1]
    if a == b or any(sig != (a, b)[i % 2] for i, sig in enumerate(tail)):
        return None
    return a, b


def _signatures(calls: Sequence[RecentTool]) -> Iterator[Signature]:
    return ((c.name, c.input_hash) for c in calls)


# -- drift, runaway, stall ----------------------------------------------------------------


def drift_finding(snapshot: SessionSnapshot, config: Config) -> Finding | None:
    """Many responses or tokens since the last file-changing tool call."""
    drift = config.policy.drift
    responses, tokens = snapshot.responses_since_change, snapshot.tokens_since_change
    over_responses = drift.responses and responses >= drift.responses
    over_tokens = drift.tokens and tokens >= drift.tokens
    if not (over_responses or over_tokens):
        return None
    reason = f"drifting: {responses} responses ({compact(tokens)} tokens) without a file change"
    return Finding("drift", drift.action, reason)


def runaway_finding(
    snapshot: SessionSnapshot, config: Config, now: float, state: PolicyState | None
) -> Finding | None:
    """A burn rate above the limit for the configured minutes (needs `state` to know since when)."""
    runaway = config.policy.runaway
    key, rate = snapshot.key, snapshot.tokens_per_min
    if not runaway.tokens_per_min or rate <= runaway.tokens_per_min:
        if state is not None:
            state.high_since.pop(key, None)
        return None
    if state is None:
        return None
    since = state.high_since.setdefault(key, now)
    if now - since < runaway.minutes * 60:
        return None
    limit = compact(runaway.tokens_per_min)
    reason = f"runaway: {compact(rate)} tokens/min for {(now - since) / 60:.0f} min (limit {limit})"
    return Finding("runaway", runaway.action, reason)


def soft_stop_escalation(
    snapshot: SessionSnapshot,
    config: Config,
    now: float,
    blocked: tuple[float, int],
    reason: str,
) -> Decision | None:
    """The agent was told to stop (the hook blocked a tool call at `blocked` = (time,
    responses then)) and carries on: past `[policy.soft_stop]`'s responses or seconds, the
    decision to pause or kill it (its `then`)."""
    soft = config.policy.soft_stop
    if soft.then == "none":
        return None
    more, waited = snapshot.responses - blocked[1], now - blocked[0]
    due = (soft.after_responses and more >= soft.after_responses) or (
        soft.after_s and waited >= soft.after_s
    )
    if not due:
        return None
    note = f"ignored the soft stop ({more} more responses, {waited:.0f} s): {reason}"
    return Decision(snapshot.key, "soft-stop", soft.then, note, now, LIMIT_LEVEL)


def stall_finding(snapshot: SessionSnapshot, config: Config, now: float) -> Finding | None:
    """The transcript has not grown for the configured minutes (the caller knows it is alive)."""
    stall = config.policy.stall
    quiet = now - snapshot.last_ts
    if quiet < stall.minutes * 60:
        return None
    reason = f"stalled: process alive, transcript silent for {quiet / 60:.0f} min"
    return Finding("stall", stall.action, reason)
