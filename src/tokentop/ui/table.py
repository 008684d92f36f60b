"""SessionTable: a DataTable that is synced by row key, touching only the cells that changed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from rich.console import JustifyMethod
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist, ColumnKey, RowDoesNotExist

from tokentop.budgets import Level
from tokentop.ui.rows import COLUMNS, RowView, SortName

STATUS_STYLES = {
    "live": "bold green",
    "idle": "yellow",
    "ended": "dim",
    "paused": "bold magenta",
    "killed": "bold red",
}
LEVEL_STYLES = {Level.OK: "", Level.WARN: "bold yellow", Level.OVER: "bold red"}
FIELDS = tuple(c.key for c in COLUMNS)
RIGHT_ALIGNED = frozenset({"tokens", "cost", "eta"})


class KeyedText(Text):
    """A status cell that knows its row, so DataTable.sort can order rows by our key."""

    row_key: str = ""


def cells(key: str, row: RowView) -> list[Text]:
    """Styled cells for a new row, in column order."""
    return [cell(key, row, name) for name in FIELDS]


def cell(key: str, row: RowView, name: str) -> Text:
    """One styled cell; the status cell carries the row key (see KeyedText)."""
    if name == "status":
        status = KeyedText(("● " if row.tagged else "  ") + row.status, STATUS_STYLES[row.status])
        status.row_key = key
        return status
    value: str = getattr(row, name)
    level_style = LEVEL_STYLES[row.level]
    if name in ("cost", "budget", "eta"):
        style = level_style
    elif name == "flags":
        style = level_style or "yellow"
    elif name == "burn":
        style = "bold" if value != "—" else "dim"
    elif name == "spark":
        style = "cyan"
    else:
        style = "bold" if name == "project" and row.tagged else ""
    return Text(value, style, justify="right" if name in RIGHT_ALIGNED else "left")


class SessionTable(DataTable[Text]):
    """One row per session, keyed by the session key string."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "app.open_details", "Details", show=False, id="open-details"),
    ]

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.shown: dict[str, RowView] = {}

    def on_mount(self) -> None:
        for column in COLUMNS:
            self.add_column(column.label, width=column.width, key=column.key)

    @property
    def current_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        except CellDoesNotExist:
            return None

    def sync(self, rows: Mapping[str, RowView], order: Sequence[str]) -> None:
        """Make the table show `rows` in `order`: add, remove and update by key only."""
        keep = self.current_key
        for key in [k for k in self.shown if k not in rows]:
            self.remove_row(key)
            del self.shown[key]
        for key, row in rows.items():
            old = self.shown.get(key)
            if old is None:
                self.add_row(*cells(key, row), key=key)
            elif old != row:
                self._update_changed(key, old, row)
            self.shown[key] = row
        self._reorder(order)
        self._restore_cursor(keep)

    def _update_changed(self, key: str, old: RowView, new: RowView) -> None:
        restyle = old.level != new.level or old.tagged != new.tagged
        for index, name in enumerate(FIELDS):
            if restyle or old[index] != new[index]:
                self.update_cell(key, name, cell(key, new, name))

    def _reorder(self, order: Sequence[str]) -> None:
        current = [row.key.value for row in self.ordered_rows]
        if current == list(order):
            return
        rank = {key: i for i, key in enumerate(order)}
        self.sort("status", key=lambda cell: rank.get(cell.row_key, len(rank)))

    def _restore_cursor(self, key: str | None) -> None:
        if key is None:
            return
        try:
            row = self.get_row_index(key)
        except RowDoesNotExist:
            return
        if row != self.cursor_row:
            self.move_cursor(row=row, animate=False, scroll=False)

    def mark_sort(self, sort: SortName, descending: bool) -> None:
        """Show which column orders the rows, htop style."""
        arrow = "▼" if descending else "▲"
        for column in COLUMNS:
            label = column.label + (arrow if column.sort == sort else "")
            justify: JustifyMethod = "right" if column.key in RIGHT_ALIGNED else "left"
            self.columns[ColumnKey(column.key)].label = Text(label, justify=justify)
        self.refresh()
