"""Messages into the app: from the engine and history threads, its workers and its screens.

Workers only post these; the app's handlers own the state they change.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from textual.message import Message

from tokentop.engine.failure import EngineFailure
from tokentop.history.git_output import GitValue
from tokentop.model import Action, SessionKey, SessionSnapshot
from tokentop.processes.protocols import ActionOutcome, ProcessInfo


class Step(NamedTuple):
    """One confirmed action on one session's process."""

    verb: Action
    session: SessionSnapshot
    ref: ProcessInfo


class JudgementMade(Message):
    """The inbox has news (a judgement, or the keeper's); a newer one replaces this while it
    is still queued, since the handler drains everything at once."""

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, JudgementMade)


class FilterEdited(Message):
    """The user changed the filter text."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text


class MainScreenMounted(Message):
    """The main screen has its widgets, so the app can draw into them."""


class EngineFailed(Message):
    """The engine's live loop stopped with an error (posted from the engine thread)."""

    def __init__(self, failure: EngineFailure) -> None:
        super().__init__()
        self.failure = failure


class ProcessesMapped(Message):
    """A worker found the process of each target session (None: none is known)."""

    def __init__(
        self,
        what: str,
        origin: str,
        found: Sequence[tuple[SessionSnapshot, str, ProcessInfo | None]],
    ) -> None:
        super().__init__()
        self.what, self.origin, self.found = what, origin, found


class ActionDone(Message):
    """One confirmed action was carried out (or failed), logged and told to the watchdog."""

    def __init__(self, step: Step, outcome: ActionOutcome) -> None:
        super().__init__()
        self.step, self.outcome = step, outcome


class ProcessFound(Message):
    """The process of the session whose details are open."""

    def __init__(self, key: SessionKey, ref: ProcessInfo | None) -> None:
        super().__init__()
        self.key, self.ref = key, ref


class GitAssessed(Message):
    """What git says a session produced, asked at `at`."""

    def __init__(self, key: SessionKey, value: GitValue, at: float) -> None:
        super().__init__()
        self.key, self.value, self.at = key, value, at
