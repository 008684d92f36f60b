"""The live app: a thin view over the core's one Watchdog, plus keys that act on processes.

Threading: the engine hands each snapshot to the Watchdog on its own thread; the app's Inbox
(ui/core.py) keeps the newest judgement and what it carried, and posts JudgementMade, which
replaces an older one still queued. The UI thread only draws judgements and announces: no
policy runs here. Process lookups, signals, git and store writes run in thread workers owned
by helper objects (ProcessActions, DetailFeed, EngineHealth) and come back by message.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import ClassVar, Protocol

from textual.app import App
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.notifications import SeverityLevel
from textual.reactive import reactive
from textual.screen import Screen

from tokentop.clock import Clock
from tokentop.config import Config
from tokentop.history.store import Store, StoreError
from tokentop.model import LedgerSnapshot, SessionKey
from tokentop.policy.watchdog import Judgement, ProcessProbe
from tokentop.processes.protocols import ProcessControl, ProcessMapper
from tokentop.render.text import safe
from tokentop.ui import keys
from tokentop.ui.core import AppCore, Drained, app_core
from tokentop.ui.detail_feed import DetailFeed
from tokentop.ui.engine_state import EngineHealth
from tokentop.ui.messages import (
    ActionDone,
    EngineFailed,
    FilterEdited,
    GitAssessed,
    JudgementMade,
    ProcessesMapped,
    ProcessFound,
)
from tokentop.ui.notices import Notice, notices_for
from tokentop.ui.process_actions import GUARDED_ACTIONS, ProcessActions
from tokentop.ui.screens.detail import SessionDetail
from tokentop.ui.screens.help import HelpScreen, ParseErrorsScreen
from tokentop.ui.screens.history import HistoryScreen
from tokentop.ui.screens.main import MainScreen
from tokentop.ui.screens.modals import BudgetChoice, BudgetModal
from tokentop.ui.views.rows import (
    SORTS,
    Listed,
    RowView,
    SortName,
    descending,
    empty_text,
    project_name,
    row_view,
    search_text,
    sort_value,
    visible,
)
from tokentop.ui.views.rows import totals as header_totals
from tokentop.ui.widgets.header import HeaderState
from tokentop.ui.widgets.session_table import SessionTable

REFRESH_STEPS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
MIN_REDRAW_S = 0.25
"""Judgements arriving faster than this are coalesced (the engine may send 10 per second)."""


class EngineLike(Protocol):
    """The part of tokentop.engine.engine.Engine the app uses."""

    tick_s: float

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def snapshot(self) -> LedgerSnapshot: ...
    def add_listener(self, fn: Callable[[LedgerSnapshot], None]) -> None: ...


class TokentopApp(App[None]):
    """top for token spend."""

    CSS_PATH = "tokentop.tcss"
    TITLE = "tokentop"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        *keys.bindings(keys.APP_IDS),
        Binding("ctrl+c", "quit", show=False, priority=True),  # as htop, btop and k9s do
    ]

    judgement: reactive[Judgement | None] = reactive(None, always_update=True, init=False)
    filter_text: reactive[str] = reactive("", init=False)

    def __init__(
        self,
        engine: EngineLike,
        core: AppCore,
        *,
        config: Config,
        clock: Clock,
        controller: ProcessControl | None = None,
        mapper: ProcessMapper | None = None,
        read_only: bool = False,
        store: Store | None = None,
    ) -> None:
        super().__init__()
        self.engine, self.core, self.watchdog = engine, core, core.watchdog
        self.config, self.clock, self.store = config, clock, store
        self.read_only = read_only or config.read_only
        self.sort: SortName = "burn"
        self.sort_reversed = False
        self.refresh_s = config.refresh_s
        self.tagged: set[str] = set()
        self.show_all = False
        """`a`: list sessions older than hide_after_h too."""
        self.listed: dict[str, Listed] = {}
        self.summaries_recorded = 0
        self.min_redraw_s = MIN_REDRAW_S
        self._last_draw = 0.0
        self._draw_scheduled = False
        self._problems: set[str] = set()
        self.health = EngineHealth(self, engine)
        self.detail_feed = DetailFeed(self, clock, config.history)
        self.actions = ProcessActions(
            self, self.watchdog, self.rejudge, mapper=mapper, controller=controller,
            store=store, on_store_error=core.inbox.failed,
        )  # fmt: skip

    # -- lifecycle ---------------------------------------------------------------------------

    def get_default_screen(self) -> Screen[None]:
        return MainScreen()

    def on_mount(self) -> None:
        self.set_keymap(self.config.keys)
        self.engine.tick_s = self.refresh_s
        self.core.inbox.wake = lambda: self.post_message(JudgementMade())
        self.post_message(JudgementMade())  # whatever was judged before the app listened
        self.health.listen()
        self.run_worker(self.engine.start, thread=True, group="engine")

    def on_main_screen_mounted(self) -> None:
        """Show the sort, and any judgement or failure that arrived before the widgets."""
        self.resorted()
        self.health.show_banner()

    def on_filter_edited(self, message: FilterEdited) -> None:
        self.filter_text = message.text

    def on_unmount(self) -> None:
        self.core.inbox.wake = None
        self.engine.stop()
        if self.core.keeper is not None:
            self.core.keeper.close(timeout=10.0)  # what ended is written before we go

    def rejudge(self) -> None:
        """Worker threads: a judgement now (an action or a budget changed what it says)."""
        self.watchdog.observe(self.engine.snapshot())

    # -- judgements --------------------------------------------------------------------------

    def on_judgement_made(self) -> None:
        """Draw at most every `min_redraw_s`: any cell update re-renders the visible rows,
        so a burst of judgements is coalesced, leaving the UI thread free to answer keys."""
        wait = self._last_draw + self.min_redraw_s - time.monotonic()
        if wait <= 0:
            self._draw_pending()
        elif not self._draw_scheduled:
            self._draw_scheduled = True
            self.set_timer(wait, self._draw_pending)

    def _draw_pending(self) -> None:
        self._draw_scheduled = False
        news = self.core.inbox.drain()
        if news.judgement is not None:
            self._last_draw = time.monotonic()
            self.judgement = news.judgement
        self._announce_all(news)

    def _announce_all(self, news: Drained) -> None:
        if self.judgement is not None:
            for notice in notices_for(self.judgement, news.decisions, news.crossings):
                self._announce(notice)
        for problem in news.problems:
            self._store_failed(problem)
        if news.recorded:
            self.summaries_recorded += news.recorded
            for screen in self.screen_stack:
                if isinstance(screen, HistoryScreen):
                    screen.read_store()

    def _announce(self, notice: Notice) -> None:
        self.notify(notice.message, title=notice.title, severity=notice.severity, timeout=10)
        if self.config.alerts.bell:
            self.bell()

    def _store_failed(self, problem: str) -> None:
        """Say what went wrong once per distinct problem; the app goes on without it."""
        if problem not in self._problems:
            self._problems.add(problem)
            self.notify(f"History not recorded: {problem}", title="Store", severity="warning")

    def notify(
        self,
        message: str,
        *,
        title: str = "",
        severity: SeverityLevel = "information",
        timeout: float | None = None,
        markup: bool = True,
    ) -> None:
        """Every notification is plain text, escaped: most quote a session's cwd or key."""
        message, title = safe(message, keep_newlines=True), safe(title)
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    @property
    def snapshot(self) -> LedgerSnapshot | None:
        return self.judgement.snapshot if self.judgement is not None else None

    def watch_judgement(self) -> None:
        self.refresh_view()

    def watch_filter_text(self) -> None:
        self.refresh_view()

    # -- rendering ---------------------------------------------------------------------------

    @property
    def main_screen(self) -> MainScreen:
        return next(s for s in self.screen_stack if isinstance(s, MainScreen))

    @property
    def main_table(self) -> SessionTable:
        return self.main_screen.table

    def refresh_view(self) -> None:
        """List, filter and sort the last judgement, then update only what changed."""
        judgement = self.judgement
        if judgement is None:
            return
        try:
            table = self.main_table
        except (NoMatches, StopIteration):
            return
        self._list(judgement)
        shown = [m for m in self.listed.values() if self._matches(m)]
        reverse = descending(self.sort, self.sort_reversed)
        shown.sort(key=lambda m: sort_value(m.session, m.use, self.sort), reverse=reverse)
        rows = {m.row_key: self._row(m) for m in shown}
        table.show_hosts(len({s.host for s in judgement.snapshot.sessions}) > 1)
        table.sync(rows, [m.row_key for m in shown])
        total = len(judgement.snapshot.sessions)
        roots: list[str] = getattr(self.engine, "root_names", list)()
        show_all_key = self.config.keys.get("show-all", "a")
        empty = empty_text(total, len(shown), bool(self.listed), self.config, show_all_key, roots)
        self.main_screen.show_empty(empty)
        self._show_header(judgement)
        self.show_detail()

    def _list(self, judgement: Judgement) -> None:
        """The listed sessions, reusing the memos of those judged alike last time."""
        hide_after = float("inf") if self.show_all else self.config.hide_after_h * 3600
        listed: dict[str, Listed] = {}
        for j in visible(judgement.sessions, self.clock.now(), hide_after):
            old = self.listed.get(str(j.session.key))
            if old is not None and old.same(j):
                old.judged = j
                listed[old.row_key] = old
            else:
                listed[str(j.session.key)] = Listed(j)
        self.listed = listed

    def _matches(self, m: Listed) -> bool:
        needle = self.filter_text.strip().lower()
        if not needle:
            return True
        if not m.search:
            m.search = f"{m.status} {search_text(m.session)}"
        return needle in m.search

    def _row(self, m: Listed) -> RowView:
        tagged = m.row_key in self.tagged
        if m.row is None or m.row.tagged != tagged:
            m.row = row_view(m.session, m.use, m.status, tagged, m.judged.flags)
        return m.row

    def _show_header(self, judgement: Judgement) -> None:
        listed = list(self.listed.values())
        state = HeaderState(
            self.sort,
            descending(self.sort, self.sort_reversed),
            self.refresh_s,
            self.filter_text,
            len(self.tagged & set(self.listed)),
            self.read_only,
            self.config.keys.get("show-errors", keys.DEFAULT_KEYS["show-errors"].keys),
            getattr(self.engine, "progress", None),
            self.show_all,
        )
        self.main_screen.header.show(header_totals(judgement, listed), state)

    def show_detail(self) -> None:
        """Refresh the detail screen, if one is open, from the last judgement."""
        screen, judgement = self.screen, self.judgement
        if not isinstance(screen, SessionDetail) or judgement is None:
            return
        judged = judgement.of(screen.key)
        if judged is not None:
            reasons = self.watchdog.reasons(judged.session)
            screen.show(self.detail_feed.view(judgement.snapshot, judged, reasons))

    # -- what the workers report -------------------------------------------------------------

    def on_engine_failed(self, message: EngineFailed) -> None:
        self.health.failed(message.failure)

    def on_processes_mapped(self, message: ProcessesMapped) -> None:
        self.actions.confirm(message)

    def on_action_done(self, message: ActionDone) -> None:
        self.actions.report(message)

    def on_process_found(self, message: ProcessFound) -> None:
        screen = self.screen
        if isinstance(screen, SessionDetail) and screen.key == message.key:
            screen.show_process(message.ref)

    def on_git_assessed(self, message: GitAssessed) -> None:
        self.detail_feed.assessed(message)
        self.show_detail()

    # -- keys -------------------------------------------------------------------------------

    def current(self) -> Listed | None:
        """The session under the cursor, or the one whose details are open."""
        screen = self.screen
        key = str(screen.key) if isinstance(screen, SessionDetail) else self.main_table.current_key
        return self.listed.get(key) if key else None

    def targets(self) -> list[Listed]:
        """Tagged sessions still listed, else the current one; details act on their own."""
        tagged = [m for key, m in self.listed.items() if key in self.tagged]
        if tagged and not isinstance(self.screen, SessionDetail):
            return tagged
        here = self.current()
        return [here] if here else []

    def action_filter(self) -> None:
        self.main_screen.open_filter()

    def action_clear(self) -> None:
        """Escape: clear the filter, then the tags."""
        if self.main_screen.close_filter():
            self.filter_text = ""
        elif self.tagged:
            self.tagged.clear()
            self.refresh_view()

    def action_sort(self, step: int) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + step) % len(SORTS)]
        self.resorted()

    def action_reverse_sort(self) -> None:
        self.sort_reversed = not self.sort_reversed
        self.resorted()

    def resorted(self) -> None:
        self.main_table.mark_sort(self.sort, descending(self.sort, self.sort_reversed))
        self.refresh_view()

    def action_tag(self) -> None:
        table = self.main_table
        key = table.current_key
        if key is None:
            return
        self.tagged ^= {key}
        self.refresh_view()
        table.move_cursor(row=table.cursor_row + 1)

    def action_refresh_rate(self, step: int) -> None:
        """How often the engine judges when nothing is appended (rates decay, stalls show)."""
        index = min(range(len(REFRESH_STEPS)), key=lambda i: abs(REFRESH_STEPS[i] - self.refresh_s))
        self.refresh_s = REFRESH_STEPS[max(0, min(len(REFRESH_STEPS) - 1, index + step))]
        self.engine.tick_s = self.refresh_s
        self.refresh_view()

    def action_show_all(self) -> None:
        self.show_all = not self.show_all
        self.refresh_view()

    def action_show_errors(self) -> None:
        if self.snapshot is not None:
            self.push_screen(ParseErrorsScreen(self.snapshot.files))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            rows = keys.key_help(self.config.keys, self.read_only)
            self.push_screen(HelpScreen(rows, 'Rebind keys in config.toml: [keys] kill = "K"'))

    def action_history(self) -> None:
        if self.store is None:
            self.notify("History is off in this run (no store).", severity="warning")
        elif not isinstance(self.screen, HistoryScreen):
            store = self.store
            self.push_screen(HistoryScreen(lambda: store.summaries(), self.clock))

    async def action_open_details(self) -> None:
        here = self.current()
        if here is not None:
            await self.push_screen(SessionDetail(here.session.key))
            self.show_detail()
            self.actions.look_up(here.session)

    def action_budget(self) -> None:
        """A budget for the session: the watchdog judges by it at once, the store keeps it."""
        here = self.current()
        if here is None:
            return
        key, label = here.session.key, f"{project_name(here.session.cwd)} ({here.session.key})"

        def chosen(choice: BudgetChoice | None) -> None:
            if choice is not None:
                self.watchdog.set_budget(key, choice.budget)
                self._keep_budget(key, choice)
                self.run_worker(self.rejudge, thread=True, group="judge")

        current = self.watchdog.budget_of(here.session)
        self.push_screen(BudgetModal(label, current, self.store is not None), chosen)

    def _keep_budget(self, key: SessionKey, choice: BudgetChoice) -> None:
        """Saved for the hook, guard and run (and the next start of the app)."""
        if self.store is not None:
            try:
                self.store.set_budget(key, choice.budget)
            except (StoreError, sqlite3.Error) as exc:
                self.notify(f"Budget kept for this run only: {exc}", severity="warning")

    # -- keys that act on processes ----------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Read-only mode removes the process actions from the footer and ignores their keys."""
        return not (self.read_only and action in GUARDED_ACTIONS)

    def action_pause_resume(self) -> None:
        self._request("pause-resume", "p")

    def action_terminate(self) -> None:
        self._request("terminate", "t")

    def action_kill(self) -> None:
        self._request("kill", "k")

    def _request(self, what: str, key: str) -> None:
        if not self.read_only:
            live = [m for m in self.listed.values() if m.status == "live"]
            self.actions.request(what, key, self.targets(), live)


def make_app(
    engine: EngineLike,
    *,
    config: Config,
    clock: Clock,
    controller: ProcessControl | None = None,
    mapper: ProcessMapper | None = None,
    read_only: bool = False,
    store: Store | None = None,
    core: AppCore | None = None,
    probe: ProcessProbe | None = None,
) -> TokentopApp:
    """The app over `engine`. It starts the engine on mount and stops it on exit.

    `core` is the watchdog (subscribed to the engine), the inbox and the keeper, built by
    `app_core` before the engine starts; without one it is built here (with `probe`, the
    state of exactly mapped processes). Without a controller and mapper the action keys say
    that process control is off. With a store, sessions that end are recorded there, actions
    are logged, and `h` shows the history; the caller owns the store.
    """
    core = core or app_core(engine, config, clock, store=store, probe=probe)
    return TokentopApp(
        engine,
        core,
        config=config,
        clock=clock,
        controller=controller,
        mapper=mapper,
        read_only=read_only,
        store=store,
    )
