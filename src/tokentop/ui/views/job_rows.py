"""The history screen's jobs view and a job's runs, as plain strings (no Textual here).

The cells are `tokentop report --by job`'s (render/report_jobs.py), so the screen and the
report never disagree; names from transcripts and configs are escaped for the terminal.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from tokentop.history.jobs import JobRow, JobRun
from tokentop.render import figures as fmt
from tokentop.render.report_jobs import HEADER, job_cells, pct
from tokentop.render.text import safe
from tokentop.ui.views.history_rows import local_time
from tokentop.ui.views.table_fit import Squeeze

JOB_KEYS = HEADER[:-1]
JOB_COLUMNS = tuple(h.upper() for h in JOB_KEYS)
"""The report's columns but the tokens by model (too wide for a row; the runs show models)."""
JOB_RIGHT = frozenset(range(2, len(JOB_COLUMNS))) - {len(JOB_COLUMNS) - 1}
JOB_SQUEEZES = tuple(
    Squeeze(key, width)
    for key, width in (
        ("job", 24),
        ("source", None),
        ("theater", None),
        ("prev 7d", None),
        ("7d", None),
        ("failed", None),
        ("commits/run", None),
        ("cheapest", None),
        ("$/commit", None),
        ("job", 12),
    )
)
"""A narrow terminal keeps the job, its runs, its cost and $/run, and the week's change."""
RUN_KEYS = ("when", "session", "status", "cost", "cheapest", "tokens", "commits", "label", "mark")
RUN_COLUMNS = ("WHEN", "SESSION", "STATUS", "COST", "CHEAPEST", "TOKENS", "COMMITS", "LABEL", "")
RUN_RIGHT = frozenset({3, 4, 5, 6})
RUN_SQUEEZES = (
    Squeeze("label"),
    Squeeze("tokens"),
    Squeeze("session", 12),
    Squeeze("cheapest"),
    Squeeze("commits"),
)
"""A run keeps when, its session, status, cost and the mark of where the job changed."""
STATUS_STYLES = {"error": "bold red", "stopped": "bold red", "ok": "green", "": "dim"}


def job_row_cells(row: JobRow) -> list[str]:
    return [safe(c) for c in job_cells(row)[: len(JOB_COLUMNS)]]


def shown_jobs(rows: Iterable[JobRow], needle: str) -> list[JobRow]:
    text = needle.strip().lower()
    return [r for r in rows if not text or text in f"{r.job} {r.project} {r.source}".lower()]


def runs_of(row: JobRow, runs: Iterable[JobRun]) -> list[JobRun]:
    """The job's runs, newest first (the latest run is what a user looks at first)."""
    return sorted((r for r in runs if r.job_key == row.job_key), key=lambda r: -r.at)


class RunRow(NamedTuple):
    key: str
    cells: list[str]
    status: str


def run_row(run: JobRun, now: float, first_changed: JobRun | None) -> RunRow:
    commits = "—" if run.commits is None else str(run.commits)
    route = run.route
    cheapest = fmt.usd(route.cheapest_usd) if route is not None and route.cheapest_models else ""
    mark = "⚑ changed here" if first_changed is not None and run == first_changed else ""
    cells = [
        local_time(run.at, now),
        safe(fmt.short_session(run.session)) if run.session else "(no transcript)",
        run.status or "-",
        fmt.usd(run.cost_usd, run.cost_complete),
        cheapest,
        fmt.compact(run.tokens),
        commits,
        run.label or "",
        mark,
    ]
    return RunRow(run.session or f"run@{run.at}", cells, run.status)


def job_heading(row: JobRow) -> str:
    """The runs screen's first line: the job, its week over week, where it changed."""
    change = row.change
    text = (
        f"{safe(row.job)}  ·  {row.runs} runs, {row.failed} failed  ·  "
        f"median {fmt.usd(row.median_cost)}/run"
    )
    if change is not None:
        text += (
            f"  ·  week over week {pct(change.pct)} "
            f"({fmt.usd(change.previous_median)} → {fmt.usd(change.last_median)})"
        )
    return text


def regressed_count(rows: Sequence[JobRow]) -> int:
    return sum(r.regressed for r in rows)
