"""Following the shared action log: what every tokentop process did to agents' processes.

Each ProcessController appends its actions to one JSONL file (`default_action_log`), so a
kill by a cron `tokentop run`, a pause by `guard` or a key in the app is known to all the
others. A follower reads only what was appended since its last look (the Tailer keeps the
offset and notices a rotated or truncated log), from the start by default: a process that
starts after an action still knows it (a `watch` started after `guard` killed a session does
not decide to kill it again).
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from tokentop.engine.tail import Tailer, TailState
from tokentop.processes.control import ActionResult, default_action_log

_DECODER = msgspec.json.Decoder(ActionResult)


class ActionLogFollower:
    """Call it for the actions appended since the last call (a Watchdog's action feed)."""

    def __init__(self, path: Path | None = None, *, from_end: bool = False) -> None:
        self.path = path or default_action_log()
        self.bad_lines = 0
        self.tailer = Tailer(TailState(path=str(self.path)))
        if from_end:
            size = self.path.stat().st_size if self.path.exists() else 0
            self.tailer.read_new()  # records the file's identity, so a rotation resets
            self.tailer.state.offset = size

    def __call__(self) -> list[ActionResult]:
        found: list[ActionResult] = []
        while True:
            result = self.tailer.read_new()
            for line in result.data.splitlines():
                try:
                    found.append(_DECODER.decode(line))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    self.bad_lines += 1
            if not result.more:
                return found
