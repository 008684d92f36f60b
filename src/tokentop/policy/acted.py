"""What has been done to each session's process, by this tokentop process or any other.

Every tokentop process (the app, `run`, `guard`, `watch`, the hook's escalation) appends its
actions to one shared action log. The Watchdog of each reads it through a feed, so a kill by a
cron `run` shows as `killed` in the app within a tick, a session paused by `guard` reads
`paused` in `watch`, and no process decides again what another one already acted on.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import Protocol

import msgspec

from tokentop.model import Action, SessionKey

STOPPING: frozenset[str] = frozenset({"pause", "terminate", "kill"})


class ActionLike(Protocol):
    """An action as the shared log records it (processes.control.ActionResult fits)."""

    @property
    def action(self) -> str: ...
    @property
    def ok(self) -> bool: ...
    @property
    def origin(self) -> str: ...
    @property
    def timestamp(self) -> float: ...
    @property
    def session(self) -> str: ...


ActionFeed = Callable[[], Iterable[ActionLike]]
"""New actions since the last call (all of them at the first: the log's history)."""


class Acted(msgspec.Struct, frozen=True):
    verb: Action
    at: float
    origin: str = ""
    """Who asked: "key:k", "policy:budget", "policy:soft-stop"…"""

    @property
    def detector(self) -> str:
        """The detector whose decision this carried out ("" for a person's key)."""
        return self.origin.removeprefix("policy:") if self.origin.startswith("policy:") else ""


class ActionMemory:
    """The last stopping action on each session (a resume clears it), from any process."""

    def __init__(self, feed: ActionFeed | None = None) -> None:
        self.feed = feed
        self._acted: dict[SessionKey, Acted] = {}

    def note(self, key: SessionKey, verb: Action, ok: bool, at: float, origin: str = "") -> bool:
        """Remember an action carried out; failed ones change nothing. True if it changed
        what is known (an action already known, e.g. read back from the log, does not)."""
        if not ok:
            return False
        if verb == "resume":
            before = self._acted.get(key)
            if before is not None and before.at <= at:
                del self._acted[key]
                return True
            return False
        before = self._acted.get(key)
        if before is not None and before.at >= at:
            return False  # a later one is known already (or this very one)
        self._acted[key] = Acted(verb, at, origin)
        return True

    def pull(self) -> set[SessionKey]:
        """Read the feed; the sessions whose last action changed."""
        if self.feed is None:
            return set()
        changed: set[SessionKey] = set()
        for action in self.feed():
            verb = action.action
            key = SessionKey.parse(action.session)
            if key is None or verb not in (*STOPPING, "resume"):
                continue  # a hook block stops no process
            if self.note(key, verb, action.ok, action.timestamp, action.origin):  # type: ignore[arg-type]
                changed.add(key)
        return changed

    def get(self, key: SessionKey) -> Acted | None:
        return self._acted.get(key)

    def outdated(self, key: SessionKey, last_ts: float) -> None:
        """The session was active after its last action: the action no longer says how it
        stands (a paused session resumed by hand, a killed one resumed by its user)."""
        acted = self._acted.get(key)
        if acted is not None and last_ts > acted.at:
            del self._acted[key]

    def handled(self, key: SessionKey, detector: str) -> bool:
        """Whether the session's last action carried out this detector's decision, so no
        process decides it again (until a resume or new activity clears it)."""
        acted = self._acted.get(key)
        return acted is not None and acted.detector == detector

    def prune(self, keep: Collection[SessionKey]) -> None:
        """Forget sessions no longer judged."""
        for key in [k for k in self._acted if k not in keep]:
            del self._acted[key]
