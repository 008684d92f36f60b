"""Following the shared action log: what every tokentop process did to agents' processes.

Each ProcessController appends its actions to one JSONL file (`default_action_log`), so a
kill by a cron `tokentop run`, a pause by `guard` or a key in the app is known to all the
others. A follower reads only what was appended since its last look (the Tailer keeps the
offset and notices a rotated or truncated log), from the start by default: a process that
starts after an action still knows it (a `watch` started after `guard` killed a session does
not decide to kill it again).

The record type lives here, not beside the controller: reading the log (every Watchdog does)
must not import psutil, which `sessions` over an old history never needs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import msgspec

from tokentop.engine.tail import Tailer, TailState

LoggedAction = Literal["pause", "resume", "terminate", "kill", "block"]
"""What the action log records: the process actions, and the hook blocking a tool call."""


class ActionResult(msgspec.Struct, frozen=True):
    """What an action did; one line of the action log."""

    action: LoggedAction
    ok: bool
    pids: tuple[int, ...]
    """Every pid that was signalled."""
    message: str
    """One human sentence: what happened or why nothing was done."""
    reason: str
    origin: str
    """Who asked: "key:p", "policy:loop", "cli:run" ..."""
    timestamp: float
    pid: int = 0
    """The target's pid (the root of the tree)."""
    session: str = ""
    actor: str = ""
    """Which tokentop process acted: "app", "run", "guard", "serve", "hook"."""


def default_action_log() -> Path:
    """The action log in the platform's user data dir (e.g. ~/.local/share/tokentop)."""
    from tokentop.dirs import user_dir

    return user_dir("data") / "actions.jsonl"


def read_action_log(path: Path) -> tuple[list[ActionResult], int]:
    """Read the action log back; returns the results and the number of unreadable lines."""
    decoder = msgspec.json.Decoder(ActionResult)
    results: list[ActionResult] = []
    bad = 0
    try:
        data = path.read_bytes()
    except OSError:
        return results, 0  # no log yet (or unreadable): nothing to show
    for line in data.splitlines():
        try:
            results.append(decoder.decode(line))
        except msgspec.DecodeError:
            bad += 1
    return results, bad


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
