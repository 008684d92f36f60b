"""Claude responses with their own times, read for the 5-hour blocks (history/blocks.py).

The ledger keeps a session's spend per minute, which loses what a block needs to the
millisecond (its last response, its pace) and how many responses it holds. So the blocks
read the Claude Code files again with the same parser, and keep each response once, at its
largest copy across all files (the ledger's rule, and ccusage's). Only the files that can
matter are read: those of sessions active since `chain_start` (see blocks.py), which the
engine's snapshot names; each is followed from where it was left, so the app's header pays
only for new lines. history/windows.py does that in a thread of its own for the app.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from tokentop.engine.ledger import CostFn
from tokentop.engine.tail import Tailer
from tokentop.history.blocks import Block, BlockEntry, chain_start, identify_blocks
from tokentop.model import Event, LedgerSnapshot, SessionSnapshot, UsageEvent
from tokentop.sources.base import FileParser
from tokentop.sources.claude_code import AGENT, ClaudeCodeSource

MAX_READS_PER_FILE = 4096
"""Per `read` call and file: 4 GiB in 1 MiB pieces, so a file that keeps growing as fast as
it is read cannot hold the reader forever."""


class BlockFeed:
    """Counted Claude responses (time, tokens, cost, model) from the files it is given."""

    def __init__(self, cost_fn: CostFn) -> None:
        self.cost_fn = cost_fn
        self._claude = ClaudeCodeSource(config_dirs=[])
        self._files: dict[str, tuple[Tailer, FileParser]] = {}
        self._entries: dict[str, tuple[int, BlockEntry]] = {}
        """Dedupe key -> (its largest total, the entry at that copy)."""
        self.bad_lines = 0

    def read(self, paths: Iterable[str]) -> int:
        """Read what is new in each file; returns how many responses were added or grew."""
        return sum(self._read_file(path) for path in paths)

    def _read_file(self, path: str) -> int:
        followed = self._files.get(path)
        if followed is None:
            followed = self._files[path] = (Tailer(path), self._claude.new_parser(Path(path)))
        tailer, parser = followed
        changed = 0
        for _ in range(MAX_READS_PER_FILE):
            result = tailer.read_new()
            if result.reset:  # rewritten: read again (its responses count once, by key)
                parser = self._claude.new_parser(Path(path))
                self._files[path] = (tailer, parser)
            if result.data:
                events: list[Event] = []
                before = parser.bad_lines
                parser.feed(result.data, events)
                self.bad_lines += parser.bad_lines - before
                changed += self._take(events)
            if not result.more:
                break
        return changed

    def _take(self, events: Sequence[Event]) -> int:
        changed = 0
        for event in events:
            if type(event) is not UsageEvent:
                continue
            total = event.tokens.total
            known = self._entries.get(event.dedupe_key)
            if known is not None and known[0] >= total:
                continue
            cost = event.cost_usd
            if cost is None:
                cost = self.cost_fn(event.model, event.tokens)
            entry = BlockEntry(event.timestamp, event.tokens, cost, event.model)
            self._entries[event.dedupe_key] = (total, entry)
            changed += 1
        return changed

    def forget(self, before: float, keep: Iterable[str]) -> None:
        """Drop responses older than `before` and stop following files not in `keep`."""
        kept = set(keep)
        self._files = {p: f for p, f in self._files.items() if p in kept}
        self._entries = {k: v for k, v in self._entries.items() if v[1].timestamp >= before}

    def entries(self, since: float = float("-inf")) -> list[BlockEntry]:
        return [e for _, e in self._entries.values() if e.timestamp >= since]


def claude_sessions(snapshot: LedgerSnapshot) -> list[SessionSnapshot]:
    """This machine's Claude Code sessions (telemetry from elsewhere has no transcript here)."""
    return [s for s in snapshot.sessions if s.key.agent == AGENT and not s.host]


def files_since(sessions: Sequence[SessionSnapshot], since: float) -> tuple[float, list[str]]:
    """(the chain's start, the files of the sessions active from then on) for blocks from
    `since` on."""
    start = chain_start(((s.first_ts, s.last_ts) for s in sessions), since)
    files = [f for s in sessions if s.last_ts >= start for f in s.files]
    return start, sorted(set(files))


def blocks_since(
    snapshot: LedgerSnapshot, since: float, now: float, cost_fn: CostFn
) -> tuple[list[Block], int]:
    """Every block overlapping [since, now] (all of them for since = -inf), and bad lines."""
    start, files = files_since(claude_sessions(snapshot), since)
    feed = BlockFeed(cost_fn)
    feed.read(files)
    blocks = identify_blocks(feed.entries(start), now)
    return [b for b in blocks if b.end > since], feed.bad_lines
