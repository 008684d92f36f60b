"""SessionTable: one row per session, synced by key; a row is re-rendered only when it changed.

A Line API widget rather than DataTable. DataTable keys every render cache on one table-wide
update counter, so updating a single cell re-renders every visible cell (35-90 ms a frame
with 50 rows measured on the shared box), and with burn-rate sorting rows move on every
snapshot. Here each row's strip is cached by its RowView (plain strings) plus cursor and
stripe, so a moved or unchanged row costs a dict lookup.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding, BindingType
from textual.cache import LRUCache
from textual.geometry import Region, Size
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

from tokentop.policy.budgets import Level
from tokentop.ui.views.rows import (
    Layout,
    RowView,
    SortName,
    fit,
    header_label,
    layout_for,
    pad,
)

STATUS_STYLES = {
    "live": "bold green",
    "idle": "yellow",
    "ended": "dim",
    "paused": "bold magenta",
    "killed": "bold red",
    "term": "bold red",
    "exited": "dim",
}
LEVEL_STYLES = {Level.OK: "", Level.WARN: "bold yellow", Level.OVER: "bold red"}
RIGHT_ALIGNED = frozenset({"tokens", "cost", "eta"})
FULL = layout_for(10_000)
WIDTH = FULL.width
"""The width that shows every column."""
STRIP_CACHE_SIZE = 2048


def cell_text(row: RowView, name: str) -> str:
    """What a cell shows, as text (the status cell carries the tag mark)."""
    if name == "status":
        return ("● " if row.tagged else "  ") + row.status
    value: str = getattr(row, name)
    return value


def cell_style(row: RowView, name: str) -> str:
    level_style = LEVEL_STYLES[row.level]
    if name == "status":
        return STATUS_STYLES.get(row.status, "")
    if name in ("cost", "budget", "eta"):
        return level_style
    if name == "flags":
        return level_style or "yellow"
    if name == "burn":
        return "bold" if row.burn != "—" else "dim"
    if name == "spark":
        return "cyan"
    return "bold" if name == "project" and row.tagged else ""


def row_text(row: RowView, layout: Layout = FULL) -> Text:
    """The row as one line of fixed-width columns."""
    line = Text(" ", no_wrap=True, end="")
    for column in layout.columns:
        value = fit(cell_text(row, column.key), column.width, column.key)
        value = pad(value, column.width, column.key in RIGHT_ALIGNED)
        line.append(value, cell_style(row, column.key))
        line.append(" " * layout.gap)
    return line


class SessionTable(ScrollView, can_focus=True):
    """One row per session, keyed by the session key string; the first line is the header."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "app.open_details", "Details", show=False, id="open-details"),
        Binding("up", "cursor(-1)", "Up", show=False),
        Binding("down", "cursor(1)", "Down", show=False),
        Binding("pageup", "page(-1)", "Page up", show=False),
        Binding("pagedown", "page(1)", "Page down", show=False),
        Binding("home", "cursor_to(0)", "First", show=False),
        Binding("end", "cursor_to(-1)", "Last", show=False),
        Binding("right", "scroll_column(1)", "Right", show=False),
        Binding("left", "scroll_column(-1)", "Left", show=False),
    ]
    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "session-table--header",
        "session-table--cursor",
        "session-table--stripe",
    }
    DEFAULT_CSS = """
    SessionTable { background: $surface; }
    SessionTable > .session-table--header { text-style: bold; background: $panel; }
    SessionTable > .session-table--cursor { background: $block-cursor-blurred-background; }
    SessionTable:focus > .session-table--cursor {
        background: $block-cursor-background;
        color: $block-cursor-foreground;
        text-style: bold;
    }
    SessionTable > .session-table--stripe { background: $surface-lighten-1; }
    """

    cursor_row: reactive[int] = reactive(0)

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.shown: dict[str, RowView] = {}
        self.order: list[str] = []
        self.header = Text(" " * WIDTH)
        self.column_layout = FULL
        self._sort: tuple[SortName, bool] | None = None
        self._strips: LRUCache[tuple[object, ...], Strip] = LRUCache(STRIP_CACHE_SIZE)
        self._styles: dict[str, Style] = {}
        self.with_host = False
        self.chosen = False
        """Whether the user has put the cursor on a row: until then it stays on the top row
        while sessions load and re-sort (htop's and k9s's start), not on the first one read."""
        self.strips_rendered = 0
        """How many row strips were built (not served from cache); tests read it."""

    # -- data --------------------------------------------------------------------------------

    @property
    def row_count(self) -> int:
        return len(self.order)

    @property
    def current_key(self) -> str | None:
        return self.order[self.cursor_row] if self.order else None

    def row_index(self, key: str) -> int:
        return self.order.index(key)

    def sync(self, rows: Mapping[str, RowView], order: Sequence[str]) -> None:
        """Show `rows` in `order`; the cursor stays on its session when rows move."""
        keep = self.current_key
        self.shown = dict(rows)
        if list(order) != self.order:
            self.order = list(order)
            self.virtual_size = Size(self.column_layout.width, len(self.order) + 1)
            if not self.chosen:
                index = 0
            elif keep in self.shown:
                index = self.order.index(keep)
            else:
                index = self.cursor_row
            self.cursor_row = max(0, min(index, len(self.order) - 1))
        self.refresh()

    def show_hosts(self, on: bool) -> None:
        """Add the HOST column (sessions from several machines) or take it away."""
        if self.with_host != on:
            self.with_host = on
            self._relayout()

    def mark_sort(self, sort: SortName, descending: bool) -> None:
        """Show which column orders the rows, htop style."""
        self._sort = (sort, descending)
        header = Text(" ", no_wrap=True, end="")
        for column in self.column_layout.columns:
            label = header_label(column, sort, descending)
            right = column.key in RIGHT_ALIGNED
            label = label.rjust(column.width) if right else label.ljust(column.width)
            header.append(label + " " * self.column_layout.gap)
        self.header = header
        self.refresh()

    def on_resize(self) -> None:
        """Pick the columns that fit: at 80 columns BUDGET, ETA and FLAGS stay in view."""
        self._relayout()

    def _relayout(self) -> None:
        layout = layout_for(self.size.width or WIDTH, self.with_host)
        if layout == self.column_layout:
            return
        self.column_layout = layout
        self.virtual_size = Size(layout.width, len(self.order) + 1)
        self._strips.clear()
        if self._sort is not None:
            self.mark_sort(*self._sort)
        self.refresh()

    # -- rendering ---------------------------------------------------------------------------

    def render_lines(self, crop: Region) -> list[Strip]:
        """Look the component styles up once per frame, not once per line."""
        self._styles = {
            name: self.get_component_rich_style(f"session-table--{name}")
            for name in ("header", "cursor", "stripe")
        }
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        width = self.size.width
        if y == 0:
            strip = self._strip(("header", self.header.plain), self.header, "header")
        else:
            index = scroll_y + y - 1
            if index >= len(self.order):
                return Strip.blank(width, self.rich_style)
            row = self.shown[self.order[index]]
            kind = "cursor" if index == self.cursor_row else ("stripe" if index % 2 else "")
            strip = self._strip((row, kind, self.has_focus), row, kind)
        return strip.crop_extend(scroll_x, scroll_x + width, self.rich_style)

    def _strip(self, key: tuple[object, ...], content: RowView | Text, kind: str) -> Strip:
        """A full-width line for a row or the header, built once per distinct content."""
        width = max(self.column_layout.width, self.size.width)
        cache_key = (*key, self.app.theme, width)
        strip = self._strips.get(cache_key)
        if strip is None:
            self.strips_rendered += 1
            text = content if isinstance(content, Text) else row_text(content, self.column_layout)
            base = self.rich_style + self._styles.get(kind, Style())
            segments = text.render(self.app.console)
            strip = Strip(segments).apply_style(base).adjust_cell_length(width, base)
            self._strips[cache_key] = strip
        return strip

    # -- cursor ------------------------------------------------------------------------------

    def watch_cursor_row(self, old: int, new: int) -> None:
        self.refresh_line(old + 1)
        self.refresh_line(new + 1)
        self._scroll_to_cursor()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    def _scroll_to_cursor(self) -> None:
        visible = max(1, self.size.height - 1)
        top = int(self.scroll_y)
        if self.cursor_row < top:
            self.scroll_to(y=self.cursor_row, animate=False)
        elif self.cursor_row >= top + visible:
            self.scroll_to(y=self.cursor_row - visible + 1, animate=False)

    def move_cursor(self, row: int) -> None:
        if self.order:
            self.chosen = True
            self.cursor_row = max(0, min(row, len(self.order) - 1))

    def action_cursor(self, step: int) -> None:
        self.move_cursor(self.cursor_row + step)

    def action_page(self, step: int) -> None:
        self.move_cursor(self.cursor_row + step * max(1, self.size.height - 2))

    def action_cursor_to(self, row: int) -> None:
        self.move_cursor(row if row >= 0 else len(self.order) - 1)

    def column_starts(self) -> list[int]:
        """Where each column begins on the line (after the one-space margin)."""
        starts, x = [], 1
        for column in self.column_layout.columns:
            starts.append(x)
            x += column.width + self.column_layout.gap
        return starts

    def action_scroll_column(self, step: int) -> None:
        """The arrows move a whole column sideways, not one character (htop does the same)."""
        x = int(self.scroll_x)
        starts = [s - 1 for s in self.column_starts()]
        later = [s for s in starts if s > x] if step > 0 else [s for s in starts if s < x][::-1]
        if later:
            self.scroll_to(x=later[0], animate=False)

    async def on_click(self, event: events.Click) -> None:
        """A click selects its row; a double click opens the details."""
        if event.y == 0:
            return
        self.move_cursor(int(self.scroll_y) + event.y - 1)
        if event.chain == 2:
            await self.run_action("app.open_details")
