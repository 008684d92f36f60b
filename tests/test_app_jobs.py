"""The history screen's jobs view (`h`, then `j`) and a job's runs, over a real Store file."""

from __future__ import annotations

from pathlib import Path

from textual.widgets import Static

from test_app import settle, text_of
from test_app_history import app_with
from tokentop.ui.screens.history import HistoryScreen, SummaryScreen
from tokentop.ui.screens.jobs import JobRunsScreen
from ui_fakes import sample_sessions, stored_jobs

SIZE = (160, 30)


async def test_j_shows_the_jobs_and_enter_opens_a_jobs_runs(tmp_path: Path) -> None:
    store = stored_jobs(tmp_path / "history.db")
    app, _ = app_with(sample_sessions()[:2], store)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("h")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        await pilot.press("j")
        await pilot.pause()
        assert [j.job for j in screen.shown_jobs] == [
            "deploy",
            "site: build the next task for <date>",
        ]
        deploy, night = (screen.table.get_row_at(i) for i in range(2))
        assert [str(c) for c in deploy[:4]] == ["deploy", "run", "2", "1"]
        assert [str(c) for c in night[2:4]] == ["6", "0"]
        assert str(night[9]) == "+110% ⚑"  # median $1.00 → $2.10
        header = text_of(screen.query_one("#history-header", Static))
        assert "2 of 2 jobs" in header and "1 regressed week over week" in header
        screen.table.move_cursor(row=1)
        await pilot.press("enter")
        await pilot.pause()
        runs = app.screen
        assert isinstance(runs, JobRunsScreen)
        rows = [runs.query_one("#runs-table").get_row_at(i) for i in range(6)]  # type: ignore[attr-defined]
        assert [str(r[3]) for r in rows] == ["$2.10", "$2.20", "$2.00", "$0.90", "$1.10", "$1.00"]
        assert [str(r[-1]) for r in rows].count("⚑ changed here") == 1
        assert str(rows[2][-1]) == "⚑ changed here"  # the first dearer run
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, SummaryScreen)
        await pilot.press("escape", "escape")
        await pilot.pause()
        assert app.screen is screen
        await pilot.press("escape")  # one level back: the sessions, not the main table
        await pilot.pause()
        assert app.screen is screen
        assert not screen.jobs_view and len(screen.shown) == 8
        await pilot.press("j", "j")
        await pilot.pause()
        assert not screen.jobs_view
