"""The live app: a thin view over the core's one Watchdog, plus keys that act on processes.

Threading: the engine hands each snapshot to the Watchdog on its own thread; the app's Inbox
(ui/core.py) keeps the newest judgement and what it carried, and posts JudgementMade, which
replaces an older one still queued. The UI thread only draws judgements and announces: no
policy runs here. Process lookups, signals, git and store writes run in thread workers owned
by helper objects (ProcessActions, DetailFeed, EngineHealth) and come back by message.
"""

from __future__ import annotations

import time
from typing import ClassVar

from textual.app import App
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.notifications import SeverityLevel
from textual.reactive import reactive
from textual.screen import Screen

from tokentop.clock import Clock
from tokentop.config import Config
from tokentop.history.store import Store
from tokentop.model import LedgerSnapshot
from tokentop.policy.watchdog import Judgement, ProcessProbe
from tokentop.processes.protocols import ProcessControl, ProcessMapper
from tokentop.render.overview import header_totals, listed_total, window_figures
from tokentop.render.text import safe
from tokentop.ui import keys
from tokentop.ui import messages as msg
from tokentop.ui.core import AppCore, Drained, EngineLike, app_core, history_loader
from tokentop.ui.detail_feed import DetailFeed
from tokentop.ui.engine_state import EngineHealth
from tokentop.ui.notices import NOTICE_S, notices_for
from tokentop.ui.process_actions import ENDING_VERBS, GUARDED_ACTIONS, ProcessActions
from tokentop.ui.screens.detail import SessionDetail
from tokentop.ui.screens.help import HelpScreen, ParseErrorsScreen
from tokentop.ui.screens.history import HistoryScreen
from tokentop.ui.screens.main import MainScreen
from tokentop.ui.views.listing import Listing
from tokentop.ui.views.rows import Listed, empty_text
from tokentop.ui.widgets.header import HeaderState
from tokentop.ui.widgets.session_table import SessionTable

