"""Pilot tests: estimated figures are marked ≈, and a session seen both in a transcript and in
proxy logs shows both totals and their difference in its details."""

from __future__ import annotations

from textual.widgets import Static

from test_app import Harness, settle, text_of
from tokentop.model import TokenCounts
from tokentop.ui.screens.detail import SessionDetail
from ui_fakes import make_session

SIZE = (150, 40)
SID = "0d7f6a8e-1111-4222-8333-944455556666"


async def test_estimated_sessions_show_approximate_figures_everywhere() -> None:
    guessed = make_session("gen-1", cwd="/p/piped", cost=1.0, tpm=900.0, estimated=True)
    exact = make_session("exact-1", cwd="/p/exact", cost=2.0, tpm=100.0)
    h = Harness((guessed, exact))
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert (h.cell("piped", "tokens"), h.cell("piped", "cost")) == ("≈421k", "≈$1.00")
        assert h.cell("piped", "flags") == "≈"
        assert (h.cell("exact", "tokens"), h.cell("exact", "cost")) == ("421k", "$2.00")
        header = text_of(h.app.main_screen.query_one("#header", Static))
        assert "today ≈842k tok ≈$3.00" in header
        await pilot.press("enter")  # the top row: the estimated one burns faster
        await settle(pilot)
        title = text_of(h.app.screen.query_one("#detail-title", Static))
        assert "≈421k tokens  ≈$1.00" in title
        kinds = text_of(h.app.screen.query_one("#detail-tokens", Static))
        assert "≈421k" in kinds and "estimated with a tokenizer" in kinds
        models = text_of(h.app.screen.query_one("#detail-models", Static))
        assert "≈$1.00" in models


async def test_details_reconcile_a_transcript_with_its_proxy_log() -> None:
    transcript = make_session(SID, cwd="/p/shop", cost=3.0, tpm=800.0)
    proxy = make_session(
        SID,
        agent="litellm",
        cwd="",
        tokens=TokenCounts(input=1_000, output=25_000, cache_read=400_000),
        cost=3.4,
        tpm=10.0,
    )
    h = Harness((transcript, proxy))
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert isinstance(h.app.screen, SessionDetail)
        assert h.app.screen.key == transcript.key
        panel = h.app.screen.query_one("#detail-reconciliation", Static)
        assert panel.display
        text = text_of(panel)
        assert f"matched by session id: litellm:{SID}" in text
        assert "transcript (claude)  421k" in text and "proxy (litellm)" in text
        [difference] = [line.split() for line in text.splitlines() if "difference" in line]
        assert difference == ["difference", "+5.0k", "+$0.40", "0"]
        assert "the proxy saw more than the transcript records" in text


async def test_details_of_an_unpaired_session_have_no_reconciliation() -> None:
    h = Harness((make_session("solo", tpm=10.0),))
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert not h.app.screen.query_one("#detail-reconciliation", Static).display
