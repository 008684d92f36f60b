"""The core objects the app is a view over: one Watchdog, its HistoryKeeper, and an Inbox.

The watchdog judges each engine snapshot on the engine thread; the keeper writes decisions and
endings to the store in its own thread; the Inbox is the app's subscriber. It keeps only the
newest judgement, but gathers what the ones it skips carried (decisions, budget crossings) and
what the keeper reports, so coalescing redraws never loses a notice. No Textual here: a
command builds these before the engine starts, so nothing judged while Textual loads is lost.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import msgspec

from tokentop.clock import Clock
from tokentop.config import Config
from tokentop.history.jobs import jobs_of
from tokentop.history.keeper import HistoryKeeper
from tokentop.history.report_rows import judge
from tokentop.history.session_budgets import LiveBudgets
from tokentop.history.store import Store
from tokentop.history.summary import MinutesFn, SessionSummary
from tokentop.history.windows import WindowWatch
from tokentop.model import LedgerSnapshot
from tokentop.policy.acted import ActionFeed
from tokentop.policy.budgets import Level
from tokentop.policy.detectors import Decision
from tokentop.policy.watchdog import Judged, Judgement, ProcessProbe, Watchdog
from tokentop.pricing import PriceTable
from tokentop.ui.views.history_rows import HistoryExtras


class Drained(NamedTuple):
    """Everything new since the UI last looked."""

    judgement: Judgement | None
    """The newest judgement, or None when no new one came."""
    decisions: list[tuple[Judged, Decision]]
    crossings: list[tuple[Judged, Level]]
    """Each with the session as judged then (its share used at the crossing)."""
    recorded: int
    """Summaries the keeper wrote."""
    problems: list[str]
    """Store problems, one per occurrence (the app says each distinct one once)."""


class Inbox:
    """Filled from the engine and history threads, drained on the UI thread, under a lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._newest: Judgement | None = None
        self._fresh = False
        self._decisions: list[tuple[Judged, Decision]] = []
        self._crossings: list[tuple[Judged, Level]] = []
        self._recorded = 0
        self._problems: list[str] = []
        self.wake: Callable[[], object] | None = None
        """Set by the app once it runs: posts a message (never touches widgets)."""

    def take(self, judgement: Judgement) -> None:
        """A Watchdog subscriber; an older snapshot arriving late is not shown, but what it
        decided still is."""
        decisions, crossings = _news(judgement)
        with self._lock:
            self._decisions += decisions
            self._crossings += crossings
            if self._newest is None or _order(judgement) >= _order(self._newest):
                self._newest, self._fresh = judgement, True
        self._wake()

    def recorded(self, summaries: list[SessionSummary]) -> None:
        with self._lock:
            self._recorded += len(summaries)
        self._wake()

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            self._problems.append(f"{type(exc).__name__}: {exc}")
        self._wake()

    def drain(self) -> Drained:
        with self._lock:
            drained = Drained(
                self._newest if self._fresh else None,
                self._decisions,
                self._crossings,
                self._recorded,
                self._problems,
            )
            self._fresh, self._decisions, self._crossings = False, [], []
            self._recorded, self._problems = 0, []
            return drained

    def _wake(self) -> None:
        wake = self.wake
        if wake is not None:
            wake()


def _news(
    judgement: Judgement,
) -> tuple[list[tuple[Judged, Decision]], list[tuple[Judged, Level]]]:
    """The judgement's decisions and crossings, each with its session as judged then."""
    if not (judgement.decisions or judgement.crossings):
        return [], []
    judged = {j.session.key: j for j in judgement.sessions}
    decisions = [(judged[d.session], d) for d in judgement.decisions if d.session in judged]
    crossings = [(judged[key], level) for key, level in judgement.crossings if key in judged]
    return decisions, crossings


def _order(judgement: Judgement) -> tuple[float, int]:
    """Newer means taken later; the version breaks ties (an engine restart resets it)."""
    return (judgement.snapshot.taken_at, judgement.snapshot.version)


class EngineLike(Protocol):
    """The part of tokentop.engine.engine.Engine the app uses."""

    tick_s: float

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def snapshot(self) -> LedgerSnapshot: ...
    def add_listener(self, fn: Callable[[LedgerSnapshot], None]) -> None: ...


