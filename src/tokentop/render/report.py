"""`tokentop report` as a table, JSON, CSV or Markdown: grouped sessions (history/report_rows),
recurring jobs (history/jobs, render/report_jobs.py) and 5-hour blocks (render/report_blocks.py).

Every text that came from a transcript goes through render/text.py; "cheapest" is the same
tokens on the cheapest model of the same vendor (arithmetic, not a claim that model could
do the work), and every format says so.
"""

from __future__ import annotations

import csv
import io

import msgspec

from tokentop.history.report_rows import Judged, ReportRow
from tokentop.quantities import plural
from tokentop.render.figures import compact, duration, short_session, usd, when
from tokentop.render.markdown import summary_markdown
from tokentop.render.text import csv_text, json_for_terminal, md_inline, safe

MD_SESSIONS = 20
"""Sessions given a full section in a Markdown report (the most expensive first)."""
CHEAPEST_NOTE = (
    "cheapest: the same tokens on the cheapest model of the same vendor in the price table "
    "(arithmetic, not a claim that model could have done the work)"
)
COLUMNS = (
    "sessions", "active", "tokens", "cost", "cheapest", "commits", "surviving", "$/commit",
    "$/surviving", "labels", "flags",
)  # fmt: skip


def encode_json(doc: object) -> str:
    blob = msgspec.json.format(msgspec.json.encode(doc), indent=1)
    return json_for_terminal(blob).decode() + "\n"


def _commits(row: ReportRow) -> str:
    if row.model_commits is not None:  # credited by cost share: a fraction, "2" when whole
        return f"{row.model_commits:.1f}".removesuffix(".0")
    return "-" if row.commits is None else str(row.commits)


def _counts(counts: dict[str, int]) -> str:
    return " ".join(f"{n} {name}" for name, n in counts.items())


def _cells(row: ReportRow) -> list[str]:
    return [
        str(row.sessions),
        duration(row.active_s),
        compact(row.tokens),
        usd(row.cost_usd, row.cost_complete),
        usd(row.cheapest_usd),
        _commits(row),
        "-" if row.surviving is None else str(row.surviving),
        usd(row.usd_per_commit),
        usd(row.usd_per_surviving_commit),
        _counts(row.labels),
        _counts(row.flags),
    ]


def _header(by: str) -> list[str]:
    return [by, *(["project"] if by == "session" else []), *COLUMNS]


def _line(row: ReportRow, by: str, short: bool) -> list[str]:
    group = row.group
    if by == "session" and short:
        group = short_session(group)
    return [group, *([row.project] if by == "session" else []), *_cells(row)]


def render_rows(
    fmt: str,
    rows: list[ReportRow],
    judged: list[Judged],
    by: str,
    since: float | None,
    total: ReportRow | None,
) -> str:
    if fmt == "json":
        return encode_json({"by": by, "since": since, "rows": rows, "total": total})
    if fmt == "csv":
        return _csv(rows, by)
    if fmt == "md":
        return markdown_report(rows, judged, by, since, total)
    return text_table(rows, by, total)


def aligned(table: list[list[str]]) -> str:
    """Columns padded to their widest cell, trailing blanks cut."""
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    return "\n".join(lines) + "\n"


def text_table(rows: list[ReportRow], by: str, total: ReportRow | None) -> str:
    if not rows or total is None:
        return "no recorded sessions\n"
    table = [[h.upper() for h in _header(by)]]
    table += [[safe(c) for c in _line(r, by, short=True)] for r in rows]
    table.append(["total", *([""] if by == "session" else []), *_cells(total)])
    return aligned(table) + CHEAPEST_NOTE + "\n"


def _csv(rows: list[ReportRow], by: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([by, "project", "sessions", "start", "end", "active_s", "tokens", "cost_usd",
                "cost_complete", "cheapest_usd", "commits", "surviving", "usd_per_commit",
                "usd_per_surviving_commit", "labels", "flags"])  # fmt: skip
    for r in rows:
        commits = r.model_commits if r.model_commits is not None else r.commits
        w.writerow([
            csv_text(r.group), csv_text(r.project), r.sessions, when(r.start, "%Y-%m-%dT%H:%M:%S"),
            when(r.end, "%Y-%m-%dT%H:%M:%S"), round(r.active_s), r.tokens, round(r.cost_usd, 6),
            r.cost_complete, _blank(r.cheapest_usd), _blank(commits), _blank(r.surviving),
            _blank(r.usd_per_commit), _blank(r.usd_per_surviving_commit),
            ";".join(f"{k}:{v}" for k, v in r.labels.items()),
            ";".join(f"{k}:{v}" for k, v in r.flags.items()),
        ])  # fmt: skip
    return buf.getvalue()


def _blank(value: float | None) -> str:
    return "" if value is None else str(round(value, 6) if isinstance(value, float) else value)


def markdown_report(
    rows: list[ReportRow],
    judged: list[Judged],
    by: str,
    since: float | None,
    total: ReportRow | None,
) -> str:
    """An overview table, then (by session) a section per session, the most expensive first."""
    scope = f"since {when(since)}" if since is not None else "all recorded sessions"
    parts = [f"# tokentop report — {scope}, by {by}"]
    if total is None:
        return parts[0] + "\n\nNo recorded sessions.\n"
    parts.append(_overview(total))
    header = _header(by)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(md_inline(c) for c in _line(r, by, True)) + " |" for r in rows]
    parts += ["\n".join(lines), f"_{CHEAPEST_NOTE}._"]
    if by == "session":
        ranked = sorted(judged, key=lambda j: -j.summary.cost_usd)
        parts += [
            summary_markdown(j.summary, "##", j.route, j.flags).rstrip()
            for j in ranked[:MD_SESSIONS]
        ]
        if len(ranked) > MD_SESSIONS:
            parts.append(f"… and {len(ranked) - MD_SESSIONS} more (`tokentop summary SESSION`).")
    return "\n\n".join(parts) + "\n"


def _overview(t: ReportRow) -> str:
    labels = ", ".join(f"{n} {label}" for label, n in t.labels.items())
    counted = "commits unknown" if t.commits is None else plural(t.commits, "commit")
    commits = counted + (
        f" ({usd(t.usd_per_commit)}/commit)" if t.usd_per_commit is not None else ""
    )
    cheapest = f" (cheapest: {usd(t.cheapest_usd)})" if t.cheapest_usd is not None else ""
    return (
        f"**{plural(t.sessions, 'session')}**, {usd(t.cost_usd, t.cost_complete)}{cheapest}, "
        f"{compact(t.tokens)} tokens, active {duration(t.active_s)}; {commits}; {labels}."
    )
