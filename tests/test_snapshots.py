"""SVG snapshots of the main screens, from fixed data and a fixed clock.

Update after an intended change with `pytest tests/test_snapshots.py --snapshot-update`,
then look at the report before committing the new SVGs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from textual.pilot import Pilot

from tokentop.clock import FakeClock
from tokentop.config import Budgets, Config
from tokentop.history.store import Store
from tokentop.model import SessionSnapshot, TokenCounts
from tokentop.ui.app import TokentopApp, make_app
from tokentop.ui.core import app_core
from ui_fakes import (
    FakeEngine,
    FakeProcesses,
    FakeRef,
    ledger,
    make_session,
    sample_sessions,
    stored_history,
    stored_jobs,
    windows_fixture,
)

SIZE = (150, 32)
SnapCompare = Callable[..., bool]


def fixed_app(
    store: Store | None = None, sessions: tuple[SessionSnapshot, ...] | None = None
) -> TokentopApp:
    """The sample sessions; with a store, only the three that are not due to be recorded, so
    the timer recording the ended one cannot race the snapshot."""
    if sessions is None:
        sessions = sample_sessions() if store is None else sample_sessions()[:3]
    processes = FakeProcesses(
        {
            "a1b2c3d4-steady": FakeRef(
                48213, 1.0, ("node", "/usr/bin/claude", "--resume", "a1b2c3d4"), "hook", True
            ),
            "e5f6-looping": FakeRef(48377, 1.0, ("claude",), "heuristic", False),
        }
    )
    return make_app(
        FakeEngine(ledger(sessions)),
        config=Config(budgets=Budgets(usd=10.0, tokens=5_000_000)),
        clock=FakeClock(),
        controller=processes,
        mapper=processes,
        store=store,
    )


def keys_then_settle(*keys: str) -> Callable[[Pilot[None]], Any]:
    """Wait for the engine worker, press keys, then wait for the workers they start."""

    async def run(pilot: Pilot[None]) -> None:
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()
        for key in keys:
            await pilot.press(key)
            await pilot.app.workers.wait_for_complete()
            await pilot.pause()

    return run


def compare(
    snap_compare: SnapCompare,
    keys: Sequence[str] = (),
    store: Store | None = None,
    size: tuple[int, int] = SIZE,
) -> bool:
    app = fixed_app(store)
    return snap_compare(app, terminal_size=size, run_before=keys_then_settle(*keys))


@pytest.fixture
def utc() -> Iterator[None]:
    """History shows local times: pin the zone so the SVG is the same on every machine."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    yield
    if before is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = before
    time.tzset()


def test_main_screen(snap_compare: SnapCompare) -> None:
    assert compare(snap_compare)


def test_main_screen_80x24(snap_compare: SnapCompare) -> None:
    """The classic terminal: BUDGET, ETA and FLAGS in view; MODEL and the sparkline go."""
    assert compare(snap_compare, size=(80, 24))


def fleet_sessions() -> tuple[SessionSnapshot, ...]:
    """The samples, a live session on another machine, and one older than hide_after_h."""
    remote = make_session(
        "r1-batch", cwd="/srv/batch-jobs", cost=0.8, tpm=20_000, usd_h=2.5, ago=4,
        series=(5000, 20000, 18000, 21000),
    )  # fmt: skip
    old = make_session("old-0002", cwd="/home/dev/archive", cost=0.1, ago=200_000)
    return (*sample_sessions(), msgspec.structs.replace(remote, host="ci-runner-7"), old)


@pytest.fixture
def this_host(monkeypatch: pytest.MonkeyPatch) -> None:
    """The HOST column names this machine for local sessions: the same name everywhere."""
    monkeypatch.setattr("tokentop.ui.views.rows.local_host", lambda: "dev-laptop")


def test_main_screen_80x24_with_hosts(snap_compare: SnapCompare, this_host: None) -> None:
    """Sessions from two machines at 80x24: HOST goes before BUDGET, ETA and FLAGS; the
    header says one older session is hidden and which key shows it."""
    app = fixed_app(sessions=fleet_sessions())
    assert snap_compare(app, terminal_size=(80, 24), run_before=keys_then_settle())


def test_main_screen_120x40_with_hosts(snap_compare: SnapCompare, this_host: None) -> None:
    """A common default size: every column fits, MODEL and LAST 10m included, with HOST."""
    app = fixed_app(sessions=fleet_sessions())
    assert snap_compare(app, terminal_size=(120, 40), run_before=keys_then_settle())


def test_main_screen_120x40(snap_compare: SnapCompare) -> None:
    assert compare(snap_compare, size=(120, 40))


def test_detail_view_80x24(snap_compare: SnapCompare) -> None:
    """The first detail line keeps tokens, cost, budget and ETA at 80 columns."""
    assert compare(snap_compare, ["down", "enter"], size=(80, 24))


def test_detail_view_80x24_long_title(snap_compare: SnapCompare) -> None:
    """A real session id and a deep cwd overflow 80 columns: the title line is cut with an
    ellipsis, and the line under it (tokens, cost, budget, ETA) still shows."""
    deep = make_session(
        "0d7f6a8e-1111-4222-8333-944455556666", cwd="/home/dev/src/clients/acme/billing-api",
        cost=2.5, tpm=12_000, usd_h=3.4, ago=5, series=(9000, 12000, 11000),
    )  # fmt: skip
    app = fixed_app(sessions=(deep,))
    assert snap_compare(app, terminal_size=(80, 24), run_before=keys_then_settle("enter"))


