"""The live app: a thin view over the engine's snapshots, plus keys that act on processes.

Threading: the engine calls our listener from its own thread; the listener only posts a
LedgerUpdated message, which replaces an older one still queued. Engine ticks, process
lookups and signals run in thread workers and come back by message or call_from_thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar, Protocol

from textual import work
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.reactive import reactive
from textual.screen import Screen
from textual.timer import Timer

from tokentop.clock import Clock
from tokentop.config import Budget, Config
from tokentop.engine.engine import Engine
from tokentop.history.store import Store
from tokentop.model import LedgerSnapshot, SessionKey, SessionSnapshot
from tokentop.policy.budgets import Level, budget_use, crossings
from tokentop.processes.protocols import ProcessControl, ProcessMapper
from tokentop.ui import keys
from tokentop.ui.actions import stored_budgets
from tokentop.ui.alerts import DetectionTracker, Notice, budget_notice
from tokentop.ui.engine_state import EngineStateApp
from tokentop.ui.messages import FilterEdited, LedgerUpdated
from tokentop.ui.screens.detail import SessionDetail
from tokentop.ui.screens.help import ParseErrorsScreen
from tokentop.ui.screens.main import MainScreen
from tokentop.ui.views.rows import (
    SORTS,
    Measured,
    RowView,
    SortName,
    Status,
    descending,
    row_view,
    search_text,
    sort_value,
    status_of,
    totals,
    visible,
)
from tokentop.ui.widgets.header import HeaderState
from tokentop.ui.widgets.session_table import SessionTable

REFRESH_STEPS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0)
MIN_REDRAW_S = 0.25
"""Snapshots arriving faster than this are coalesced (the engine may send 10 per second)."""


class EngineLike(Protocol):
    """The part of tokentop.engine.engine.Engine the app uses."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def snapshot(self) -> LedgerSnapshot: ...
    def add_listener(self, fn: Callable[[LedgerSnapshot], None]) -> None: ...


