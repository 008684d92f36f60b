"""The history's tables show money whole: columns fitted to every cell before a frame is
painted, and to the terminal's width (text narrowed or columns dropped, never a cut "$63.")."""

from __future__ import annotations

import re
from pathlib import Path

import msgspec
import pytest
from textual.pilot import Pilot

from test_app import settle
from test_app_history import app_with
from tokentop.history.store import Store
from tokentop.ui.screens.history import HistoryScreen
from tokentop.ui.views.history_rows import HISTORY_SQUEEZES
from tokentop.ui.views.table_fit import Squeeze, fitted_widths, table_width
from tokentop.ui.widgets.fitted_table import FittedTable
from ui_fakes import make_session, sample_sessions, stored_jobs, summary_of

MONEY = re.compile(r"\$[\d,.]+")
WIDE_ROWS = (
    ("payments-service-0", 63.99, "paused-then-exited"),
    ("payments-service-1", 4.08, "idle"),
    ("payments-service-2", 1234.5, "terminated"),
)


def wide_history(path: Path) -> Store:
    """Sessions ended days ago (ENDED shows date and time), with long names and reasons."""
    store = Store(path)
    for i, (project, cost, reason) in enumerate(WIDE_ROWS):
        session = make_session(
            f"wide-{i}", cwd=f"/home/dev/src/{project}", model="claude-opus-4-1",
            cost=cost, ago=86_400 * (i + 2),
        )  # fmt: skip
        store.record_summary(msgspec.structs.replace(summary_of(session), end_reason=reason))
    return store


def painted(table: FittedTable) -> list[str]:
    """The table's visible lines as the screen draws them (header first)."""
    return [table.render_line(y).text for y in range(table.size.height)]


def full_cells(table: FittedTable) -> list[list[str]]:
    assert table.content is not None
    return [[cell.plain for cell in cells] for _, cells in table.content.rows]


async def open_history(pilot: Pilot[None], *keys: str) -> FittedTable:
    await settle(pilot)
    for key in ("h", *keys):
        await pilot.press(key)
        await settle(pilot)
    return pilot.app.screen.query_one(FittedTable)


async def test_a_reload_painted_before_the_table_is_idle_keeps_every_cell_whole(
    tmp_path: Path,
) -> None:
    """The trial's bug: the app records a session, the history reloads the same rows, and a
    frame is painted before the table measures them. DataTable cached every cell cut to its
    title ("$63." for $63.99, "Nov 23" for "Nov 23 04:13") until the next key."""
    app, _ = app_with(sample_sessions()[:2], wide_history(tmp_path / "history.db"))
    async with app.run_test(size=(150, 30)) as pilot:
        table = await open_history(pilot)
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        screen.show_summaries(screen.summaries, 0, screen.extras)  # a reload's worker's answer
        painted(table)  # a frame drawn before the table is next idle
        await pilot.pause()
        lines = painted(table)
    rows = full_cells(table)
    assert len(rows) == 3
    for cells, line in zip(rows, lines[1:], strict=False):
        assert [c for c in cells if c not in line] == []
    assert {"$63.99", "$4.08"} <= set(MONEY.findall("".join(lines)))


@pytest.mark.parametrize(
    ("keys", "size"),
    [((), (120, 40)), ((), (80, 24)), (("j",), (80, 24)), (("j", "down", "enter"), (80, 24))],
)
async def test_narrow_terminals_drop_columns_rather_than_cut_money(
    tmp_path: Path, keys: tuple[str, ...], size: tuple[int, int]
) -> None:
    """Sessions, jobs and a job's runs at 120 and 80 columns: nothing runs past the edge,
    and every amount on screen is one the core computed, whole."""
    store = stored_jobs(tmp_path / "h.db") if keys else wide_history(tmp_path / "h.db")
    app, _ = app_with(sample_sessions()[:2], store)
    async with app.run_test(size=size) as pilot:
        table = await open_history(pilot, *keys)
        lines = painted(table)
        assert table.virtual_size.width <= table.scrollable_content_region.width
    rows = full_cells(table)
    assert rows
    for cells, line in zip(rows, lines[1:], strict=False):
        whole = set(MONEY.findall(" ".join(cells)))
        assert set(MONEY.findall(line)) <= whole, line
    assert {"cost"} <= table.widths.keys()


async def test_at_120_columns_a_long_ending_is_cut_with_an_ellipsis(tmp_path: Path) -> None:
    app, _ = app_with(sample_sessions()[:2], wide_history(tmp_path / "history.db"))
    async with app.run_test(size=(120, 40)) as pilot:
        table = await open_history(pilot)
        text = "\n".join(painted(table))
    assert "HOW IT ENDED" in text and "paused-then" in text and "paused-then-exited" not in text
    assert re.search(r"paused-then\S*…", text)
    assert "LABEL" not in text  # the first column to go (the summary and the filter have it)


async def test_a_resized_terminal_fits_the_columns_again(tmp_path: Path) -> None:
    app, _ = app_with(sample_sessions()[:2], wide_history(tmp_path / "history.db"))
    async with app.run_test(size=(150, 30)) as pilot:
        table = await open_history(pilot)
        assert "label" in table.widths
        table.move_cursor(row=2)
        await pilot.resize_terminal(80, 24)
        await settle(pilot)
        assert "label" not in table.widths and "cost" in table.widths
        assert table.virtual_size.width <= table.scrollable_content_region.width
        assert table.cursor_row == 2  # the same session stays selected


def test_squeezes_never_narrow_money_and_give_back_room_left_over() -> None:
    natural = {
        "ended": 12, "agent": 6, "project": 18, "models": 8, "active": 6, "tokens": 6,
        "cost": 9, "cheapest": 8, "commits": 7, "per_commit": 8, "label": 7, "reason": 18,
    }  # fmt: skip
    narrowed = {s.key for s in HISTORY_SQUEEZES if s.width is not None}
    for room in range(20, 160):
        widths = fitted_widths(natural, room, 1, HISTORY_SQUEEZES)
        assert {"ended", "cost"} <= widths.keys()
        assert all(widths[k] == natural[k] for k in widths.keys() - narrowed)
        assert table_width(widths, 1) <= room or widths.keys() == {"ended", "project", "cost"}
    assert fitted_widths(natural, 200, 1, HISTORY_SQUEEZES) == natural
    cut = fitted_widths({"a": 30, "b": 5}, 28, 1, [Squeeze("a", 10)])
    assert cut == {"a": 19, "b": 5}  # narrowed to 10, then given back all but what b needs
