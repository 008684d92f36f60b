"""Pilot tests of what the app shows beyond the live table: today's totals, history, commits.

History and summaries use a real Store file in tmp_path; commits come from a real git
repository made in tmp_path.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import msgspec
import pytest
from textual.widgets import Static

from test_app import Harness, settle, text_of, wait_for
from tokentop.clock import FakeClock
from tokentop.config import Config, History
from tokentop.history.store import Store
from tokentop.model import RecentTool, SessionSnapshot, TokenCounts
from tokentop.ui.app import TokentopApp, make_app
from tokentop.ui.screens.history import HistoryScreen, SummaryScreen
from tokentop.ui.screens.main import MainScreen
from ui_fakes import (
    NOW,
    FakeEngine,
    FakeProcesses,
    FakeRef,
    ledger,
    make_session,
    sample_sessions,
    stored_history,
)

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


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user or system git config leaks in (signing, hooks, default branch...)."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE"):
        monkeypatch.delenv(var, raising=False)


def git(repo: Path, *args: str, when: float | None = None) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Me", "GIT_COMMITTER_NAME": "Me"}
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "me@example.com"
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{int(when)} +0000"
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def commit(repo: Path, name: str, lines: int, when: float) -> str:
    (repo / name).write_text("".join(f"line {i}\n" for i in range(lines)))
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"add {name}", when=when)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "shop"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "me@example.com")
    commit(path, "before.txt", 5, NOW - 90_000)  # a day before: outside every session here
    return path


def app_with(
    sessions: tuple[SessionSnapshot, ...],
    store: Store | None,
    *,
    clock: FakeClock | None = None,
    processes: FakeProcesses | None = None,
    config: Config | None = None,
) -> tuple[TokentopApp, FakeEngine]:
    engine = FakeEngine(ledger(sessions))
    app = make_app(
        engine,
        config=config or Config(history=History(top_consumers=0)),
        clock=clock or FakeClock(),
        controller=processes,
        mapper=processes,
        store=store,
    )
    app.min_redraw_s = 0.0
    return app, engine


def panel(app: TokentopApp, selector: str) -> str:
    return text_of(app.screen.query_one(selector, Static))


# -- history ---------------------------------------------------------------------------------


async def test_h_opens_history_which_filters_sorts_and_shows_a_summary(tmp_path: Path) -> None:
    store = stored_history(tmp_path / "history.db")
    app, _ = app_with(sample_sessions()[:2], store)  # live ones: nothing new is recorded
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("h")
        await settle(pilot)
        screen = app.screen
        assert isinstance(screen, HistoryScreen)
        assert [s.project for s in screen.shown] == ["notes", "api-gateway", "webshop"]
        cells = [screen.table.get_row_at(i) for i in range(3)]
        assert [str(c[8]) for c in cells] == ["—", "0", "2"]  # commits (notes: no git read)
        assert str(cells[2][9]) == "$1.50"  # $/commit
        assert str(cells[0][6]) == "≈$0.50"  # estimated
        header = panel(app, "#history-header")
        assert "3 of 3 sessions" in header and "$12.50" in header and "2 commits" in header
        await pilot.press("s")  # by cost
        await pilot.pause()
        assert [s.project for s in screen.shown] == ["api-gateway", "webshop", "notes"]
        await pilot.press("slash", *"shop", "enter")
        await pilot.pause()
        assert [s.project for s in screen.shown] == ["webshop"]
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, SummaryScreen)
        assert app.screen.summary.session_id == "aaaa-shop"
        await pilot.press("escape")
        await pilot.press("escape")  # clears the filter first
        await pilot.pause()
        assert len(screen.shown) == 3
        await pilot.press("escape")
        assert isinstance(app.screen, MainScreen)


async def test_history_of_an_empty_store_says_how_sessions_get_there(tmp_path: Path) -> None:
    app, _ = app_with(sample_sessions()[:3], Store(tmp_path / "empty.db"))  # none ended
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("h")
        await settle(pilot)
        assert "No session recorded yet" in panel(app, "#history-header")


async def test_without_a_store_h_explains_that_history_is_off() -> None:
    app, _ = app_with(sample_sessions(), None)
    notes: list[str] = []
    app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign,assignment]
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("h")
        await settle(pilot)
        assert isinstance(app.screen, MainScreen)
        assert notes == ["History is off in this run (no store)."]


# -- recording -------------------------------------------------------------------------------


async def test_sessions_that_end_are_recorded_in_the_store(tmp_path: Path) -> None:
    """Listed sessions that end are recorded once; older ones are left to `report`."""
    path = tmp_path / "tokentop.db"
    quiet = make_session("dddd-quiet", cwd="/home/dev/src/quiet", cost=1.25, ago=3600)
    live = make_session("eeee-live", tpm=100.0)
    ancient = make_session("ffff-ancient", cwd="/home/dev/old", ago=3 * 86_400)  # not listed
    app, engine = app_with((quiet, live, ancient), Store(path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await wait_for(pilot, lambda: app.summaries_recorded == 1)
        engine.publish(ledger((quiet, live, ancient), 2))  # unchanged: not recorded again
        await settle(pilot)
        assert app.core.keeper is not None and app.core.keeper.flush()
        await settle(pilot)
        assert app.summaries_recorded == 1
    with Store(path) as reopened:  # what another tokentop process would read
        summaries, bad = reopened.summaries()
    assert bad == 0
    assert [(s.session_id, s.end_reason, s.cost_usd) for s in summaries] == [
        ("dddd-quiet", "idle", 1.25)
    ]
    assert summaries[0].git is not None and summaries[0].git.status.startswith("directory not")


async def test_a_kill_from_the_app_is_logged_and_its_session_recorded(tmp_path: Path) -> None:
    path = tmp_path / "tokentop.db"
    procs = FakeProcesses({"ffff-kill": FakeRef(4242, 1.0, ("claude",), "hook", True)})
    app, _ = app_with((make_session("ffff-kill", tpm=10.0),), Store(path), processes=procs)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("k")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
    assert [verb for verb, *_ in procs.calls] == ["kill"]
    with Store(path) as reopened:
        [action] = reopened.actions_for("claude:ffff-kill")
        summary = reopened.summary("claude:ffff-kill")
    assert (action.action, action.ok, action.origin) == ("kill", True, "key:k")
    assert summary is not None and summary.end_reason == "killed"


async def test_findings_are_kept_in_the_store_once_for_the_summary(tmp_path: Path) -> None:
    """A loop the app detects goes to the store once (not on every tick), where the
    session's summary reads it when it is recorded."""
    path = tmp_path / "tokentop.db"
    stuck = tuple(RecentTool(NOW - 300 + 20 * i, "Bash", "same-input", True) for i in range(8))
    looping = msgspec.structs.replace(
        make_session("e5f6-looping", cwd="/home/dev/api", tpm=500.0), recent_tools=stuck
    )
    app, engine = app_with((looping,), Store(path))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for version in range(2, 5):
            engine.publish(ledger((looping,), version))
            await settle(pilot)
        await app.workers.wait_for_complete()
    with Store(path) as reopened:
        kept = reopened.events_for("claude:e5f6-looping")
    loops = [e for e in kept if e.detector == "loop"]
    assert len(loops) == 1
    assert loops[0].reason.startswith("looping: the same Bash call 6 times")


