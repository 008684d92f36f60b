"""Pilot tests of the live app: rows, live updates, keys, dialogs, alerts, process actions.

Most use a fake engine serving fixed snapshots from another thread (as the real engine does)
and a fake clock. The last test runs the real engine over a temp Claude Code root.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
from rich.console import Console
from textual.message import Message
from textual.pilot import Pilot
from textual.widgets import Input, Static

from tokentop.clock import FakeClock, SystemClock
from tokentop.config import Alerts, Budget, Budgets, Config
from tokentop.history.session_budgets import read_budgets
from tokentop.history.store import Store
from tokentop.model import RecentTool, SessionSnapshot, TokenCounts
from tokentop.policy.detectors import budget_finding
from tokentop.quantities import parse_usd
from tokentop.render import figures as fmt
from tokentop.ui.app import TokentopApp, make_app
from tokentop.ui.messages import JudgementMade
from tokentop.ui.screens.detail import SessionDetail
from tokentop.ui.screens.help import HelpScreen, ParseErrorsScreen
from tokentop.ui.screens.main import MainScreen
from tokentop.ui.screens.modals import BudgetModal, ConfirmModal
from tokentop.ui.widgets.session_table import SessionTable, cell_text
from ui_fakes import (
    NOW,
    FakeEngine,
    FakeProcesses,
    FakeRef,
    ledger,
    make_session,
    sample_sessions,
)

SIZE = (150, 30)


class Harness:
    """An app over a fake engine, with notifications and bells recorded."""

    def __init__(
        self,
        sessions: tuple[SessionSnapshot, ...] | None = None,
        *,
        config: Config | None = None,
        processes: FakeProcesses | None = None,
        read_only: bool = False,
        store: Store | None = None,
    ) -> None:
        self.engine = FakeEngine(ledger(sessions if sessions is not None else sample_sessions()))
        self.app = make_app(
            self.engine,
            config=config or Config(),
            clock=FakeClock(),
            controller=processes,
            mapper=processes,
            read_only=read_only,
            store=store,
        )
        self.app.min_redraw_s = 0.0  # draw every snapshot, so each step is observable
        self.notes: list[tuple[str, dict[str, Any]]] = []
        self.bells = 0
        self.app.notify = self._notify  # type: ignore[method-assign]
        self.app.bell = self._bell  # type: ignore[method-assign]
        self.version = 1

    def _notify(self, message: str, **kwargs: Any) -> None:
        self.notes.append((message, kwargs))

    def _bell(self) -> None:
        self.bells += 1

    def publish(self, sessions: tuple[SessionSnapshot, ...]) -> None:
        self.version += 1
        self.engine.publish(ledger(sessions, self.version))

    @property
    def table(self) -> SessionTable:
        return self.app.main_table

    def column(self, name: str) -> list[str]:
        return [cell_text(self.table.shown[key], name) for key in self.table.order]

    def cell(self, project: str, name: str) -> str:
        index = self.column("project").index(project)
        return self.column(name)[index]


def text_of(widget: Static) -> str:
    """What a Static shows, as plain text."""
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(widget.content)
    return console.export_text()


async def settle(pilot: Pilot[None]) -> None:
    await pilot.app.workers.wait_for_complete()
    await pilot.pause()


def with_(session: SessionSnapshot, **changes: Any) -> SessionSnapshot:
    return msgspec.structs.replace(session, **changes)


def projects(h: Harness) -> list[str]:
    return h.column("project")


async def test_rows_show_each_session_sorted_by_burn() -> None:
    h = Harness(config=Config(budgets=Budgets(usd=5.0)))
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert h.engine.started
        assert projects(h) == ["api-gateway", "webshop", "ml-pipeline", "notes"]
        assert h.column("status") == ["  live", "  live", "  idle", "  ended"]
        assert h.cell("api-gateway", "tokens") == "2.2M"
        assert h.cell("api-gateway", "burn") == "30.0k/m $9.90/h"
        assert h.cell("api-gateway", "budget").endswith(" 86%")
        assert h.cell("api-gateway", "flags") == "WE"
        # an unpriced model never shows as $0
        assert h.cell("ml-pipeline", "cost") == "?"
        assert h.cell("ml-pipeline", "flags") == "?"
        assert h.cell("notes", "burn") == "—"
    assert h.engine.stopped


async def test_engine_update_changes_cells_and_the_cursor_follows_its_session() -> None:
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        h.table.move_cursor(row=projects(h).index("webshop"))
        steady, looping, codex, old = sample_sessions()
        busier = with_(steady, tokens=TokenCounts(output=3_000_000), tokens_per_min=90_000.0)
        h.publish((busier, looping, codex, old))
        await settle(pilot)
        assert h.cell("webshop", "tokens") == "3.0M"
        assert projects(h)[0] == "webshop"  # re-sorted by burn
        assert h.table.current_key == str(steady.key)  # the cursor followed its session


async def test_only_changed_rows_are_rendered_again() -> None:
    sessions = tuple(make_session(f"s{i:03}", cwd=f"/p/proj{i}", tpm=float(i)) for i in range(500))
    h = Harness(sessions)
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert h.table.row_count == 500
        h.table.move_cursor(row=10)
        await pilot.pause()
        before = h.table.strips_rendered
        busiest = sessions[-1]  # top row, visible
        h.publish((*sessions[:-1], with_(busiest, tokens=TokenCounts(output=9_999_999))))
        await settle(pilot)
        assert h.cell("proj499", "tokens") == "10.0M"
        assert h.table.strips_rendered - before == 1


async def test_sessions_appear_and_disappear_as_rows() -> None:
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        newcomer = make_session("new-1", cwd="/home/dev/src/newproj", tpm=1.0)
        h.publish((*sample_sessions()[:2], newcomer))
        await settle(pilot)
        assert sorted(projects(h)) == ["api-gateway", "newproj", "webshop"]


def test_judgement_made_replaces_an_older_queued_one() -> None:
    a, b = JudgementMade(), JudgementMade()
    assert b.can_replace(a)
    assert not b.can_replace(Message())


async def test_an_older_snapshot_arriving_late_is_ignored() -> None:
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        h.engine.publish(ledger(sample_sessions()[:1], 5))
        await settle(pilot)
        h.engine.publish(ledger(sample_sessions(), 3))
        await settle(pilot)
        assert projects(h) == ["webshop"]


async def test_a_burst_of_snapshots_is_drawn_once_with_the_newest() -> None:
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        h.app.min_redraw_s = 3600.0
        drawn = h.app.snapshot
        steady, *rest = sample_sessions()
        for n in (1, 2, 3):
            h.publish((with_(steady, tokens=TokenCounts(output=n * 1_000_000)), *rest))
        await settle(pilot)
        assert h.app.snapshot is drawn  # held back: a draw happened moments ago
        h.app._draw_pending()  # what the scheduled timer does
        assert h.cell("webshop", "tokens") == "3.0M"


async def test_each_engine_tick_is_drawn_with_its_decayed_rates() -> None:
    """The engine judges every tick_s with nothing appended (same version, later clock): the
    app draws it, so a quiet session's burn decays to zero without a timer of the app's."""
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert h.cell("webshop", "burn") != "—"
        steady, *rest = sample_sessions()
        later = ledger((with_(steady, tokens_per_min=0.0, usd_per_hour=0.0), *rest), 1)
        h.engine.publish(msgspec.structs.replace(later, taken_at=NOW + 1))
        await settle(pilot)
        assert h.cell("webshop", "burn") == "—"
        assert h.engine.tick_s == h.app.refresh_s  # `+`/`-` set how often the engine ticks


async def test_filter_narrows_rows_and_escape_clears_it() -> None:
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"gate")
        await pilot.pause()
        assert projects(h) == ["api-gateway"]
        await pilot.press("enter")  # keeps the filter, back to the table
        assert isinstance(h.app.focused, SessionTable)
        assert projects(h) == ["api-gateway"]
        await pilot.press("escape")
        await pilot.pause()
        assert len(projects(h)) == 4
        assert not h.app.main_screen.query_one("#filter", Input).display


async def test_filter_matches_agent_and_status() -> None:
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("slash", *"codex")
        await pilot.pause()
        assert projects(h) == ["ml-pipeline"]


async def test_sort_keys_cycle_and_reverse() -> None:
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("s")
        await pilot.pause()
        assert h.app.view.sort == "cost"
        assert projects(h) == ["api-gateway", "webshop", "notes", "ml-pipeline"]
        assert "COST▼" in h.table.header.plain
        await pilot.press("I")  # htop's invert
        await pilot.pause()
        assert projects(h) == ["ml-pipeline", "notes", "webshop", "api-gateway"]
        assert "COST▲" in h.table.header.plain
        await pilot.press("I", "less_than_sign")
        await pilot.pause()
        assert h.app.view.sort == "burn"
        assert projects(h)[0] == "api-gateway"


async def test_text_columns_sort_a_to_z() -> None:
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        h.app.view.sort = "project"
        h.app.refresh_view()
        assert projects(h) == ["api-gateway", "ml-pipeline", "notes", "webshop"]


async def test_details_open_show_the_session_and_escape_goes_back() -> None:
    procs = FakeProcesses({"e5f6-looping": FakeRef(4242, 1.0, ("claude",), "hook", True)})
    h = Harness(processes=procs)
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        screen = h.app.screen
        assert isinstance(screen, SessionDetail)
        assert str(screen.key) == "claude:e5f6-looping"
        title = text_of(screen.query_one("#detail-title", Static))
        assert "api-gateway" in title
        assert "pid 4242" in str(screen.process_text)
        assert "mapped by hook" in str(screen.process_text)
        files = text_of(screen.query_one("#detail-files", Static))
        assert "line 77: truncated JSON" in files
        await pilot.press("escape")
        assert isinstance(h.app.screen, MainScreen)


async def test_detail_follows_live_updates() -> None:
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("enter")
        await settle(pilot)
        steady, looping, codex, old = sample_sessions()
        h.publish((steady, with_(looping, responses=4321), codex, old))
        await settle(pilot)
        title = text_of(h.app.screen.query_one("#detail-title", Static))
        assert "4321 responses" in title


async def test_parse_errors_are_listed_on_e() -> None:
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        header = text_of(h.app.main_screen.query_one("#header", Static))
        assert "3 unparseable lines in 1 file (e)" in header
        await pilot.press("e")
        await pilot.pause()
        assert isinstance(h.app.screen, ParseErrorsScreen)
        assert [f.bad_lines for f in h.app.screen.files if f.bad_lines] == [3]


async def test_budget_key_sets_a_live_budget_and_alerts_once() -> None:
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert h.cell("api-gateway", "budget") == ""
        await pilot.press("b")
        await pilot.pause()
        assert isinstance(h.app.screen, BudgetModal)
        await pilot.press(*"2", "enter")
        await settle(pilot)
        assert isinstance(h.app.screen, MainScreen)
        assert h.cell("api-gateway", "budget").endswith("215%")
        assert h.cell("api-gateway", "flags").startswith("O")
        assert [kw["title"] for _, kw in h.notes] == ["Budget"]
        assert h.bells == 1
        h.publish(sample_sessions())  # same levels again: no repeat
        await settle(pilot)
        assert h.bells == 1


async def test_budget_modal_rejects_garbage_and_can_reset() -> None:
    h = Harness(config=Config(budgets=Budgets(usd=50.0)))
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await pilot.pause()
        h.app.screen.query_one("#usd", Input).value = "lots"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(h.app.screen, BudgetModal)
        assert "not a number" in text_of(h.app.screen.query_one("#budget-error", Static))
        h.app.screen.query_one("#usd", Input).value = "10"
        h.app.screen.query_one("#tokens", Input).value = "2M"
        await pilot.press("enter")
        await settle(pilot)
        key = sample_sessions()[1].key
        assert h.app.watchdog.overrides()[key].tokens == 2_000_000
        await pilot.press("b")
        await pilot.pause()
        await pilot.click("#reset")
        await settle(pilot)
        assert key not in h.app.watchdog.overrides()
        assert h.cell("api-gateway", "budget").endswith(" 9%")


async def budget_error(pilot: Pilot[None], usd: str) -> str:
    """Type `usd` into the open budget dialog, submit, and return the error it shows."""
    pilot.app.screen.query_one("#usd", Input).value = usd
    await pilot.press("enter")
    await pilot.pause()
    assert isinstance(pilot.app.screen, BudgetModal)
    return text_of(pilot.app.screen.query_one("#budget-error", Static))


async def test_budget_dialog_reasons_and_the_store_keeps_the_budget(tmp_path: Path) -> None:
    """`3,50` is never $350, nan/inf/1e400/1e-9 are refused with their reason, and a saved
    budget survives a restart and reaches the front-ends that read the store (hook, guard,
    run) through read_budgets."""
    db = tmp_path / "tokentop.db"
    key = sample_sessions()[1].key
    with Store(db) as store:
        h = Harness(store=store)
        async with h.app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("b")
            await pilot.pause()
            where = text_of(h.app.screen.query_one("#budget-where", Static))
            assert "Saved in tokentop's store" in where
            assert "ambiguous comma" in await budget_error(pilot, "3,50")
            assert "not a finite number" in await budget_error(pilot, "nan")
            assert "not a finite number" in await budget_error(pilot, "inf")
            assert "too large" in await budget_error(pilot, "1e400")
            assert "too small" in await budget_error(pilot, "1e-9")
            h.app.screen.query_one("#usd", Input).value = "3.50"
            h.app.screen.query_one("#tokens", Input).value = "2M"
            await pilot.press("enter")
            await settle(pilot)
        kept = store.budgets()
        assert {k: (v.budget, v.origin) for k, v in kept.items()} == {
            str(key): (Budget(3.5, 2_000_000), "app")
        }
    with Store(db) as store:
        h = Harness(store=store)
        async with h.app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            assert h.app.watchdog.overrides()[key] == Budget(3.5, 2_000_000)
            assert h.cell("api-gateway", "budget").endswith("%")
    config = msgspec.structs.replace(Config(), session_budgets=read_budgets(db))
    finding = budget_finding(sample_sessions()[1], config)
    assert finding is not None and "over budget" in finding.reason
    assert budget_finding(sample_sessions()[1], Config()) is None


async def test_an_emptied_budget_field_asks_before_the_limit_goes() -> None:
    """A burst of keys can empty the field (upstream Textual): saving then asks, names the
    limit that would go, and Cancel keeps it."""
    h = Harness(config=Config(budgets=Budgets(usd=10.0)))
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await pilot.pause()
        h.app.screen.query_one("#usd", Input).value = ""
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(h.app.screen, ConfirmModal)
        asked = " ".join(text_of(w) for w in h.app.screen.query(Static))
        assert "$10.00 limit" in asked and "Remove" in asked
        await pilot.press("n")
        await pilot.pause()
        assert isinstance(h.app.screen, BudgetModal)  # back to the dialog, nothing saved
        assert h.app.watchdog.overrides() == {}
        await pilot.click("#save")
        await pilot.pause()
        assert isinstance(h.app.screen, ConfirmModal)
        await pilot.press("y")
        await settle(pilot)
        assert list(h.app.watchdog.overrides().values()) == [Budget()]  # removed, as confirmed


async def test_alert_fires_once_per_threshold_crossing() -> None:
    h = Harness(config=Config(budgets=Budgets(usd=10.0)))
    steady = make_session("s1", cost=1.0, tpm=100.0)
    async with h.app.run_test(size=SIZE) as pilot:
        h.publish((steady,))
        await settle(pilot)
        for cost in (7.0, 8.5, 9.0, 9.5, 10.5, 11.0, 12.0):
            h.publish((with_(steady, cost_usd=cost),))
            await settle(pilot)
        messages = [m for m, kw in h.notes if kw.get("title") == "Budget"]
        assert len(messages) == 2
        assert "near its budget: 85% used" in messages[0]
        assert "over budget: 105% used" in messages[1]
        assert h.bells == 2


async def test_alerts_can_be_silent_and_quiet_sessions_do_not_alert() -> None:
    config = Config(budgets=Budgets(usd=1.0), alerts=msgspec.convert({"bell": False}, Alerts))
    h = Harness(config=config)
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        # two live sessions are over $1 at start; the idle and ended ones stay quiet
        assert sorted(m for m, _ in h.notes if "over budget" in m) == [
            "api-gateway (claude:e5f6-looping) is over budget: 430% used",
            "webshop (claude:a1b2c3d4-steady) is over budget: 210% used",
        ]
        assert h.bells == 0


async def test_policy_findings_flag_the_row_explain_in_details_and_notify_once() -> None:
    stuck = tuple(RecentTool(NOW - 300 + 20 * i, "Bash", "same-input", True) for i in range(8))
    steady, looping, codex, old = sample_sessions()
    h = Harness((steady, with_(looping, recent_tools=stuck), codex, old))
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert h.cell("api-gateway", "flags") == "LE"
        assert h.cell("webshop", "flags") == ""
        loops = [m for m, kw in h.notes if kw["title"] == "loop: api-gateway"]
        assert loops == ["looping: the same Bash call 6 times in 10 min with no other file change"]
        h.publish((steady, with_(looping, recent_tools=stuck, responses=50), codex, old))
        await settle(pilot)
        assert len([m for m, kw in h.notes if kw["title"] == "loop: api-gateway"]) == 1
        await pilot.press("enter")
        await settle(pilot)
        findings = text_of(h.app.screen.query_one("#detail-findings", Static))
        assert "looping: the same Bash call" in findings


async def test_help_lists_keys_and_closes() -> None:
    h = Harness(config=Config(keys={"kill": "K"}))
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(h.app.screen, HelpScreen)
        assert ("K", "Kill the session's process (SIGKILL)", "kill") in h.app.screen.keys
        await pilot.press("escape")
        assert isinstance(h.app.screen, MainScreen)


def procs_for_all() -> FakeProcesses:
    return FakeProcesses(
        {
            "a1b2c3d4-steady": FakeRef(1001, 1.0, ("claude", "--resume", "a1"), "hook", True),
            "e5f6-looping": FakeRef(1002, 1.0, ("claude",), "heuristic", False),
        }
    )


async def test_tagged_rows_are_killed_together_after_confirming() -> None:
    procs = procs_for_all()
    h = Harness(processes=procs)
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("space", "space")
        await pilot.pause()
        assert h.column("status")[:2] == ["● live", "● live"]
        await pilot.press("k")
        await settle(pilot)
        modal = h.app.screen
        assert isinstance(modal, ConfirmModal)
        body = modal.body.plain
        assert "pid 1001" in body and "claude --resume a1" in body
        assert "pid 1002" in body and "a guess" in body
        assert procs.calls == []
        await pilot.press("y")
        await settle(pilot)
        assert sorted((verb, pid) for verb, pid, _, _ in procs.calls) == [
            ("kill", 1001),
            ("kill", 1002),
        ]
        assert all(origin == "key:k" for *_, origin in procs.calls)
        # killed, and no longer tagged (●): the next key acts on the cursor's row, not on them
        assert h.column("status")[:2] == ["  killed", "  killed"]
        assert sum("kill pid" in m for m, _ in h.notes) == 2


async def test_actions_from_details_act_on_the_shown_session() -> None:
    procs = procs_for_all()
    h = Harness(processes=procs)
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("space")  # a tag on the main screen does not widen the action
        h.table.move_cursor(row=projects(h).index("webshop"))
        await pilot.press("enter")
        await settle(pilot)
        await pilot.press("k")
        await settle(pilot)
        assert isinstance(h.app.screen, ConfirmModal)
        assert "pid 1002" not in h.app.screen.body.plain
        await pilot.press("y")
        await settle(pilot)
        assert [(verb, pid) for verb, pid, *_ in procs.calls] == [("kill", 1001)]
        assert isinstance(h.app.screen, SessionDetail)
        assert "killed" in text_of(h.app.screen.query_one("#detail-title", Static))


async def test_cancel_sends_nothing() -> None:
    procs = procs_for_all()
    h = Harness(processes=procs)
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("t")
        await settle(pilot)
        assert isinstance(h.app.screen, ConfirmModal)
        await pilot.press("n")
        await settle(pilot)
        assert procs.calls == []
        assert isinstance(h.app.screen, MainScreen)


async def test_p_pauses_then_resumes() -> None:
    procs = procs_for_all()
    h = Harness(processes=procs, config=Config(budgets=Budgets(usd=50.0)))
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        assert h.column("eta")[0] == "4h36"  # $45.70 left at $9.90/h
        assert projects(h)[0] == "api-gateway"
        await pilot.press("p")
        await settle(pilot)
        await pilot.press("y")
        await settle(pilot)
        assert h.cell("api-gateway", "status") == "  paused"
        assert h.cell("api-gateway", "eta") == ""  # a stopped process burns nothing
        assert h.cell("api-gateway", "burn") == "—"  # from the moment tokentop knows
        assert projects(h)[0] == "webshop"  # sorted by burn: the paused one went down
        header = text_of(h.app.main_screen.query_one("#header", Static))
        assert "now 12.5k tok/min $3.40/h   live 1 of 4" in header  # webshop alone
        await pilot.press("p")
        await settle(pilot)
        assert "resume" in h.app.screen.body.plain  # type: ignore[attr-defined]
        await pilot.press("y")
        await settle(pilot)
        assert [verb for verb, *_ in procs.calls] == ["pause", "resume"]
        assert h.cell("api-gateway", "status") == "  live"
        assert h.column("status")[0] == "  live"


async def test_no_mapped_process_is_said_clearly() -> None:
    h = Harness(processes=FakeProcesses())
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("k")
        await settle(pilot)
        assert isinstance(h.app.screen, MainScreen)
        assert any("No process is mapped to api-gateway" in m for m, _ in h.notes)


async def test_read_only_hides_and_refuses_actions() -> None:
    procs = procs_for_all()
    h = Harness(processes=procs, read_only=True)
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        shown = {b.binding.id for b in h.app.screen.active_bindings.values() if b.enabled}
        assert "kill" not in shown and "pause-resume" not in shown
        assert "budget" in shown
        await pilot.press("k", "t", "p")
        await settle(pilot)
        assert isinstance(h.app.screen, MainScreen)
        assert procs.calls == []
        header = text_of(h.app.main_screen.query_one("#header", Static))
        assert "READ-ONLY" in header


async def test_keys_rebound_in_config() -> None:
    procs = procs_for_all()
    h = Harness(processes=procs, config=Config(keys={"kill": "K", "filter": "f"}))
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("k")
        await settle(pilot)
        assert isinstance(h.app.screen, MainScreen)
        await pilot.press("K")
        await settle(pilot)
        assert isinstance(h.app.screen, ConfirmModal)
        await pilot.press("n", "f")
        await pilot.pause()
        assert isinstance(h.app.focused, Input)


async def test_plus_and_minus_change_the_refresh_rate() -> None:
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("plus")
        assert h.app.refresh_s == 0.5
        await pilot.press("minus", "minus")
        assert h.app.refresh_s == 2.0
        assert h.engine.tick_s == 2.0
        header = text_of(h.app.main_screen.query_one("#header", Static))
        assert "refresh 2s" in header


async def test_q_quits_and_stops_the_engine() -> None:
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("q")
        await pilot.pause()
        assert h.app.return_code == 0
    assert h.engine.stopped


async def test_ctrl_c_quits_like_q_even_from_a_dialog() -> None:
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("b")
        await pilot.pause()
        assert isinstance(h.app.screen, BudgetModal)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert h.app.return_code == 0
    assert h.engine.stopped


async def test_arrows_scroll_a_narrow_table_a_column_at_a_time() -> None:
    h = Harness()
    async with h.app.run_test(size=(60, 20)) as pilot:
        await settle(pilot)
        table = h.app.main_table
        assert table.virtual_size.width > table.size.width  # narrower than even the 80 layout
        await pilot.press("right")
        await pilot.pause()
        assert int(table.scroll_x) == table.column_starts()[1] - 1  # STATUS scrolled away whole
        await pilot.press("left")
        await pilot.pause()
        assert int(table.scroll_x) == 0


def test_make_app_returns_the_app() -> None:
    app = make_app(FakeEngine(ledger(())), config=Config(), clock=FakeClock())
    assert isinstance(app, TokentopApp)
    assert not app.read_only


def assistant_line(sid: str, n: int, output: int, cwd: str) -> str:
    """One Claude Code assistant record, stamped now so it counts towards the burn rate."""
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    record = {
        "type": "assistant",
        "uuid": f"u{n}",
        "sessionId": sid,
        "timestamp": stamp,
        "cwd": cwd,
        "version": "2.0.14",
        "requestId": f"req_{n}",
        "message": {
            "id": f"msg_{n}",
            "role": "assistant",
            "model": "claude-sonnet-4-5-20250929",
            "content": [{"type": "text", "text": "working on it"}],
            "usage": {
                "input_tokens": 10,
                "output_tokens": output,
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 1000,
            },
        },
    }
    return json.dumps(record) + "\n"


async def wait_for(
    pilot: Pilot[None], condition: Callable[[], bool], timeout: float = 15.0
) -> None:
    """Poll while the real engine's threads work (a generous bound, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the app to update"
        await pilot.pause(0.05)


