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


async def test_the_shared_codex_sample_and_a_real_status_line_call_reach_the_header(
    tmp_path: Path, utc: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """End to end: the real engine reads the shared Codex sample (its rate_limits), the real
    `tokentop statusline` records Claude's windows from the documented input, and the app's
    header shows both, each marked official with its age."""
    import io
    import shutil

    from tokentop.commands.statusline import handle
    from tokentop.engine.engine import Engine
    from tokentop.history.official import state_path
    from tokentop.pricing import PriceTable
    from tokentop.sources.codex import CodexSource

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    sample = Path(__file__).parent / "fixtures" / "codex_samples" / "agent-sessions"
    day = tmp_path / "codex" / "sessions" / "2025" / "10" / "31"
    day.mkdir(parents=True)
    shutil.copy(sample / "codex_053_rate_limit.jsonl", day / "rollout-2025-10-31T17-00-00-x.jsonl")
    clock = FakeClock(1_761_930_600.0)  # 2025-10-31 17:10 UTC: ten minutes after the sample
    status = Path(__file__).parent / "fixtures" / "statusline" / "claude-code-status.json"
    assert handle(status.read_bytes(), io.StringIO(), clock.now() - 30) == 0
    engine = Engine([CodexSource(homes=[tmp_path / "codex"])], PriceTable.default().cost)
    engine.scan()
    fake, config = FakeEngine(engine.snapshot()), Config()
    core = app_core(fake, config, clock, official=state_path())
    app = make_app(fake, config=config, clock=clock, core=core)
    app.min_redraw_s = 0.0
    async with app.run_test(size=(160, 30)) as pilot:
        await settle(pilot)
        assert core.windows is not None and core.windows.ready.wait(10)
        fake.publish(fake.current)
        await settle(pilot)
        lines = text_of(app.main_screen.query_one("#header", Static)).splitlines()
    core.windows.close()
    assert lines[2].startswith("Claude 5h 42% ↻") and lines[2].rstrip().endswith(
        "(official, 30s ago)"
    )
    assert lines[3].rstrip() == "Codex  5h 1% ↻22:37 · 7d 7% ↻Thu 19:45  (official, 9m ago)"