def test_detail_view(snap_compare: SnapCompare) -> None:
    assert compare(snap_compare, ["down", "enter"])


def test_kill_confirm(snap_compare: SnapCompare) -> None:
    assert compare(snap_compare, ["space", "space", "k"])


def test_help(snap_compare: SnapCompare) -> None:
    assert compare(snap_compare, ["question_mark"])


def test_budget_modal(snap_compare: SnapCompare) -> None:
    assert compare(snap_compare, ["b"])


def test_filtered_and_sorted(snap_compare: SnapCompare) -> None:
    assert compare(snap_compare, ["s", "slash", "a", "p", "i", "enter"])


def test_history(snap_compare: SnapCompare, tmp_path: Path, utc: None) -> None:
    store = stored_history(tmp_path / "history.db")
    assert compare(snap_compare, ["h"], store)


def test_history_80x24(snap_compare: SnapCompare, tmp_path: Path, utc: None) -> None:
    """LABEL, HOW IT ENDED, ACTIVE and AGENT give way; every amount is shown whole."""
    store = stored_history(tmp_path / "history.db")
    assert compare(snap_compare, ["h"], store, size=(80, 24))


def test_history_filtered_by_cost(snap_compare: SnapCompare, tmp_path: Path, utc: None) -> None:
    store = stored_history(tmp_path / "history.db")
    assert compare(snap_compare, ["h", "s", "slash", "s", "r", "c", "enter"], store)


def test_history_summary(snap_compare: SnapCompare, tmp_path: Path, utc: None) -> None:
    store = stored_history(tmp_path / "history.db")
    assert compare(snap_compare, ["h", "down", "down", "enter"], store)


def test_detail_reconciled_and_estimated(snap_compare: SnapCompare) -> None:
    """A transcript whose proxy log saw more, next to an estimated generic-JSONL session."""
    sid = "0d7f6a8e-1111-4222-8333-944455556666"
    transcript = make_session(sid, cwd="/home/dev/src/shop", cost=3.0, tpm=800.0)
    proxy = make_session(
        sid, agent="litellm", cwd="", cost=3.4, tpm=10.0,
        tokens=TokenCounts(input=1_000, output=25_000, cache_read=400_000),
    )  # fmt: skip
    piped = make_session("gen-1", agent="jsonl", cwd="/p/piped", tpm=20.0, estimated=True)
    app = fixed_app(sessions=(transcript, proxy, piped))
    assert snap_compare(app, terminal_size=SIZE, run_before=keys_then_settle("enter"))


def test_main_screen_with_estimates(snap_compare: SnapCompare) -> None:
    piped = make_session("gen-1", agent="jsonl", cwd="/p/piped", tpm=20.0, estimated=True)
    app = fixed_app(sessions=(*sample_sessions()[:2], piped))
    assert snap_compare(app, terminal_size=SIZE, run_before=keys_then_settle())


def windows_app(root: Path) -> tuple[TokentopApp, FakeEngine]:
    sessions, official = windows_fixture(root)
    engine, clock = FakeEngine(ledger((*sample_sessions()[:2], *sessions))), FakeClock()
    config = Config(budgets=Budgets(usd=10.0, tokens=5_000_000))
    core = app_core(engine, config, clock, official=official)
    app = make_app(engine, config=config, clock=clock, core=core)
    app.min_redraw_s = 0.0  # the draw after the watch's read is not coalesced away
    return app, engine


def windows_read(engine: FakeEngine) -> Callable[[Pilot[None]], Any]:
    """Wait until the window watch has read the files, then draw what it found."""

    async def run(pilot: Pilot[None]) -> None:
        await pilot.app.workers.wait_for_complete()
        watch = pilot.app.core.windows  # type: ignore[attr-defined]
        assert watch is not None and watch.ready.wait(10)
        engine.publish(engine.current)
        await pilot.app.workers.wait_for_complete()
        await pilot.pause()

    return run


def test_header_with_windows(snap_compare: SnapCompare, tmp_path: Path, utc: None) -> None:
    """Claude's official windows (with their age), its computed 5-hour block, Codex's."""
    app, engine = windows_app(tmp_path)
    assert snap_compare(app, terminal_size=SIZE, run_before=windows_read(engine))


def test_header_with_windows_80x24(snap_compare: SnapCompare, tmp_path: Path, utc: None) -> None:
    """At 80 columns a window line too long ends in an ellipsis; the table keeps its columns."""
    app, engine = windows_app(tmp_path)
    assert snap_compare(app, terminal_size=(80, 24), run_before=windows_read(engine))


def test_history_jobs(snap_compare: SnapCompare, tmp_path: Path, utc: None) -> None:
    store = stored_jobs(tmp_path / "history.db")
    assert compare(snap_compare, ["h", "j"], store)


def test_history_jobs_80x24(snap_compare: SnapCompare, tmp_path: Path, utc: None) -> None:
    store = stored_jobs(tmp_path / "history.db")
    assert compare(snap_compare, ["h", "j"], store, size=(80, 24))


def test_job_runs(snap_compare: SnapCompare, tmp_path: Path, utc: None) -> None:
    store = stored_jobs(tmp_path / "history.db")
    assert compare(snap_compare, ["h", "j", "down", "enter"], store)