class TokentopApp(EngineStateApp):
    """top for token spend."""

    CSS_PATH = "tokentop.tcss"
    TITLE = "tokentop"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        *keys.bindings(keys.APP_IDS),
        Binding("ctrl+c", "quit", show=False, priority=True),  # as htop, btop and k9s do
    ]

    snapshot: reactive[LedgerSnapshot | None] = reactive(None, always_update=True, init=False)
    filter_text: reactive[str] = reactive("", init=False)

    def __init__(
        self,
        engine: EngineLike,
        *,
        config: Config,
        clock: Clock,
        controller: ProcessControl | None = None,
        mapper: ProcessMapper | None = None,
        read_only: bool = False,
        store: Store | None = None,
    ) -> None:
        super().__init__()
        self.engine = engine
        self.config = config
        self.clock = clock
        self.controller = controller
        self.mapper = mapper
        self.read_only = read_only or config.read_only
        self.sort: SortName = "burn"
        self.sort_reversed = False
        self.refresh_s = config.refresh_s
        self.tagged: set[str] = set()
        self.overrides: dict[SessionKey, Budget] = stored_budgets(store)
        self.acted: dict[SessionKey, tuple[Status, float]] = {}
        self.alert_levels: dict[SessionKey, Level] = {}
        self.detections = DetectionTracker(config)
        self.measured: dict[str, Measured] = {}
        self.alerts_raised: list[tuple[SessionKey, Level]] = []
        self._budgets: dict[tuple[SessionKey, str], Budget] = {}
        self._timer: Timer | None = None
        self._ticking = False
        self.min_redraw_s = MIN_REDRAW_S
        self._pending: LedgerSnapshot | None = None
        self._last_draw = 0.0
        self._draw_scheduled = False
        self.show_all = False
        """`a`: list sessions older than hide_after_h too."""
        self.init_engine_state()
        minutes = engine.minutes if isinstance(engine, Engine) else None
        self.init_recording(store, minutes)
        self.init_insights()

    # -- lifecycle ---------------------------------------------------------------------------

    def get_default_screen(self) -> Screen[None]:
        return MainScreen()

    def on_mount(self) -> None:
        self.set_keymap(self.config.keys)
        self.engine.add_listener(self._on_engine_snapshot)
        self.listen_for_failure(self.engine)
        self._start_engine()
        self._timer = self.set_interval(self.refresh_s, self._tick)

    def on_main_screen_mounted(self) -> None:
        """Show the sort, and any snapshot or failure that arrived before the widgets existed."""
        self._resorted()
        self._show_banner()

    def on_filter_edited(self, message: FilterEdited) -> None:
        self.filter_text = message.text

    def on_unmount(self) -> None:
        self.engine.stop()

    def _on_engine_snapshot(self, snap: LedgerSnapshot) -> None:
        """Runs on the engine thread: hand over, never touch widgets here."""
        self.post_message(LedgerUpdated(snap))

    @work(thread=True, group="engine")
    def _start_engine(self) -> None:
        self.engine.start()
        self.post_message(LedgerUpdated(self.engine.snapshot()))

    def _tick(self) -> None:
        if self.engine_down:
            return  # a fresh evaluation of frozen counters would pass for live numbers
        if not self._ticking:
            self._ticking = True
            self._tick_engine()
        if self.snapshot is not None:
            listed = tuple(m.session for m in self.measured.values())
            self.record_ended(self.snapshot, listed)

    @work(thread=True, group="tick")
    def _tick_engine(self) -> None:
        """Re-evaluate rates now, so an idle session's burn decays to zero."""
        try:
            self.post_message(LedgerUpdated(self.engine.snapshot()))
        finally:
            self._ticking = False

    def on_ledger_updated(self, message: LedgerUpdated) -> None:
        """Keep the newest snapshot; draw at most every `min_redraw_s`.

        Any cell update makes DataTable re-render every visible cell, so a burst of
        snapshots is coalesced here, leaving the UI thread free to answer keys.
        """
        new, old = message.snapshot, self._pending or self.snapshot
        if old is not None and (new.version, new.taken_at) < (old.version, old.taken_at):
            return
        self._pending = new
        wait = self._last_draw + self.min_redraw_s - time.monotonic()
        if wait <= 0:
            self._draw_pending()
        elif not self._draw_scheduled:
            self._draw_scheduled = True
            self.set_timer(wait, self._draw_pending)

    def _draw_pending(self) -> None:
        self._draw_scheduled = False
        pending, self._pending = self._pending, None
        if pending is not None:
            self._last_draw = time.monotonic()
            self.snapshot = pending

    def watch_snapshot(self) -> None:
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
        """Measure every listed session, raise alerts, then update only what changed."""
        snap = self.snapshot
        if snap is None:
            return
        try:
            table = self.main_table
        except (NoMatches, StopIteration):
            return
        now = self.clock.now()
        hide_after = float("inf") if self.show_all else self.config.hide_after_h * 3600
        self.measured = {
            m.row_key: m
            for m in (self._measure(s, now) for s in visible(snap.sessions, now, hide_after))
        }
        self._raise_alerts()
        self._judge(now)
        shown = [m for m in self.measured.values() if self._matches(m)]
        reverse = descending(self.sort, self.sort_reversed)
        shown.sort(key=lambda m: sort_value(m.session, m.use, self.sort), reverse=reverse)
        rows = {m.row_key: self._row(m) for m in shown}
        table.show_hosts(len({s.host for s in snap.sessions}) > 1)  # "" is this machine
        table.sync(rows, [m.row_key for m in shown])
        self.main_screen.show_empty(self._empty_text(len(snap.sessions), len(shown)))
        self._show_header(snap)
        self.show_detail(snap, now)

    def _empty_text(self, total: int, shown: int) -> str:
        if shown:
            return ""
        if self.measured:
            return "No session matches the filter (escape clears it)."
        if total:
            hours = f"{self.config.hide_after_h:g}"
            key = self.config.keys.get("show-all", "a")
            return (
                f"{total} session(s), none active in the last {hours} h (hide_after_h). "
                f"Press {key} to show them."
            )
        roots: list[str] = getattr(self.engine, "root_names", list)()
        where = "\n".join(f"  {r.replace(':', '  ', 1)}" for r in roots)
        return (
            "No agent sessions found yet. tokentop is watching:\n"
            f"{where}\nStart an agent, or try `tokentop demo`."
        )

    def _measure(self, session: SessionSnapshot, now: float) -> Measured:
        """Reuse the last pass's work when the engine handed back the same session object
        (it does for quiet sessions), so 500 listed sessions cost little per snapshot."""
        budget = self.budget_of(session)
        activity = self.config.activity(session.last_ts, now)
        status = status_of(activity, session.key, session.last_ts, self.acted)
        old = self.measured.get(str(session.key))
        if old and old.status == status and old.use.budget == budget:
            if old.session is session:
                return old
            if old.session == session:  # rebuilt by the ledger, same content
                old.session = session
                return old
        return Measured(session, budget_use(session, budget, self.config.alerts), status)

    def budget_of(self, session: SessionSnapshot) -> Budget:
        override = self.overrides.get(session.key)
        if override is not None:
            return override
        cache_key = (session.key, session.cwd)
        budget = self._budgets.get(cache_key)
        if budget is None:
            budget = self._budgets[cache_key] = self.config.budget_for(
                session.key.agent, session.cwd
            )
        return budget

    def _matches(self, m: Measured) -> bool:
        needle = self.filter_text.strip().lower()
        if not needle:
            return True
        if not m.search:
            m.search = f"{m.status} {search_text(m.session)}"
        return needle in m.search

    def _row(self, m: Measured) -> RowView:
        tagged = m.row_key in self.tagged
        detected = self.detections.flags(m.session.key) if m.status == "live" else ""
        if m.row is None or m.row.tagged != tagged or m.detected != detected:
            m.detected = detected
            m.row = row_view(m.session, m.use, m.status, tagged, detected)
        return m.row

    def _judge(self, now: float) -> None:
        """Policy detectors: flags on rows, and one notice per new finding."""
        for notice in self.detections.update(self.measured.values(), now):
            self._announce(notice)
        if fresh := self.detections.take_fresh():
            self.record_findings(fresh)

    def _raise_alerts(self) -> None:
        """One notification and bell per session per threshold crossing (budgets.crossings)."""
        current = {m.session.key: m.use.level for m in self.measured.values()}
        live = {m.session.key for m in self.measured.values() if m.status == "live"}
        self.alert_levels, raised = crossings(self.alert_levels, current, live)
        for key, level in raised:
            self.alerts_raised.append((key, level))
            self._announce(budget_notice(self.measured[str(key)], level))

    def _announce(self, notice: Notice) -> None:
        self.notify(notice.message, title=notice.title, severity=notice.severity, timeout=10)
        if self.config.alerts.bell:
            self.bell()

    def _show_header(self, snap: LedgerSnapshot) -> None:
        statuses = {m.session.key: m.status for m in self.measured.values()}
        figures = totals(snap, len(self.measured), statuses)
        state = HeaderState(
            self.sort,
            descending(self.sort, self.sort_reversed),
            self.refresh_s,
            self.filter_text,
            len(self.tagged & set(self.measured)),
            self.read_only,
            self.config.keys.get("show-errors", keys.DEFAULT_KEYS["show-errors"].keys),
            getattr(self.engine, "progress", None),
            self.show_all,
        )
        self.main_screen.header.show(figures, state)

    # -- keys that only change the view ------------------------------------------------------

    def current(self) -> Measured | None:
        """The session under the cursor, or the one whose details are open."""
        screen = self.screen
        key = str(screen.key) if isinstance(screen, SessionDetail) else self.main_table.current_key
        return self.measured.get(key) if key else None

    def targets(self) -> list[Measured]:
        """Tagged sessions still listed, else the current one; details act on their own."""
        if isinstance(self.screen, SessionDetail):
            here = self.current()
            return [here] if here else []
        tagged = [m for key, m in self.measured.items() if key in self.tagged]
        if tagged:
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
        self._resorted()

    def action_reverse_sort(self) -> None:
        self.sort_reversed = not self.sort_reversed
        self._resorted()

    def _resorted(self) -> None:
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
        index = min(range(len(REFRESH_STEPS)), key=lambda i: abs(REFRESH_STEPS[i] - self.refresh_s))
        self.refresh_s = REFRESH_STEPS[max(0, min(len(REFRESH_STEPS) - 1, index + step))]
        if self._timer is not None:
            self._timer.stop()
        self._timer = self.set_interval(self.refresh_s, self._tick)
        self.refresh_view()

    def action_show_all(self) -> None:
        self.show_all = not self.show_all
        self.refresh_view()

    def action_show_errors(self) -> None:
        if self.snapshot is not None:
            self.push_screen(ParseErrorsScreen(self.snapshot.files))


def make_app(
    engine: EngineLike,
    *,
    config: Config,
    clock: Clock,
    controller: ProcessControl | None = None,
    mapper: ProcessMapper | None = None,
    read_only: bool = False,
    store: Store | None = None,
) -> TokentopApp:
    """The app over `engine`. It starts the engine on mount and stops it on exit.

    Without a controller and mapper the action keys explain that process control is off.
    With a store, sessions that end are recorded there, actions are logged, and `h` shows
    the history; the caller owns the store.
    """
    return TokentopApp(
        engine,
        config=config,
        clock=clock,
        controller=controller,
        mapper=mapper,
        read_only=read_only,
        store=store,
    )
