"""JobRunsScreen: one recurring job's runs, newest first; `enter` opens a run's summary.

Opened from the history screen's jobs view (`j`). The run where the cost level changed (a
regressed job's first changed run) is marked.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Static

from tokentop.clock import Clock
from tokentop.history.jobs import JobRow, JobRun
from tokentop.history.report_rows import Judged as Routed
from tokentop.history.summary import SessionSummary
from tokentop.ui.screens.summary import SummaryScreen
from tokentop.ui.views.job_rows import (
    RUN_COLUMNS,
    RUN_KEYS,
    RUN_RIGHT,
    RUN_SQUEEZES,
    STATUS_STYLES,
    job_heading,
    run_row,
)
from tokentop.ui.widgets.fitted_table import FittedTable, aligned
from tokentop.ui.widgets.footer import KeyFooter


class JobRunsScreen(Screen[None]):
    """A job's runs: when, its session, how it ended, cost, commits."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "back", "Back", id="runs-back"),
    ]
    AUTO_FOCUS = "#runs-table"

    def __init__(
        self,
        row: JobRow,
        runs: Sequence[JobRun],
        summaries: Mapping[str, SessionSummary],
        routed: Mapping[str, Routed],
        clock: Clock,
    ) -> None:
        super().__init__()
        self.row = row
        self.runs = list(runs)
        self.summaries = summaries
        self.routed = routed
        self.clock = clock

    def compose(self) -> ComposeResult:
        yield Static(id="history-header")
        yield FittedTable(id="runs-table")
        yield KeyFooter()

    def on_mount(self) -> None:
        change = self.row.change
        first = change.first_changed if change is not None else None
        heading = Text(job_heading(self.row), style="bold")
        if first is not None:
            heading.append("   ⚑ regressed", "bold red")
        self.query_one("#history-header", Static).update(heading)
        titles = list(zip(RUN_KEYS, aligned(RUN_COLUMNS, RUN_RIGHT), strict=True))
        now = self.clock.now()
        rows = []
        for run in self.runs:
            shown = run_row(run, now, first)
            cells = aligned(shown.cells, RUN_RIGHT)
            cells[2].stylize(STATUS_STYLES.get(shown.status, ""))
            cells[-1].stylize("bold red")
            rows.append((shown.key, cells))
        self.query_one("#runs-table", FittedTable).show(titles, rows, RUN_SQUEEZES)

    def action_back(self) -> None:
        self.dismiss()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        key = str(event.row_key.value)
        found = self.summaries.get(key)
        if found is not None:
            self.app.push_screen(SummaryScreen(found, self.routed.get(key)))
