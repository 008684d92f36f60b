"""Claude sessions seen both in a transcript here and in telemetry: which responses match.

The telemetry event names the response by `request_id`, the transcript by `message.id`
(its dedupe key), and writes the `requestId` beside it. This index follows the session's
transcript files with their own tailers (only new bytes are read): a telemetry response
whose request id is in it confirms a transcript response; any other is unconfirmed. The
same index gives the transcript's own totals for the reconciliation.
"""

from __future__ import annotations

import threading
from pathlib import Path

from tokentop.engine.tail import Tailer, TailState
from tokentop.model import Event, TokenCounts, UsageEvent
from tokentop.sources.claude_code import ClaudeFileParser


class TranscriptIndex:
    """One session's transcript responses by request id, and their totals."""

    def __init__(self) -> None:
        self.files: dict[str, tuple[Tailer, ClaudeFileParser]] = {}
        self.by_request: dict[str, str] = {}
        """request id -> the transcript's dedupe key."""
        self.by_key: dict[str, tuple[TokenCounts, float | None, str]] = {}
        """dedupe key -> the largest copy's tokens, recorded cost and model."""
        self._lock = threading.Lock()

    def follow(self, paths: list[str]) -> dict[str, tuple[TokenCounts, float | None, str]]:
        """Read what the session's transcript files added since the last call; a copy of
        `by_key` after it (any thread may call)."""
        with self._lock:
            for path in paths:
                if path not in self.files and path.endswith(".jsonl") and Path(path).is_file():
                    tailer = Tailer(TailState(path=path))
                    self.files[path] = (tailer, ClaudeFileParser(path=path))
            for tailer, parser in self.files.values():
                self._read(tailer, parser)
            return dict(self.by_key)

    def _read(self, tailer: Tailer, parser: ClaudeFileParser) -> None:
        while True:
            result = tailer.read_new()
            if result.data:
                events: list[Event] = []
                parser.feed(result.data, events)
                self._index(events)
            if not result.more:
                return

    def _index(self, events: list[Event]) -> None:
        for event in events:
            if type(event) is not UsageEvent:
                continue
            old = self.by_key.get(event.dedupe_key)
            if old is None or event.tokens.total > old[0].total:
                self.by_key[event.dedupe_key] = (event.tokens, event.cost_usd, event.model)
            if event.request_id:
                self.by_request[event.request_id] = event.dedupe_key
