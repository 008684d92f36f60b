"""Events from no file (telemetry from another machine), queued by any thread until the
engine thread applies them."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from tokentop.model import Event


class Inbox:
    """A list under its own lock: not the engine lock, which a scan holds for seconds, so
    a sender never waits on one."""

    def __init__(self) -> None:
        self._items: list[tuple[str, list[Event]]] = []
        self._lock = threading.Lock()

    def put(self, events: Sequence[Event], origin: str) -> None:
        with self._lock:
            self._items.append((origin, list(events)))

    @property
    def backlog(self) -> int:
        """Events queued and not taken yet."""
        with self._lock:
            return sum(len(events) for _, events in self._items)

    def take(self) -> list[tuple[str, list[Event]]]:
        """Everything queued, oldest first; the inbox is empty afterwards."""
        with self._lock:
            items, self._items = self._items, []
        return items
