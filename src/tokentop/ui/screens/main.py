"""MainScreen: header totals, the session table, a filter line and the footer."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.screen import Screen
from textual.widgets import Input, Static

from tokentop.render.overview import ListedTotal
from tokentop.ui import keys
from tokentop.ui.messages import FilterEdited, MainScreenMounted
from tokentop.ui.widgets.footer import KeyFooter
from tokentop.ui.widgets.header import HeaderTotals, ListedTotalLine
from tokentop.ui.widgets.session_table import SessionTable


class MainScreen(Screen[None]):
    """The screen users keep open; its keys act through the app (`app.*` actions)."""

    BINDINGS: ClassVar[list[BindingType]] = keys.bindings(keys.screen_ids())
    AUTO_FOCUS = "#sessions"

    def compose(self) -> ComposeResult:
        yield HeaderTotals(id="header")
        yield Static("", id="banner")
        yield Static("", id="empty")
        yield SessionTable(id="sessions")
        yield ListedTotalLine(id="listed-total")
        yield Input(placeholder="filter: agent, project, model, session id…", id="filter")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.filter_input.display = False
        self.query_one("#empty", Static).display = False
        self.query_one("#banner", Static).display = False
        self.post_message(MainScreenMounted())

    @property
    def table(self) -> SessionTable:
        return self.query_one(SessionTable)

    @property
    def header(self) -> HeaderTotals:
        return self.query_one(HeaderTotals)

    @property
    def filter_input(self) -> Input:
        return self.query_one("#filter", Input)

    def show_empty(self, text: str) -> None:
        """Say why the table is empty (no sessions, all filtered out); hide when it is not."""
        note = self.query_one("#empty", Static)
        note.display = bool(text)
        if text:
            note.update(text)

    def show_total(self, total: ListedTotal) -> None:
        self.query_one(ListedTotalLine).show(total)

    def show_banner(self, text: str, *, failed: bool) -> None:
        """The engine's state when it is not simply running: red while it is down."""
        banner = self.query_one("#banner", Static)
        banner.display = bool(text)
        banner.set_class(failed, "failed")
        banner.update(text)

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.post_message(FilterEdited(event.value))

    def on_input_submitted(self) -> None:
        self.table.focus()

    def open_filter(self) -> None:
        self.filter_input.display = True
        self.filter_input.focus()

    def close_filter(self) -> bool:
        """Clear and hide the filter line; False when there was nothing to close."""
        field = self.filter_input
        if not field.display and not field.value:
            return False
        field.value = ""
        field.display = False
        self.table.focus()
        return True
