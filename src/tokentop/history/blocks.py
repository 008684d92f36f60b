"""Claude's 5-hour billing blocks, computed from the responses' own timestamps.

The rule is ccusage's `blocks` (read in ryoppippi/ccusage `rust/crates/ccusage/src/blocks.rs`,
`identify_session_blocks`, and checked against ccusage 20.0.24's `blocks --json`, see
tests/test_blocks.py): responses are taken in time order; a block starts at its first
response's time floored to the UTC hour and lasts 5 hours; a response more than 5 hours after
the block's start, or more than 5 hours after the previous response, starts the next block,
and a gap of more than 5 hours between two responses is a gap block of its own (from 5 hours
after the last response to the next one). Times are compared in whole milliseconds, as ccusage
does. A block is active while its last response is less than 5 hours old and its end is
still ahead. Burn is the block's tokens (and dollars) over the minutes from its first
response to its last; the projection adds that pace over the whole minutes left.

These are computed windows: what Anthropic counts is its own business, shown only where
Claude Code hands it over (`tokentop statusline`, history/limits.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from tokentop.model import ZERO, TokenCounts

BLOCK_S = 5 * 3600
"""A block's length; Anthropic's 5-hour usage window."""
_HOUR_MS = 3_600_000
_BLOCK_MS = BLOCK_S * 1000


class BlockEntry(msgspec.Struct, frozen=True, gc=False):
    """One counted response: when, what it cost, on which model."""

    timestamp: float
    tokens: TokenCounts
    cost_usd: float | None
    """None when the model is not priced (the block's cost is then a lower bound)."""
    model: str


class Burn(msgspec.Struct, frozen=True):
    """The active block's pace, from its first response to its last (ccusage's burnRate)."""

    tokens_per_min: float
    uncached_tokens_per_min: float
    """Input and output only: ccusage's `tokensPerMinuteForIndicator`."""
    usd_per_hour: float


class Projection(msgspec.Struct, frozen=True):
    """Where the active block ends at its current pace."""

    tokens: int
    cost_usd: float
    """Rounded to the cent, as ccusage rounds it."""
    minutes_left: int


class Block(msgspec.Struct, frozen=True):
    """One 5-hour block (or a gap between two)."""

    start: float
    end: float
    last: float | None
    """The block's last response (None for a gap): ccusage's `actualEndTime`."""
    first: float | None
    gap: bool
    active: bool
    entries: int
    tokens: TokenCounts
    cost_usd: float
    cost_complete: bool
    models: tuple[str, ...]
    """In order of first use."""
    burn: Burn | None = None
    """Only for the active block, as ccusage."""
    projection: Projection | None = None

    @property
    def id(self) -> str:
        return ("gap-" if self.gap else "") + iso_ms(self.start)


def _ms(ts: float) -> int:
    return round(ts * 1000)


def identify_blocks(entries: Iterable[BlockEntry], now: float) -> list[Block]:
    """Every block and gap over `entries` (any order), oldest first, as of `now`."""
    ordered = sorted(entries, key=lambda e: e.timestamp)
    blocks: list[Block] = []
    current: list[BlockEntry] = []
    start_ms = 0
    for entry in ordered:
        at = _ms(entry.timestamp)
        if current:
            last_ms = _ms(current[-1].timestamp)
            if at - start_ms > _BLOCK_MS or at - last_ms > _BLOCK_MS:
                blocks.append(make_block(start_ms, current, now))
                if at - last_ms > _BLOCK_MS:
                    blocks.append(gap_block(last_ms, at))
                current = []
        if not current:
            start_ms = at - at % _HOUR_MS
        current.append(entry)
    if current:
        blocks.append(make_block(start_ms, current, now))
    return blocks


def make_block(start_ms: int, entries: Sequence[BlockEntry], now: float) -> Block:
    tokens = ZERO
    cost = 0.0
    complete = True
    models: dict[str, None] = {}
    for e in entries:
        tokens = tokens + e.tokens
        if e.cost_usd is None:
            complete = False
        else:
            cost += e.cost_usd  # summed in time order, as ccusage sums it
        if e.model:
            models.setdefault(e.model)
    start = start_ms / 1000
    first, last = entries[0].timestamp, entries[-1].timestamp
    now_ms, end_ms = _ms(now), start_ms + _BLOCK_MS
    active = now_ms - _ms(last) < _BLOCK_MS and now_ms < end_ms
    block = Block(
        start, end_ms / 1000, last, first, False, active, len(entries), tokens, cost,
        complete, tuple(models),
    )  # fmt: skip
    if not active:
        return block
    burn = burn_of(block)
    return msgspec.structs.replace(block, burn=burn, projection=project(block, burn, now))


def gap_block(last_ms: int, next_ms: int) -> Block:
    start = (last_ms + _BLOCK_MS) / 1000
    return Block(start, next_ms / 1000, None, None, True, False, 0, ZERO, 0.0, True, ())


def burn_of(block: Block) -> Burn | None:
    """Tokens and dollars per minute from the first response to the last; none within one
    instant (a single response)."""
    if block.first is None or block.last is None:
        return None
    minutes = (_ms(block.last) - _ms(block.first)) / 60_000
    if minutes <= 0:
        return None
    t = block.tokens
    return Burn(t.total / minutes, (t.input + t.output) / minutes, block.cost_usd / minutes * 60)


def project(block: Block, burn: Burn | None, now: float) -> Projection | None:
    if burn is None:
        return None
    minutes = round((_ms(block.end) - _ms(now)) / 60_000)
    tokens = round(block.tokens.total + burn.tokens_per_min * minutes)
    cost = round((block.cost_usd + burn.usd_per_hour / 60 * minutes) * 100) / 100
    return Projection(tokens, cost, max(minutes, 0))


def current_block(blocks: Sequence[Block]) -> Block | None:
    """The active block, if any (at most one is: each starts after the last one's end)."""
    return next((b for b in reversed(blocks) if b.active), None)


def chain_start(intervals: Iterable[tuple[float, float]], since: float) -> float:
    """The earliest time whose responses can change the blocks from `since` on.

    A block's start depends on the blocks before it, back to the last quiet stretch of more
    than 5 hours: the first response after one always starts a block. `intervals` are the
    sessions' (first, last) response times; walking back from `since`, the first gap of more
    than 5 hours in their union ends the chain (the intervals overlapping `since` count
    whole, which only reads more than needed).
    """
    start = since
    for first, last in sorted(intervals, key=lambda i: -i[1]):
        if start - last > BLOCK_S:  # the latest of the rest ends before this gap: all do
            break
        start = min(start, first)
    return start


def iso_ms(ts: float) -> str:
    """UTC with milliseconds, as ccusage writes block times: 2026-11-20T11:00:00.000Z."""
    from datetime import UTC, datetime

    ms = _ms(ts)
    at = datetime.fromtimestamp(ms // 1000, UTC)
    return at.strftime("%Y-%m-%dT%H:%M:%S") + f".{ms % 1000:03d}Z"
