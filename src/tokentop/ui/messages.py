"""Messages between the engine thread, the main screen and the app."""

from __future__ import annotations

from textual.message import Message

from tokentop.engine.failure import EngineFailure
from tokentop.model import LedgerSnapshot


class LedgerUpdated(Message):
    """The engine has a new snapshot; a newer one replaces this while it is still queued."""

    def __init__(self, snapshot: LedgerSnapshot) -> None:
        super().__init__()
        self.snapshot = snapshot

    def can_replace(self, message: Message) -> bool:
        return isinstance(message, LedgerUpdated)


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
