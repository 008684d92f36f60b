"""Pilot tests of what the app shows beyond the live table: today's totals, history, commits.

History and summaries use a real Store file in tmp_path; commits come from a real git
repository made in tmp_path.
"""

from __future__ import annotations

from textual.widgets import Static

from test_app import Harness, settle, text_of
from tokentop.model import TokenCounts
from ui_fakes import make_session

SIZE = (150, 30)


async def test_header_today_counts_only_what_was_spent_since_midnight() -> None:
    started_yesterday = make_session(
        "long-1", tokens=TokenCounts(output=5_000_000), cost=10.0, today=1_200_000, tpm=500.0
    )
    ended_yesterday = make_session("old-1", cwd="/p/old", cost=3.0, ago=20 * 3600)
    h = Harness((started_yesterday, ended_yesterday))
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        header = text_of(h.app.main_screen.query_one("#header", Static))
        assert "today 1.2M tok $2.40 " in header
