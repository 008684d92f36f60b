"""HistoryScreen: recorded session summaries from the store, filterable and sortable.

The store is read in a thread worker when the screen opens (and on `r`); `enter` shows one
summary as the Markdown `tokentop summary` prints. `j` switches to the jobs view (recurring
jobs, as `report --by job` shows them, computed in the same worker), where `enter` opens a
job's runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Input, Static

from tokentop.clock import Clock
from tokentop.history.jobs import JobRow
from tokentop.history.summary import SessionSummary
from tokentop.quantities import plural
from tokentop.render import figures as fmt
from tokentop.render.text import safe
from tokentop.ui.screens.jobs import JobRunsScreen
from tokentop.ui.screens.summary import SummaryScreen as SummaryScreen  # tests import it here
from tokentop.ui.views.history_rows import (
    HISTORY_COLUMNS,
    HISTORY_SORTS,
    HISTORY_SQUEEZES,
    LABEL_STYLES,
    NO_EXTRAS,
    TEXT_SORTS,
    HistoryExtras,
    HistorySort,
    history_row,
    history_totals,
    shown_summaries,
)
from tokentop.ui.views.job_rows import (
    JOB_COLUMNS,
    JOB_KEYS,
    JOB_RIGHT,
    JOB_SQUEEZES,
    job_row_cells,
    regressed_count,
    runs_of,
    shown_jobs,
)
from tokentop.ui.widgets.fitted_table import FittedTable, aligned
from tokentop.ui.widgets.footer import KeyFooter

SummaryLoader = Callable[[], tuple[list[SessionSummary], int]]
"""Returns every recorded summary and how many rows could not be read (Store.summaries)."""
ExtrasLoader = Callable[[list[SessionSummary]], HistoryExtras]
"""Jobs and routing over the summaries (ui/core.py `history_loader`), in the worker too."""
EMPTY_NOTE = (
    "No session recorded yet. A session is recorded when it ends: killed or terminated here, "
    "or quiet for [history] idle_end_s. `tokentop report --scan` records every transcript."
)


class HistoryScreen(Screen[None]):
    """Every recorded session: when, how much, what it left in git, and how it ended."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="history-back"),
        Binding("slash,f4", "filter", "Filter", id="history-filter"),
        Binding("s,>,f6", "sort(1)", "Sort", id="history-sort-next"),
        Binding("<", "sort(-1)", "", show=False, id="history-sort-prev"),
        Binding("I", "reverse_sort", "", show=False, id="history-sort-reverse"),
        Binding("r", "reload", "Reload", id="history-reload"),
        Binding("j", "toggle_jobs", "Jobs/sessions", id="history-jobs"),
    ]
    AUTO_FOCUS = "#history-table"

    def __init__(
        self, load: SummaryLoader, clock: Clock, extras: ExtrasLoader | None = None
    ) -> None:
        super().__init__()
        self.load = load
        self.clock = clock
        self.load_extras = extras
        self.jobs_view = False
        self.extras = NO_EXTRAS
        self.shown_jobs: list[JobRow] = []
        self.summaries: list[SessionSummary] = []
        self.shown: list[SessionSummary] = []
        self.unreadable = 0
        self.error = ""
        self.loaded = False
        self.sort: HistorySort = "end"
        self.sort_reversed = False
        self.needle = ""

    def compose(self) -> ComposeResult:
        yield Static(id="history-header")
        yield FittedTable(id="history-table")
        yield Input(placeholder="filter: project, agent, model, label, session id…", id="filter")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self.show_header()
        self.read_store()

    @property
    def table(self) -> FittedTable:
        return self.query_one("#history-table", FittedTable)

    @work(thread=True, exclusive=True, group="history")
    def read_store(self) -> None:
        """Read every summary off the UI thread; a store that fails is said, not raised."""
        try:
            summaries, bad = self.load()
            extras = self.load_extras(summaries) if self.load_extras else NO_EXTRAS
        except Exception as exc:  # sqlite3 or StoreError: the screen stays usable
            self.app.call_from_thread(self.show_error, f"cannot read the store: {exc}")
            return
        self.app.call_from_thread(self.show_summaries, summaries, bad, extras)

    def show_summaries(
        self, summaries: Sequence[SessionSummary], unreadable: int, extras: HistoryExtras
    ) -> None:
        self.summaries, self.unreadable = list(summaries), unreadable
        self.extras = extras
        self.loaded, self.error = True, ""
        self.refresh_rows()

    def show_error(self, message: str) -> None:
        self.error, self.loaded = message, True
        self.show_header()

    # -- rendering ---------------------------------------------------------------------------

    def refresh_rows(self) -> None:
        """Fill the table in the current filter and order; the cursor stays on its session."""
        if self.jobs_view:
            self.refresh_jobs()
            return
        table = self.table
        keep = self.current_key
        self.shown = shown_summaries(self.summaries, self.needle, self.sort, self.sort_reversed)
        titles = [(c.key, self._label(c.label, c.sort, c.right)) for c in HISTORY_COLUMNS]
        now = self.clock.now()
        rows = []
        for summary in self.shown:
            row = history_row(summary, now, self.extras.routed.get(str(summary.key)))
            cells = [self._cell(c.key, getattr(row, c.key), c.right) for c in HISTORY_COLUMNS]
            rows.append((row.key, cells))
        table.show(titles, rows, HISTORY_SQUEEZES)
        keys = [str(s.key) for s in self.shown]
        if keep in keys:
            table.move_cursor(row=keys.index(keep))
        self.show_header()

    def refresh_jobs(self) -> None:
        """The jobs view: one row per recurring job, the most recently run first."""
        self.shown_jobs = shown_jobs(self.extras.jobs, self.needle)
        titles = list(zip(JOB_KEYS, aligned(JOB_COLUMNS, JOB_RIGHT), strict=True))
        rows = []
        for row in self.shown_jobs:
            cells = aligned(job_row_cells(row), JOB_RIGHT)
            if row.regressed:
                cells[9].stylize("bold red")
            rows.append((row.job_key, cells))
        self.table.show(titles, rows, JOB_SQUEEZES)
        self.show_header()

    def _label(self, label: str, sort: HistorySort | None, right: bool) -> Text:
        if sort == self.sort:
            label += "▼" if self.descending else "▲"
        return Text(label, justify="right" if right else "left")

    @staticmethod
    def _cell(key: str, value: str, right: bool) -> Text:
        style = LABEL_STYLES.get(value.removesuffix(" ⚑"), "") if key == "label" else ""
        return Text(value, style=style, justify="right" if right else "left")

    @property
    def descending(self) -> bool:
        return (self.sort not in TEXT_SORTS) != self.sort_reversed

    @property
    def current_key(self) -> str | None:
        if self.jobs_view or not self.shown or self.table.row_count == 0:
            return None
        row = min(self.table.cursor_row, len(self.shown) - 1)
        return str(self.shown[row].key)

    def show_header(self) -> None:
        self.query_one("#history-header", Static).update(self.header_text())

    def header_text(self) -> Text:
        if self.error:
            return Text(safe(self.error), style="bold red")
        if not self.loaded:
            return Text("reading the store…", style="dim")
        if not self.summaries:
            return Text(EMPTY_NOTE, style="yellow")
        if self.jobs_view:
            return self.jobs_header()
        t = history_totals(self.shown)
        line = Text.assemble(
            ("History", "bold"),
            f"  {t.sessions} of {plural(len(self.summaries), 'session')}  ",
            (f"{fmt.compact(t.tokens)} tok  {fmt.usd(t.cost)}", "bold"),
            f"  {plural(t.commits, 'commit')}",
            f"  {fmt.usd(per)}/commit" if (per := t.per_commit) is not None else "",
            ("\nsort ", "dim"),
            f"{self.sort}{'▼' if self.descending else '▲'}",
        )
        if self.needle:
            line.append_text(Text.assemble(("   filter ", "dim"), (repr(self.needle), "bold")))
        if self.unreadable:
            line.append(f"   ⚠ {self.unreadable} stored summaries unreadable", "bold yellow")
        return line

    def jobs_header(self) -> Text:
        if not self.extras.jobs:
            return Text(
                "No recurring jobs: a job is an OpenClaw cron job, `tokentop run --job NAME`, "
                "or sessions sharing a cwd and first prompt.",
                style="yellow",
            )
        regressed = regressed_count(self.shown_jobs)
        line = Text.assemble(
            ("Jobs", "bold"),
            f"  {len(self.shown_jobs)} of {plural(len(self.extras.jobs), 'job')}  ",
            (f"{len(self.extras.runs)} runs", "bold"),
            ("\n⚑ ", "bold red") if regressed else ("\n", ""),
            (f"{regressed} regressed week over week   " if regressed else "", "bold red"),
            ("enter: runs   j: sessions", "dim"),
        )
        if self.needle:
            line.append_text(Text.assemble(("   filter ", "dim"), (repr(self.needle), "bold")))
        return line

    # -- keys --------------------------------------------------------------------------------

    def action_toggle_jobs(self) -> None:
        self.jobs_view = not self.jobs_view
        self.refresh_rows()

    def action_back(self) -> None:
        """Escape steps back one level: the filter, then the jobs view, then the screen."""
        field = self.query_one("#filter", Input)
        if field.display or field.value:
            field.value, field.display = "", False
            self.table.focus()
            return
        if self.jobs_view:
            self.action_toggle_jobs()
            return
        self.dismiss()

    def action_filter(self) -> None:
        field = self.query_one("#filter", Input)
        field.display = True
        field.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.needle = event.value
        self.refresh_rows()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.table.focus()

    def action_sort(self, step: int) -> None:
        self.sort = HISTORY_SORTS[(HISTORY_SORTS.index(self.sort) + step) % len(HISTORY_SORTS)]
        self.refresh_rows()

    def action_reverse_sort(self) -> None:
        self.sort_reversed = not self.sort_reversed
        self.refresh_rows()

    def action_reload(self) -> None:
        self.read_store()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        key = event.row_key.value
        if self.jobs_view:
            job = next((j for j in self.shown_jobs if j.job_key == key), None)
            if job is not None:
                by_key = {str(s.key): s for s in self.summaries}
                runs = runs_of(job, self.extras.runs)
                screen = JobRunsScreen(job, runs, by_key, self.extras.routed, self.clock)
                self.app.push_screen(screen)
            return
        found = next((s for s in self.shown if str(s.key) == key), None)
        if found is not None:
            self.app.push_screen(SummaryScreen(found, self.extras.routed.get(str(key))))
