"""The header's third line: the vendors' windows, official (with their age) or computed."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from textual.widgets import Static

from test_app import settle, text_of
from tokentop.clock import FakeClock
from tokentop.config import Config
from tokentop.ui.app import make_app
from tokentop.ui.core import app_core
from ui_fakes import FakeEngine, ledger, windows_fixture


@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


async def test_the_header_shows_official_and_computed_windows(tmp_path: Path, utc: None) -> None:
    sessions, official = windows_fixture(tmp_path)
    engine, clock, config = FakeEngine(ledger(sessions)), FakeClock(), Config()
    core = app_core(engine, config, clock, official=official)
    app = make_app(engine, config=config, clock=clock, core=core)
    app.min_redraw_s = 0.0
    async with app.run_test(size=(200, 30)) as pilot:
        await settle(pilot)
        assert core.windows is not None and core.windows.ready.wait(10)
        engine.publish(engine.current)  # the next judgement draws what the watch read
        await settle(pilot)
        claude, block, codex = text_of(app.main_screen.query_one("#header", Static)).splitlines()[
            2:5
        ]
    assert claude.rstrip() == "Claude 5h 42% ↻14:00 · 7d 81% ↻Sun 12:00  (official, 2m ago)"
    assert block.startswith("Claude block $") and block.rstrip().endswith(
        " · 4h00 left  (computed)"
    )
    assert "/h · → $" in block  # burn and projection to the block's end
    assert codex.rstrip() == "Codex  5h 12% ↻15:00 · 7d 47% ↻Mon 12:00  (official, 5m ago)"
    core.windows.close()
