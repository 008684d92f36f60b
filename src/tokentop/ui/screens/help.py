"""HelpScreen (keys, columns, flags) and ParseErrorsScreen (files with unparseable lines)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from rich.console import Group
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from tokentop.model import FileHealth
from tokentop.render.text import safe
from tokentop.ui.views.rows import FLAG_LEGEND, SORTS

COLUMN_HELP = (
    ("STATUS", "live: activity within live_timeout_s; idle; ended; paused/killed/term by you"),
    ("TOKENS", "every kind: input, output, cache read and write, reasoning; ≈ = estimated"),
    ("COST", "priced models only; ? = no price known, ≥ = part unpriced, ≈ = estimated"),
    ("BURN", "tokens per minute and dollars per hour over the last 5 minutes"),
    ("LAST 10m", "tokens per minute, one block per minute, oldest on the left"),
    ("BUDGET", "share of the session's budget used ($ or tokens, whichever is further)"),
    ("ETA", "time to reach the budget at the current burn"),
)


class HelpScreen(ModalScreen[None]):
    """Keys as currently bound (config rebinding included), columns, flags and sorting."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,question_mark", "dismiss", "Close", show=False),
    ]

    def __init__(self, keys: Sequence[tuple[str, str, str]], config_note: str) -> None:
        super().__init__()
        self.keys = keys
        self.config_note = config_note

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide"):
            yield Static(Text("tokentop help", style="bold"), classes="dialog-title")
            yield Static(self.render_help())

    def render_help(self) -> Group:
        keys = _key_table(self.keys)
        columns = _two_columns("Column", "Meaning", COLUMN_HELP)
        flags = _two_columns("Flag", "Meaning", FLAG_LEGEND)
        sorting = Text(
            f"Sort columns, in order: {', '.join(SORTS)}. Numbers sort largest first, "
            "names A→Z; the reverse key flips it. The header shows the current sort.",
            style="dim",
        )
        note = Text(self.config_note, style="dim")
        gap = Text("")
        return Group(keys, gap, columns, gap, flags, gap, sorting, note)


def _two_columns(left: str, right: str, rows: Sequence[tuple[str, str]]) -> Table:
    table = Table(left, right, box=None, pad_edge=False, header_style="bold")
    for a, b in rows:
        table.add_row(Text(a, style="bold cyan"), Text(b))
    return table


def _key_table(rows: Sequence[tuple[str, str, str]]) -> Table:
    table = Table("Key", "Action", box=None, pad_edge=False, header_style="bold")
    table.add_column(Text("[keys] id"))  # Text: a str header would be read as markup
    for key, action, binding_id in rows:
        table.add_row(Text(key, style="bold cyan"), Text(action), Text(binding_id, style="dim"))
    return table


class ParseErrorsScreen(ModalScreen[None]):
    """Every file with unparseable lines, with the last error seen in it."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,q,e", "dismiss", "Close", show=False),
    ]

    def __init__(self, files: Sequence[FileHealth]) -> None:
        super().__init__()
        self.files = files

    def compose(self) -> ComposeResult:
        with VerticalScroll(classes="dialog wide"):
            yield Static(Text("Files with unparseable lines", style="bold"), classes="dialog-title")
            yield Static(parse_errors_table(self.files))


def parse_errors_table(files: Sequence[FileHealth]) -> Table | Text:
    bad = sorted((f for f in files if f.bad_lines), key=lambda f: -f.bad_lines)
    if not bad:
        return Text(f"All {len(files)} files parsed cleanly.", style="green")
    table = Table("Bad", "Lines", "Agent", "File / last error", box=None, header_style="bold")
    for f in bad:
        where = Text(safe(f.path))
        if f.last_error:
            where.append(f"\n{safe(f.last_error)}", style="yellow")
        table.add_row(Text(str(f.bad_lines), style="bold red"), str(f.lines), f.agent, where)
    return table