REFRESH_STEPS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
MIN_REDRAW_S = 0.25
"""Judgements arriving faster than this are coalesced (the engine may send 10 per second)."""


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
        self.set_keymap(config.keys)  # before mounting: later, the footer is built again
        self.engine, self.core, self.watchdog = engine, core, core.watchdog
        self.config, self.clock, self.store = config, clock, store
        self.read_only = read_only or config.read_only
        self.view = Listing(config.hide_after_h)
        self.refresh_s = config.refresh_s
        self.summaries_recorded = 0
        self.min_redraw_s = MIN_REDRAW_S
        self._last_draw = 0.0
        self._draw_scheduled = False
        self._drawn_progress = False
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
        self.engine.tick_s = self.refresh_s
        self.core.inbox.wake = lambda: self.post_message(msg.JudgementMade())
        self.post_message(msg.JudgementMade())  # whatever was judged before the app listened
        self.health.listen()
        self.run_worker(self.engine.start, thread=True, group="engine")

    def on_main_screen_mounted(self) -> None:
        """Show the sort, and any judgement or failure that arrived before the widgets."""
        self.resorted()
        self.health.show_banner()

    def on_filter_edited(self, message: msg.FilterEdited) -> None:
        self.filter_text = message.text

    def on_unmount(self) -> None:
        self.core.inbox.wake = None
        self.engine.stop()
        if self.core.keeper is not None:
            self.core.keeper.close(timeout=10.0)  # what ended is written before we go
        if self.core.windows is not None:
            self.core.windows.close()

    def rejudge(self) -> None:
        """Worker threads: a judgement now (an action or a budget changed what it says)."""
        self.watchdog.observe(self.engine.snapshot())

    # -- judgements --------------------------------------------------------------------------

    def on_judgement_made(self) -> None:
        """Draw at most every `min_redraw_s`: any cell update re-renders the visible rows,
        so a burst of judgements is coalesced, leaving the UI thread free to answer keys."""
        wait = self._last_draw + self.min_redraw_s - time.monotonic()
        scan_ended = self._drawn_progress and getattr(self.engine, "progress", None) is None
        if wait <= 0 or scan_ended:  # the full history shows the moment it is read
            self._draw_pending()
        elif not self._draw_scheduled:
            self._draw_scheduled = True
            self.set_timer(wait, self._draw_pending)

    def _draw_pending(self) -> None:
        self._draw_scheduled = False
        news = self.core.inbox.drain()
        if news.judgement is not None:
            self._last_draw = time.monotonic()
            self._drawn_progress = getattr(self.engine, "progress", None) is not None
            self.judgement = news.judgement
        self._announce_all(news)

    def _announce_all(self, news: Drained) -> None:
        """Each decision and crossing once (bell per config); each store problem once."""
        for n in notices_for(news.decisions, news.crossings):
            self.notify(n.message, title=n.title, severity=n.severity, timeout=NOTICE_S)
            if self.config.alerts.bell:
                self.bell()
        for problem in dict.fromkeys(news.problems).keys() - self._problems:
            self._problems.add(problem)
            self.notify(f"History not recorded: {problem}", title="Store", severity="warning")
        self.summaries_recorded += news.recorded
        for screen in self.screen_stack if news.recorded else []:
            if isinstance(screen, HistoryScreen):
                screen.read_store()

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

    @property
    def listed(self) -> dict[str, Listed]:
        return self.view.listed

    def refresh_view(self) -> None:
        """List, filter and sort the last judgement, then update only what changed."""
        judgement = self.judgement
        if judgement is None:
            return
        try:
            table = self.main_table
        except (NoMatches, StopIteration):
            return
        self.view.needle = self.filter_text
        self.view.take(judgement, self.clock.now())
        shown = self.view.shown()
        table.show_hosts(len({s.host for s in judgement.snapshot.sessions}) > 1)
        table.sync({m.row_key: self.view.row(m) for m in shown}, [m.row_key for m in shown])
        roots: list[str] = getattr(self.engine, "root_names", list)()
        total, show_all_key = len(judgement.snapshot.sessions), keys.key_of(self.config, "show-all")
        empty = empty_text(total, len(shown), bool(self.listed), self.config, show_all_key, roots)
        self.main_screen.show_empty(empty)
        self.main_screen.show_total(listed_total([m.judged for m in shown]))
        self._show_header(judgement)
        self.show_detail()

    def _show_header(self, judgement: Judgement) -> None:
        view = self.view
        state = HeaderState(
            view.sort, view.descending, self.refresh_s, self.filter_text,
            len(view.tagged & set(view.listed)), self.read_only,
            keys.key_of(self.config, "show-errors"), getattr(self.engine, "progress", None),
            view.show_all, keys.key_of(self.config, "show-all"),
        )  # fmt: skip
        listed = [m.judged for m in view.listed.values()]
        figures = header_totals(judgement, listed, view.hidden)
        watch = self.core.windows
        seen = watch.current() if watch is not None else None
        windows = window_figures(seen, self.clock.now(), self.config.alerts.warn_pct)
        self.main_screen.header.show(figures, state, windows)

    def show_detail(self) -> None:
        """Refresh the detail screen, if one is open, from the last judgement."""
        screen, judgement = self.screen, self.judgement
        if not isinstance(screen, SessionDetail) or judgement is None:
            return
        judged = judgement.of(screen.key)
        if judged is not None:
            screen.show(self.detail_feed.view(judgement.snapshot, judged, list(judged.reasons)))

    # -- what the workers report -------------------------------------------------------------

    def on_engine_failed(self, message: msg.EngineFailed) -> None:
        self.health.failed(message.failure)

    def on_processes_mapped(self, message: msg.ProcessesMapped) -> None:
        self.actions.confirm(message)

    def on_action_done(self, message: msg.ActionDone) -> None:
        self.actions.report(message)
        step = message.step
        if message.outcome.ok and step.verb in ENDING_VERBS and self.view.tagged:
            self.view.tagged.discard(str(step.session.key))  # no process left to act on
            self.refresh_view()

    def on_process_found(self, message: msg.ProcessFound) -> None:
        if isinstance(self.screen, SessionDetail) and self.screen.key == message.key:
            self.screen.show_process(message.ref)

    def on_git_assessed(self, message: msg.GitAssessed) -> None:
        self.detail_feed.assessed(message)
        self.show_detail()

    # -- keys -------------------------------------------------------------------------------

    def current(self) -> Listed | None:
        """The session under the cursor, or the one whose details are open. A key that acts
        on it chooses that row: from then on the cursor follows it when the rows move."""
        screen = self.screen
        self.main_table.chosen = True
        key = str(screen.key) if isinstance(screen, SessionDetail) else self.main_table.current_key
        return self.listed.get(key) if key else None

    def targets(self) -> list[Listed]:
        """Tagged sessions still listed, else the current one; details act on their own."""
        tagged = self.view.tagged_listed()
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
        elif self.view.tagged:
            self.view.tagged.clear()
            self.refresh_view()

    def action_sort(self, step: int) -> None:
        self.view.step_sort(step)
        self.resorted()

    def action_reverse_sort(self) -> None:
        self.view.sort_reversed = not self.view.sort_reversed
        self.resorted()

    def resorted(self) -> None:
        self.main_table.mark_sort(self.view.sort, self.view.descending)
        self.refresh_view()

    def action_tag(self) -> None:
        table = self.main_table
        key = table.current_key
        if key is None:
            return
        self.view.tagged ^= {key}
        self.refresh_view()
        table.move_cursor(row=table.cursor_row + 1)

    def action_refresh_rate(self, step: int) -> None:
        """How often the engine judges when nothing is appended (rates decay, stalls show)."""
        index = min(range(len(REFRESH_STEPS)), key=lambda i: abs(REFRESH_STEPS[i] - self.refresh_s))
        self.refresh_s = REFRESH_STEPS[max(0, min(len(REFRESH_STEPS) - 1, index + step))]
        self.engine.tick_s = self.refresh_s
        self.refresh_view()

    def action_show_all(self) -> None:
        self.view.show_all = not self.view.show_all
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
            extras = history_loader(store, self.config, self.engine, self.clock)
            self.push_screen(HistoryScreen(lambda: store.summaries(), self.clock, extras))

    async def action_open_details(self) -> None:
        here = self.current()
        if here is not None:
            await self.push_screen(SessionDetail(here.session.key))
            self.show_detail()
            self.actions.look_up(here.session)

    def action_budget(self) -> None:
        if (here := self.current()) is not None:
            self.actions.edit_budget(here.session)

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
            self.actions.request(what, key, self.targets(), self.view.live())


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
        engine, core, config=config, clock=clock, controller=controller, mapper=mapper,
        read_only=read_only, store=store,
    )  # fmt: skip
