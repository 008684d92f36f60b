"""`tokentop report --by job`: one row per recurring job, then the jobs that regressed.

`report --by job` (and the history screen's jobs view) read the same JobRows; a job's runs
come with it in JSON. Job names are the user's (cron, `run --job`) or the agent's prompt:
untrusted text, escaped for each format.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from tokentop.history.jobs import JobRow, JobRun
from tokentop.render.figures import compact, usd, when
from tokentop.render.report import CHEAPEST_NOTE, aligned, encode_json
from tokentop.render.text import csv_text, md_inline, safe

HEADER = (
    "job", "source", "runs", "failed", "cost", "cheapest", "$/run", "7d", "prev 7d", "change",
    "commits/run", "$/commit", "theater", "tokens/run by model",
)  # fmt: skip
NAME_WIDTH = 48
"""A job's name in a table cell: a prompt's name is already cut at a word this short."""
SOURCES = {"openclaw-cron": "cron", "run": "run", "prompt": "prompt"}


def pct(value: float | None) -> str:
    if value is None:
        return "-"
    return "±0%" if round(value) == 0 else f"{value:+.0f}%"


def share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def per_run(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def models_text(row: JobRow, limit: int = 3) -> str:
    parts = [f"{m} {compact(n)}" for m, n, _ in row.median_tokens_by_model[:limit]]
    more = len(row.median_tokens_by_model) - limit
    return ", ".join(parts) + (f", +{more}" if more > 0 else "")


def cheapest_text(row: JobRow) -> str:
    route = row.route
    if route is None or not route.cheapest_models:
        return "-"
    return usd(route.cheapest_usd)


def job_cells(row: JobRow) -> list[str]:
    change = row.change
    return [
        row.job if len(row.job) <= NAME_WIDTH else row.job[: NAME_WIDTH - 1] + "…",
        SOURCES.get(row.source, row.source),
        str(row.runs),
        str(row.failed),
        usd(row.cost_usd, row.cost_complete),
        cheapest_text(row),
        usd(row.median_cost),
        usd(row.last7_median),
        usd(row.previous7_median),
        pct(change.pct if change is not None else None) + (" ⚑" if row.regressed else ""),
        per_run(row.commits_per_run),
        usd(row.usd_per_commit),
        share(row.theater_share),
        models_text(row),
    ]


def regression_lines(rows: Sequence[JobRow]) -> list[str]:
    """One sentence per regressed job: by how much, and the first run where it changed."""
    lines = []
    for row in rows:
        change = row.change
        if change is None or not change.regressed:
            continue
        first = change.first_changed
        where = ""
        if first is not None:
            where = f"; first changed run: {when(first.at)}"
            where += f" ({first.session})" if first.session else ""
        lines.append(
            f"⚑ {row.job}: median cost per run {change.pct:+.0f}% week over week "
            f"({usd(change.previous_median)} → {usd(change.last_median)}){where}"
        )
    return lines


def text_jobs(rows: Sequence[JobRow], regress_pct: float) -> str:
    if not rows:
        return "no recurring jobs in the recorded sessions\n"
    table = [[h.upper() for h in HEADER]] + [[safe(c) for c in job_cells(r)] for r in rows]
    flagged = [safe(line) for line in regression_lines(rows)]
    note = f"⚑ median $/run of the last 7 days over {regress_pct:g}% above the 7 days before\n"
    legend = note if flagged else ""  # said only when a job carries the flag
    return aligned(table) + "".join(f"{line}\n" for line in flagged) + legend + CHEAPEST_NOTE + "\n"


def run_dict(run: JobRun) -> dict[str, Any]:
    route = run.route
    return {
        "at": run.at,
        "session": run.session or None,
        "status": run.status or None,
        "cost_usd": round(run.cost_usd, 6),
        "cost_complete": run.cost_complete,
        "cheapest_usd": round(route.cheapest_usd, 6) if route is not None else None,
        "tokens": run.tokens,
        "commits": run.commits,
        "label": run.label or None,
    }


def json_jobs(
    rows: Sequence[JobRow], runs: Sequence[JobRun], since: float | None, regress_pct: float
) -> str:
    by_job: dict[str, list[JobRun]] = {}
    for run in runs:
        by_job.setdefault(run.job_key, []).append(run)
    jobs = [{"job": r, "runs": [run_dict(x) for x in by_job.get(r.job_key, [])]} for r in rows]
    doc = {"by": "job", "since": since, "regress_pct": regress_pct, "jobs": jobs,
           "cheapest": CHEAPEST_NOTE}  # fmt: skip
    return encode_json(doc)


def csv_jobs(rows: Sequence[JobRow]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["job", "source", "project", "runs", "failed", "cost_usd", "median_cost_usd",
                "last7_median_usd", "previous7_median_usd", "change_pct", "regressed",
                "first_changed_session", "commits", "commits_per_run", "usd_per_commit",
                "theater_share", "cheapest_usd"])  # fmt: skip
    for r in rows:
        change = r.change
        first = change.first_changed if change is not None else None
        w.writerow([
            csv_text(r.job), r.source, csv_text(r.project), r.runs, r.failed,
            round(r.cost_usd, 6), round(r.median_cost, 6), _num(r.last7_median),
            _num(r.previous7_median), _num(change.pct if change else None), r.regressed,
            csv_text(first.session) if first is not None else "", _num(r.commits),
            _num(r.commits_per_run), _num(r.usd_per_commit), _num(r.theater_share),
            _num(r.route.cheapest_usd if r.route is not None else None),
        ])  # fmt: skip
    return buf.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else str(round(value, 6))


def md_jobs(rows: Sequence[JobRow], since: float | None, regress_pct: float) -> str:
    scope = f"since {when(since)}" if since is not None else "all recorded sessions"
    parts = [f"# tokentop report — {scope}, by job"]
    if not rows:
        return parts[0] + "\n\nNo recurring jobs.\n"
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(md_inline(c) for c in job_cells(r)) + " |" for r in rows]
    parts.append("\n".join(lines))
    flagged = regression_lines(rows)
    parts += [md_inline(line) for line in flagged]
    legend = (
        f"⚑: median $/run of the last 7 days over {regress_pct:g}% above the 7 days before. "
        if flagged
        else ""
    )
    parts.append(f"_{legend}{CHEAPEST_NOTE}._")
    return "\n\n".join(parts) + "\n"


def render_jobs(
    fmt: str,
    rows: Sequence[JobRow],
    runs: Sequence[JobRun],
    since: float | None,
    regress_pct: float,
) -> str:
    if fmt == "json":
        return json_jobs(rows, runs, since, regress_pct)
    if fmt == "csv":
        return csv_jobs(rows)
    if fmt == "md":
        return md_jobs(rows, since, regress_pct)
    return text_jobs(rows, regress_pct)
