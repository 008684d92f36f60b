"""FittedTable: a DataTable whose every column width is known before its rows are added.

A DataTable column added without a width starts as wide as its title and is measured against
its cells only later, when the table is next idle. A frame painted in between (the history
reloads from a worker whenever the app records a session) caches every cell cut to its title's
width. Those caches are keyed on a counter that adding rows bumps and the later measuring does
not; only a Resize (a change of the table's virtual size) bumps it again, and a reload of the
same sessions measures to the same size: "$63." for $63.99 stayed on screen until the next
key. Here each column is added with an explicit width worked out from all its cells
(views/table_fit.py), so no frame is ever drawn at another width, and the columns that do not
fit the terminal are narrowed or dropped as the screen says, never cut at its edge.
"""

from __future__ import annotations

from collections.abc import Sequence, Set
from typing import NamedTuple

from rich.text import Text
from textual.widgets import DataTable

from tokentop.ui.views.table_fit import Squeeze, fitted_widths, natural_widths


class TableContent(NamedTuple):
    """What the table shows: columns as (key, title), rows as (key, cells in column order)."""

    columns: Sequence[tuple[str, Text]]
    rows: Sequence[tuple[str, Sequence[Text]]]
    squeezes: Sequence[Squeeze]
    natural: dict[str, int]


class FittedTable(DataTable[Text]):
    """Rows replaced as a whole by `show`; columns fitted to the cells and to the width."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.content: TableContent | None = None
        self.widths: dict[str, int] = {}
        """The columns shown and their widths (a column not in it was dropped)."""

    def show(
        self,
        columns: Sequence[tuple[str, Text]],
        rows: Sequence[tuple[str, Sequence[Text]]],
        squeezes: Sequence[Squeeze] = (),
    ) -> None:
        """Replace every column and row; the cursor goes back to the first row."""
        keys = [key for key, _ in columns]
        titles = [title.plain for _, title in columns]
        natural = natural_widths(keys, titles, ([c.plain for c in cells] for _, cells in rows))
        self.content = TableContent(columns, rows, squeezes, natural)
        self._fill(self.content, self._fit(self.content))

    def on_resize(self) -> None:
        """Fit the columns again when the terminal's width changes what fits."""
        if self.content is None or (widths := self._fit(self.content)) == self.widths:
            return
        row = self.cursor_row
        self._fill(self.content, widths)
        self.move_cursor(row=row)

    def _fit(self, content: TableContent) -> dict[str, int]:
        """The widths for the room there is, keeping room for the vertical scrollbar (a
        table that only sometimes has one would change its columns when it appears)."""
        outer = self.region.width or self.screen.size.width  # not laid out yet: the screen's
        room = outer - self.styles.scrollbar_size_vertical
        return fitted_widths(content.natural, room, self.cell_padding, content.squeezes)

    def _fill(self, content: TableContent, widths: dict[str, int]) -> None:
        self.widths = widths
        self.clear(columns=True)
        shown = [i for i, (key, _) in enumerate(content.columns) if key in widths]
        for i in shown:
            key, title = content.columns[i]
            self.add_column(cut(title, widths[key]), width=widths[key], key=key)
        for row_key, cells in content.rows:
            fitted = [cut(cells[i], widths[content.columns[i][0]]) for i in shown]
            self.add_row(*fitted, key=row_key)


def aligned(texts: Sequence[str], right: Set[int]) -> list[Text]:
    """Cells (or titles) as Text, those at the `right` indexes right-justified (numbers)."""
    return [Text(t, justify="right" if i in right else "left") for i, t in enumerate(texts)]


def cut(text: Text, width: int) -> Text:
    """`text` as it fits `width` cells: whole, or cut with … (only narrowed text columns)."""
    if text.cell_len <= width:
        return text
    shorter = text.copy()
    shorter.truncate(width, overflow="ellipsis")
    return shorter
