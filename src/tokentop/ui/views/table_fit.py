"""Column widths for the history's tables, worked out from every cell before a row is shown.

No Textual here. Each column is as wide as its widest cell (or its title). When that is wider
than the room, squeezes are applied in order, as the session table's layout does: a text
column narrows (its cells cut with …) or a column is dropped. A column that no squeeze narrows
(money, counts, times) is always shown whole or not at all, so a cut "$63." never reads as
$63.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import NamedTuple

from rich.cells import cell_len


class Squeeze(NamedTuple):
    """One way to make a table narrower."""

    key: str
    width: int | None = None
    """None drops the column; a width narrows a text column to it (cells cut with …)."""


def natural_widths(
    keys: Sequence[str], labels: Sequence[str], rows: Iterable[Sequence[str]]
) -> dict[str, int]:
    """Each column's widest cell or title, in terminal cells (a CJK character takes two)."""
    widths = [cell_len(label) for label in labels]
    for row in rows:
        widths = [max(w, cell_len(cell)) for w, cell in zip(widths, row, strict=True)]
    return dict(zip(keys, widths, strict=True))


def table_width(widths: Mapping[str, int], padding: int) -> int:
    """The whole table's width: every column plus the padding on both of its sides."""
    return sum(widths.values()) + 2 * padding * len(widths)


def fitted_widths(
    natural: Mapping[str, int], room: int, padding: int, squeezes: Sequence[Squeeze]
) -> dict[str, int]:
    """The columns shown, in order, and their widths: all of them whole when they fit in
    `room`; else the squeezes in order until they do. Room left over then goes back to the
    narrowed columns, first squeezed first, up to their natural width."""
    widths = dict(natural)
    for step in squeezes:
        if table_width(widths, padding) <= room:
            break
        if step.key in widths:
            _squeeze(widths, step)
    for step in squeezes:
        spare = room - table_width(widths, padding)
        if spare > 0 and step.width is not None and step.key in widths:
            widths[step.key] = min(natural[step.key], widths[step.key] + spare)
    return widths


def _squeeze(widths: dict[str, int], step: Squeeze) -> None:
    if step.width is None:
        del widths[step.key]
    else:
        widths[step.key] = min(widths[step.key], step.width)