async def test_a_store_that_fails_is_reported_once_and_the_app_goes_on(tmp_path: Path) -> None:
    store = Store(tmp_path / "tokentop.db")
    store.close()  # every call now fails
    quiet = make_session("dddd-quiet", ago=3600)
    app, engine = app_with((quiet,), store)
    notes: list[str] = []
    app.notify = lambda message, **kw: notes.append(message)  # type: ignore[method-assign,assignment]
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        for version in range(2, 5):
            engine.publish(ledger((make_session("dddd-quiet", ago=3600 - version),), version))
            await settle(pilot)
        assert len([n for n in notes if n.startswith("History not recorded")]) == 1
        assert app.main_table.row_count == 1


# -- commits in the details ------------------------------------------------------------------


async def test_details_show_the_live_sessions_commits_and_cost_per_commit(repo: Path) -> None:
    commit(repo, "a.py", 10, NOW - 1800)
    commit(repo, "b.py", 4, NOW - 600)
    clock = FakeClock()
    session = make_session("gggg-git", cwd=str(repo), cost=3.0, tpm=50.0)
    app, engine = app_with((session,), None, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        commits = panel(app, "#detail-commits")
        assert "leverage  2 commits  $1.50/commit  2 files  +14 −0" in commits
        assert "add b.py" in commits and "before.txt" not in commits
        commit(repo, "c.py", 1, NOW - 60)
        clock.advance(20)  # within the 30 s cache: git is not asked again
        engine.publish(ledger((session,), 2))
        await settle(pilot)
        assert "2 commits" in panel(app, "#detail-commits")
        clock.advance(15)
        engine.publish(ledger((msgspec.structs.replace(session, cost_usd=6.0),), 3))
        await settle(pilot)
        assert "3 commits  $2.00/commit" in panel(app, "#detail-commits")


async def test_details_say_when_the_cwd_is_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    app, _ = app_with((make_session("hhhh", cwd=str(plain), tpm=5.0),), None)
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        assert "not a git repository" in panel(app, "#detail-commits")