class AppCore(NamedTuple):
    """What the app is a view over; its handlers read the inbox, its workers tell the
    watchdog (actions, budgets), the keeper writes on its own."""

    watchdog: Watchdog
    inbox: Inbox
    keeper: HistoryKeeper | None
    windows: WindowWatch | None = None
    """The vendors' usage windows for the header (its own thread; an engine listener)."""


def app_core(
    engine: EngineLike,
    config: Config,
    clock: Clock,
    *,
    store: Store | None = None,
    probe: ProcessProbe | None = None,
    actions: ActionFeed | None = None,
    official: Path | None = None,
) -> AppCore:
    """The watchdog over `engine` (with the budgets kept in the store, and what other tokentop
    processes did through `actions`), the inbox, and with a store the keeper, all subscribed;
    and the window watch, reading the official Claude windows the status line keeps at
    `official` (none without it). Call before the engine starts."""
    if store is not None and not isinstance(config.session_budgets, LiveBudgets):
        # the budgets set for one session by any tokentop process (`b`, `run --budget`)
        config = msgspec.structs.replace(config, session_budgets=LiveBudgets(store.path))
    watchdog = Watchdog(config, clock, probe=probe, actions=actions)
    engine.add_listener(watchdog.observe)
    inbox = Inbox()
    watchdog.subscribe(inbox.take)
    keeper = None
    if store is not None:
        try:  # the keeper reads the store's marks: a broken store costs the history only
            keeper = HistoryKeeper(
                store,
                config,
                clock,
                minutes_for=minutes_of(engine),
                budgets=watchdog.overrides,
                on_recorded=inbox.recorded,
                on_error=inbox.failed,
                after=getattr(engine, "scanned", None),
            )
        except Exception as exc:
            inbox.failed(exc)
        else:
            watchdog.subscribe(recent_endings(keeper.take, config.hide_after_h * 3600))
    windows = WindowWatch(cost_of(engine), clock.now, official)
    engine.add_listener(windows.take)
    return AppCore(watchdog, inbox, keeper, windows)


def cost_of(engine: Any) -> Any:
    """The engine's cost function (its price table with the config's overrides)."""
    cost = getattr(engine, "cost_fn", None)
    if callable(cost):
        return cost
    return PriceTable.default().cost


def recent_endings(
    take: Callable[[Judgement], None], within_s: float
) -> Callable[[Judgement], None]:
    """Hand on only the endings of sessions active within `within_s` (0: all), as the app
    lists them: the first judgement ends every old session, and recording years of them (git
    included) is `tokentop report`'s job, not a side effect of opening the app."""

    def recent(judgement: Judgement) -> None:
        if within_s > 0 and judgement.endings:
            last = {j.session.key: j.session.last_ts for j in judgement.sessions}
            now = judgement.snapshot.taken_at
            kept = tuple(e for e in judgement.endings if now - last.get(e.key, 0) <= within_s)
            if len(kept) != len(judgement.endings):
                judgement = msgspec.structs.replace(judgement, endings=kept)
        take(judgement)

    return recent


def minutes_of(engine: Any) -> MinutesFn | None:
    """Per-minute history of a session, read under the engine's lock, if the engine has it."""
    minutes = getattr(engine, "minutes", None)
    return minutes if callable(minutes) else None


def history_loader(
    store: Store, config: Config, engine: Any, clock: Clock
) -> Callable[[list[SessionSummary]], HistoryExtras]:
    """The history screen's jobs (the store's named runs and OpenClaw's cron logs of the
    OpenClaw state dirs the engine reads) and routing, over the summaries; called in its
    worker. The price table is built once (its cheapest-model lookups are cached by it)."""
    roots = [root for source, root in getattr(engine, "roots", []) if source.name == "openclaw"]
    tables: list[PriceTable] = []

    def load(summaries: list[SessionSummary]) -> HistoryExtras:
        from tokentop.pricing import build_table
        from tokentop.sources.openclaw_cron import cron_dirs, read_cron

        if not tables:
            tables.append(build_table(config.prices))
        cron = read_cron(cron_dirs(roots))
        jobs, runs = jobs_of(summaries, store.session_jobs(), cron, config, tables[0], clock.now())
        routed = {str(r.summary.key): r for r in judge(summaries, tables[0], config.routing)}
        return HistoryExtras(jobs, runs, routed)

    return load
