"""`[policy.*]` config sections: detector thresholds and the action each one may take.

Kept apart from config.py so that the policy module and the hook import only what they read.
An action is what happens when a detector fires: "none" turns the detector off, "warn" only
reports, "pause" and "kill" act on the session's process (guard, run; never on a guessed
mapping). Counts set to 0 turn that one rule off.
"""

from __future__ import annotations

from typing import Annotated, Final, Literal

import msgspec

PolicyAction = Literal["none", "warn", "pause", "kill"]
TokenKind = Literal[
    "input", "output", "cache_read", "cache_write_5m", "cache_write_1h", "reasoning"
]
Count = Annotated[int, msgspec.Meta(ge=0)]
RecentCount = Annotated[int, msgspec.Meta(ge=0, le=30)]
"""The ledger keeps a session's last 30 tool calls, so no repeat rule can look further back."""
Cycles = Annotated[int, msgspec.Meta(ge=0, le=15)]
Seconds = Annotated[float, msgspec.Meta(gt=0)]
Rate = Annotated[float, msgspec.Meta(ge=0)]

ALL_TOKEN_KINDS: Final[tuple[TokenKind, ...]] = (
    "input",
    "output",
    "cache_read",
    "cache_write_5m",
    "cache_write_1h",
    "reasoning",
)


class BudgetPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[policy.budget]`: the limits are `[budgets]`, the thresholds `[alerts]`."""

    action: PolicyAction = "warn"
    """At alerts.over_pct of the budget. Reaching alerts.warn_pct only ever warns."""
    token_kinds: tuple[TokenKind, ...] = ALL_TOKEN_KINDS
    """Which kinds a token budget counts; all of them by default, as ccusage's totalTokens."""


class LoopPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[policy.loop]`: an agent repeating itself instead of making progress."""

    action: PolicyAction = "warn"
    repeats: RecentCount = 6
    """The same tool call (name and input) this many times, with no other file change between."""
    error_repeats: RecentCount = 5
    """The same error output this many times."""
    ping_pong: Cycles = 4
    """This many A-B cycles of two alternating calls (A B A B A B A B)."""
    window_s: Seconds = 600.0
    """Only calls within this many seconds count."""


class DriftPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[policy.drift]`: much spent with no file-changing tool call (Edit, Write, apply_patch…)."""

    action: PolicyAction = "warn"
    responses: Count = 80
    """Responses since the last file change."""
    tokens: Count = 10_000_000
    """Tokens (all kinds, cache reads too) since the last file change."""


class RunawayPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[policy.runaway]`: a burn rate that stays high."""

    action: PolicyAction = "warn"
    tokens_per_min: Rate = 2_500_000.0
    """Averaged over the ledger's 5-minute window; cache reads count. 0 turns it off."""
    minutes: Seconds = 5.0
    """How long the rate must stay above the limit."""


class StallPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[policy.stall]`: the process is alive but its transcript stopped growing (informational)."""

    action: Literal["none", "warn"] = "warn"
    minutes: Seconds = 15.0


class SoftStopPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[policy.soft_stop]`: the Claude Code hook blocks tool calls of a session that is over
    budget or looping (and whose detector is not "none"), telling the agent to wrap up."""

    enabled: bool = True
    then: Literal["none", "pause", "kill"] = "none"
    """What to do when the agent carries on after being told to stop."""
    after_responses: Count = 3
    """Escalate after this many more responses (0: never by count)."""
    after_s: Rate = 120.0
    """…or this many seconds after the first block (0: never by time)."""


class Policy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`[policy]`: one table per detector."""

    budget: BudgetPolicy = msgspec.field(default_factory=BudgetPolicy)
    loop: LoopPolicy = msgspec.field(default_factory=LoopPolicy)
    drift: DriftPolicy = msgspec.field(default_factory=DriftPolicy)
    runaway: RunawayPolicy = msgspec.field(default_factory=RunawayPolicy)
    stall: StallPolicy = msgspec.field(default_factory=StallPolicy)
    soft_stop: SoftStopPolicy = msgspec.field(default_factory=SoftStopPolicy)


def policy_problem(policy: Policy) -> tuple[list[str], str] | None:
    """A rule that msgspec cannot express: (key path, problem), or None when all is well."""
    loop = policy.loop
    for name in ("repeats", "error_repeats", "ping_pong"):
        if getattr(loop, name) == 1:
            return ["policy", "loop", name], "must be 0 (off) or at least 2"
    if not policy.budget.token_kinds:
        return ["policy", "budget", "token_kinds"], "must name at least one kind"
    return None