async def test_real_engine_appended_lines_change_tokens_and_burn(tmp_path: Path) -> None:
    from tokentop.engine.engine import Engine
    from tokentop.pricing import PriceTable
    from tokentop.sources.claude_code import ClaudeCodeSource

    sid = "0d7f6a8e-1111-4222-8333-944455556666"
    folder = tmp_path / "projects" / "-work-shop"
    folder.mkdir(parents=True)
    transcript = folder / f"{sid}.jsonl"
    transcript.write_text(assistant_line(sid, 1, 500, "/work/shop"))
    clock = SystemClock()
    engine = Engine(
        [ClaudeCodeSource(config_dirs=[tmp_path])], PriceTable.default().cost, clock=clock
    )
    app = make_app(engine, config=Config(), clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        table = app.main_table
        key = f"claude:{sid}"

        def cell(name: str) -> str:
            return cell_text(table.shown[key], name) if key in table.shown else ""

        await wait_for(pilot, lambda: cell("tokens") == "1.5k")
        assert cell("project") == "shop"
        assert cell("status").strip() == "live"
        burn_before = cell("burn")
        with transcript.open("a") as f:
            f.write(assistant_line(sid, 2, 20_000, "/work/shop"))
        await wait_for(pilot, lambda: cell("tokens") == "22.5k")
        assert cell("burn") != burn_before
        assert cell("cost").startswith("$")


def test_number_forms_for_narrow_cells() -> None:
    assert [fmt.compact(n) for n in (0, 999, 1_234, 2_500_000, 123_456_789)] == [
        "0",
        "999",
        "1.2k",
        "2.5M",
        "123M",
    ]
    assert fmt.cost(1.5, ()) == "$1.50"
    assert fmt.cost(0.0, ("mystery",)) == "?"  # never $0 for an unknown price
    assert fmt.cost(2.0, ("mystery",)) == "≥$2.00"
    assert fmt.duration(59) == "59s" and fmt.duration(3 * 3600 + 300) == "3h05"
    assert fmt.duration(167932) == "1d22h" and fmt.duration(12 * 86400 + 7200) == "12d"
    assert fmt.bar(0.5, 4) == "██  " and fmt.bar(2.0, 4) == "████"
    assert fmt.sparkline([0, 5, 10], 5) == "   ▅█"
    assert fmt.bar_chart([0, 8, 16], 2) == ["  █", " ██"]


@pytest.mark.parametrize(
    ("typed", "value"),
    [("", None), ("5", 5.0), ("$2.50", 2.5), ("500k", 500_000.0), ("2M", 2_000_000.0)],
)
def test_budget_amounts_as_users_type_them(typed: str, value: float | None) -> None:
    assert parse_usd(typed) == value


@pytest.mark.parametrize("typed", ["lots", "-3", "1..2", "nan"])
def test_bad_budget_amounts_are_refused(typed: str) -> None:
    with pytest.raises(ValueError):
        parse_usd(typed)


async def test_an_empty_table_says_where_it_looks_and_why(tmp_path: Path) -> None:
    """No sessions: the roots being watched and a pointer to the demo. A filter that hides
    every row says so instead."""
    from tokentop.engine.engine import Engine
    from tokentop.pricing import PriceTable
    from tokentop.sources.claude_code import ClaudeCodeSource

    engine = Engine([ClaudeCodeSource(config_dirs=[tmp_path])], PriceTable.default().cost)
    app = make_app(engine, config=Config(), clock=SystemClock())
    async with app.run_test(size=(140, 40)) as pilot:
        await wait_for(pilot, lambda: app.snapshot is not None)
        await settle(pilot)
        note = text_of(app.main_screen.query_one("#empty", Static))
        assert str(tmp_path / "projects") in note and "tokentop demo" in note
    h = Harness()
    async with h.app.run_test() as pilot:
        await settle(pilot)
        assert not h.app.main_screen.query_one("#empty", Static).display
        await pilot.press("slash", *"zzzz-nothing", "enter")
        await settle(pilot)
        assert "matches the filter" in text_of(h.app.main_screen.query_one("#empty", Static))


async def test_coalesced_judgements_lose_no_crossing() -> None:
    """Judgements held back by the redraw limit are replaced by the newest, but the crossings
    they carried are still announced, once each, when it is drawn."""
    h = Harness(config=Config(budgets=Budgets(usd=10.0)))
    steady = make_session("s1", cost=1.0, tpm=100.0)
    async with h.app.run_test(size=SIZE) as pilot:
        h.publish((steady,))
        await settle(pilot)
        h.app.min_redraw_s = 3600.0
        for cost in (8.5, 10.5, 11.0):
            h.publish((with_(steady, cost_usd=cost),))
        await settle(pilot)
        assert [kw.get("title") for _, kw in h.notes] == []  # held back: drawn moments ago
        h.app._draw_pending()  # what the scheduled timer does
        messages = [m for m, kw in h.notes if kw.get("title") == "Budget"]
        assert len(messages) == 2 and h.bells == 2
        assert "near its budget: 85% used" in messages[0]
        assert "over budget: 105% used" in messages[1]
        assert h.cell("webshop", "cost") == "$11.00"


async def test_a_filter_keypress_only_refilters_the_last_judgement() -> None:
    """No policy on the UI thread: typing a filter judges nothing, it filters what is shown."""
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        judged = h.app.watchdog.last
        assert judged is not None and h.app.judgement is judged
        await pilot.press("slash", *"gate")
        await settle(pilot)
        assert projects(h) == ["api-gateway"]
        assert h.app.watchdog.last is judged


async def test_spend_with_nothing_priced_reads_unknown_everywhere_never_zero() -> None:
    """A live session on a model without a price: the row, the header's today and now, and
    the Σ line all read "?" (never "$0.00"); beside a priced one, "≥" a lower bound."""
    unpriced = make_session(
        "u1", model="pace-model", unpriced=("pace-model",), cost=0.0, tpm=120_000.0, usd_h=0.0
    )
    h = Harness((unpriced,))
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        header = text_of(h.app.main_screen.query_one("#header", Static))
        total = text_of(h.app.main_screen.query_one("#listed-total", Static))
        assert "today 421k tok ?" in header and "now 120k tok/min ?/h" in header
        assert "$0.00" not in header and "$0.00" not in total
        assert "?" in total and "120k/m ?/h" in total
        h.publish((unpriced, sample_sessions()[0]))
        await settle(pilot)
        header = text_of(h.app.main_screen.query_one("#header", Static))
        assert "≥$2.10" in header and "≥$3.40/h" in header


def test_a_burst_of_news_is_two_notices_and_a_count_of_the_rest() -> None:
    """Five sessions cross their budget at once: the two worst get a toast, the other three
    are one line (a stack of toasts would cover an 80x24 screen)."""
    from tokentop.policy.budgets import BudgetUse, Level
    from tokentop.policy.watchdog import Judged
    from tokentop.ui.notices import notices_for

    crossed = []
    for i in range(5):
        session = make_session(f"s{i}", cwd=f"/p/proj-{i}")
        use = BudgetUse(Budget(usd=1.0), 1.2 if i % 2 else 0.85, Level.WARN, None, False)
        level = Level.OVER if i % 2 else Level.WARN
        crossed.append((Judged(session, "live", use, ""), level))
    notices = notices_for([], crossed)
    assert [n.severity for n in notices] == ["error", "error", "warning"]
    assert notices[-1].message.startswith("and 3 more")


async def test_the_cursor_stays_on_the_top_row_while_sessions_load() -> None:
    """The scan reads sessions as it goes: the first one read is not the top row once the
    others arrive. Until a key moves the cursor or acts on a row, it stays at the top; then
    it follows its session when the rows move."""
    samples = sample_sessions()
    h = Harness(samples[-1:])  # the last sample alone: read first
    async with h.app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        h.publish(samples)
        await settle(pilot)
        assert h.table.order[0] != str(samples[-1].key)  # it sorted below the others
        assert h.table.cursor_row == 0
        await pilot.press("down")
        chosen, top = h.table.current_key, h.table.order[0]
        h.publish(tuple(s for s in samples if str(s.key) != top))  # the rows move up
        await settle(pilot)
        assert h.table.current_key == chosen and h.table.cursor_row == 0
