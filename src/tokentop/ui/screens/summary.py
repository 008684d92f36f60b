"""SummaryScreen: one recorded session as Markdown, the text `tokentop summary` prints."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen

from tokentop.history.report_rows import Judged as Routed
from tokentop.history.summary import SessionSummary
from tokentop.render.markdown import summary_markdown


class SummaryScreen(ModalScreen[None]):
    """One recorded session as Markdown, the same text `tokentop summary` prints."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,enter", "dismiss", "Close", show=False),
    ]

    def __init__(self, summary: SessionSummary, routed: Routed | None = None) -> None:
        super().__init__()
        self.summary = summary
        self.routed = routed
        """Its cheapest-model arithmetic and flags, worked out by the core (none yet: none)."""

    def compose(self) -> ComposeResult:
        from textual.widgets import Markdown  # markdown-it costs ~30 ms: not at start-up

        with VerticalScroll(classes="dialog wide"):
            routed = self.routed
            route, flags = (routed.route, routed.flags) if routed is not None else (None, ())
            yield Markdown(summary_markdown(self.summary, "#", route, flags))
