"""Time as a dependency, so rates and detectors are testable without sleeping."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Unix seconds."""
        ...


class SystemClock:
    def now(self) -> float:
        return time.time()


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: float = 1_763_640_000.0) -> None:
        self.t = start

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


def spaced(work: Callable[[], object], share: float, floor: float) -> float:
    """Run `work`; return how long to wait before running it again so that it takes at most
    `share` of a core (never less than `floor`). Background chores whose cost grows with the
    history (a stat sweep, judging every session) use it to stay cheap on a big one."""
    spent = time.thread_time()
    work()
    return max(floor, (time.thread_time() - spent) / share)
