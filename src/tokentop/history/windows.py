"""The vendors' usage windows for the app's header, official where the vendor said, computed
where tokentop can count.

- Claude, computed: the current 5-hour block (history/blocks.py), from the Claude Code files
  of the sessions that can matter, read by a BlockFeed.
- Claude, official: what Claude Code last handed `tokentop statusline` (history/official.py).
- Codex, official: the newest `rate_limits` any local Codex session recorded.

A `WindowWatch` is an engine listener: `take` (engine thread) only notes the snapshot and
wakes its own thread, which reads the files (at most every `every_s`) and publishes a frozen
`Windows`; the header shows `current()` through render/overview.py. A read that fails is
kept as `error`, shown, and tried again on the next snapshot.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import msgspec

from tokentop.engine.ledger import CostFn
from tokentop.history.block_feed import BlockFeed, claude_sessions, files_since
from tokentop.history.blocks import BLOCK_S, Block, BlockEntry, current_block, identify_blocks
from tokentop.history.official import read_state
from tokentop.model import LedgerSnapshot, RateLimits


class Windows(msgspec.Struct, frozen=True):
    """Everything the header shows about the vendors' windows, as of `at`."""

    at: float
    claude_block: Block | None = None
    """The active 5-hour block, computed; None when no Claude response is that recent."""
    claude: RateLimits | None = None
    """Claude's own windows, as the status line last heard them."""
    codex: RateLimits | None = None
    """Codex's own windows, as the newest rollout recorded them."""
    error: str = ""


def newest_codex(snapshot: LedgerSnapshot) -> RateLimits | None:
    """The most recent rate limits among this machine's Codex sessions (they are the
    account's, whichever session heard them)."""
    heard = [
        s.limits
        for s in snapshot.sessions
        if s.limits is not None and s.key.agent == "codex" and not s.host
    ]
    return max(heard, key=lambda limits: limits.observed_at, default=None)


class WindowWatch:
    """Keeps `Windows` up to date in a thread of its own; see the module doc."""

    def __init__(
        self,
        cost_fn: CostFn,
        now: Callable[[], float],
        official: Path | None = None,
        every_s: float = 1.0,
    ) -> None:
        self.feed = BlockFeed(cost_fn)
        self._read_for: tuple[float, list[str]] | None = None
        self._entries: list[BlockEntry] = []
        """The feed's entries from the chain's start, as of the last read that changed them:
        a tick that reads nothing new (most of them) does not rebuild or copy them."""
        self.now = now
        self.official = official
        """The status line's state file; None reads no official Claude windows."""
        self.every_s = every_s
        self._lock = threading.Condition()
        self._snapshot: LedgerSnapshot | None = None
        self._current = Windows(0.0)
        self._closed = False
        self.ready = threading.Event()
        """Set once a first snapshot's files have been read."""
        self._thread = threading.Thread(target=self._run, name="tokentop-windows", daemon=True)
        self._thread.start()

    def take(self, snapshot: LedgerSnapshot) -> None:
        with self._lock:
            self._snapshot = snapshot
            self._lock.notify()

    def current(self) -> Windows:
        with self._lock:
            return self._current

    def close(self, timeout: float = 5.0) -> None:
        with self._lock:
            self._closed = True
            self._lock.notify()
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._lock.wait_for(lambda: self._closed or self._snapshot is not None)
                if self._closed:
                    return
                snapshot, self._snapshot = self._snapshot, None
            if snapshot is not None:
                self._publish(self._read(snapshot))
            with self._lock:  # a burst of snapshots costs one read per every_s
                self._lock.wait_for(lambda: self._closed, self.every_s)

    def _read(self, snapshot: LedgerSnapshot) -> Windows:
        now = self.now()
        try:
            start, files = files_since(claude_sessions(snapshot), now - BLOCK_S)
            changed = self.feed.read(files)
            if changed or self._read_for != (start, files):
                self.feed.forget(start, files)
                self._entries, self._read_for = self.feed.entries(start), (start, files)
            block = current_block(identify_blocks(self._entries, now))
            claude = read_state(self.official).claude if self.official is not None else None
            return Windows(now, block, claude, newest_codex(snapshot))
        except Exception as exc:  # a bug must not end the header's figures silently
            return msgspec.structs.replace(self.current(), error=f"{type(exc).__name__}: {exc}")

    def _publish(self, windows: Windows) -> None:
        with self._lock:
            self._current = windows
        self.ready.set()
