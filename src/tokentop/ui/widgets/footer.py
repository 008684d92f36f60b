"""The key footer: Textual's, compact on a narrow terminal so that every key fits."""

from __future__ import annotations

from textual.events import Resize
from textual.widgets import Footer

COMPACT_BELOW = 100
"""Columns under which the footer drops the spaces around its keys (Textual's compact
style): at 80 the main screen's ten keys took 96 columns, and Help and Quit were cut off."""


class KeyFooter(Footer):
    def on_resize(self, event: Resize) -> None:
        self.compact = event.size.width < COMPACT_BELOW
