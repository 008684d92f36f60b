"""`tokentop report` and `tokentop summary SESSION`: recorded history, grouped and printed.

Both first run the engine over the transcript roots (resuming from the engine's state cache,
so only what was appended is read) and record a summary of every session that changed,
so a report lists a session written since the last one, on any transcript tree; `--no-scan`
shows the store as it is. Sessions still going on are recorded as "open" and updated by the
next scan. Survival of recorded commits is re-checked with git on every run.
"""

from __future__ import annotations

import argparse
import csv
import io
import re
import sys
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path
from typing import TextIO

import msgspec

from tokentop.clock import Clock, FakeClock, SystemClock
from tokentop.commands.common import CliError, make_engine
from tokentop.commands.progress import progress_line
from tokentop.config import Config, ConfigError, load_config
from tokentop.engine.engine import Engine
from tokentop.history.git_output import check_survival
from tokentop.history.store import Store, StoreError
from tokentop.history.summary import SessionSummary, SummaryRecorder, end_reason, fill_consumers
from tokentop.model import LedgerSnapshot
from tokentop.policy.watchdog import Watchdog
from tokentop.quantities import plural
from tokentop.render.figures import compact, duration, usd, when
from tokentop.render.markdown import summary_markdown
from tokentop.render.text import csv_text, json_for_terminal, md_inline, safe

BY = ("session", "day", "project", "agent", "model")
FORMATS = ("table", "json", "csv", "md")
MD_SESSIONS = 20
"""Sessions given a full section in a Markdown report (the most expensive first)."""
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([mhdw])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class ReportRow(msgspec.Struct):
    """One group of sessions (or one session, or one model) with its spend and output."""

    group: str
    project: str
    sessions: int
    start: float
    end: float
    active_s: float
    tokens: int
    cost_usd: float
    cost_complete: bool
    commits: int | None
    """None when the grouping cannot attribute commits (by model)."""
    surviving: int | None
    usd_per_commit: float | None
    usd_per_surviving_commit: float | None
    labels: dict[str, int]


# -- arguments -------------------------------------------------------------------------------


def parse_since(text: str, now: float | None = None) -> float:
    """YYYY-MM-DD (local midnight), an ISO date-time, "today", "yesterday", or 90m/12h/7d/2w."""
    now = time.time() if now is None else now
    text = text.strip().lower()
    midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
    if text in ("today", "yesterday"):
        return midnight.timestamp() - (86400 if text == "yesterday" else 0)
    relative = _RELATIVE.match(text)
    if relative:
        return now - float(relative[1]) * _UNIT_S[relative[2]]
    try:
        parsed = datetime.fromisoformat(text.upper() if "t" in text else text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a date: {text!r} (use YYYY-MM-DD, an ISO time, today, or 7d / 12h)"
        ) from None
    return parsed.timestamp()


def _store_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--db", type=Path, metavar="PATH", help="store file (default: user data dir)")
    p.add_argument(
        "--scan",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="read the transcripts and record changed sessions first (default; "
        "--no-scan shows the store as it is)",
    )
    p.add_argument("--no-git", action="store_true", help="do not look at git repositories")


def report_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--since", type=parse_since, metavar="DATE", help="YYYY-MM-DD, ISO, 7d, 12h")
    p.add_argument("--by", choices=BY, default="session", help="grouping (default: session)")
    p.add_argument("--format", choices=FORMATS, default="table", help="output (default: table)")
    _store_args(p)


def summary_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("session", metavar="SESSION", help="session id, agent:id, or an id prefix")
    _store_args(p)


# -- commands --------------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    config = _config(args)
    clock = SystemClock()
    since: float | None = args.since
    with _open_store(args) as store:
        engine = scan_into(store, args, config, clock, since) if args.scan is not False else None
        summaries, bad = store.summaries(since)
        summaries = refresh_survival(store, summaries, config, clock.now())
        if args.format == "md" and args.by == "session":
            ranked = sorted(summaries, key=lambda s: -s.cost_usd)[:MD_SESSIONS]
            files_of = (engine or _cached_engine(args)).session_files
            filled = fill_consumers(store, ranked, config.history.top_consumers, files_of)
            summaries = [filled.get(s.key, s) for s in summaries]
    rows = group_rows(summaries, args.by)
    out.write(render(args.format, rows, summaries, args.by, since))
    if bad:
        print(f"tokentop: {bad} stored summary(ies) could not be read", file=sys.stderr)
    return 0


def cmd_summary(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    config = _config(args)
    clock = SystemClock()
    with _open_store(args) as store:
        engine = scan_into(store, args, config, clock, None) if args.scan is not False else None
        found = _find(store, args.session)
        if found is None:
            raise CliError(f"no recorded session matches {args.session!r}")
        [found] = refresh_survival(store, [found], config, clock.now())
        files_of = (engine or _cached_engine(args)).session_files
        filled = fill_consumers(store, [found], config.history.top_consumers, files_of)
        found = filled.get(found.key, found)
    out.write(summary_markdown(found, heading="#"))
    return 0


def _find(store: Store, session: str) -> SessionSummary | None:
    try:
        return store.summary(session)
    except StoreError as exc:
        raise CliError(str(exc)) from None


def _config(args: argparse.Namespace) -> Config:
    try:
        return load_config(getattr(args, "config", None))
    except ConfigError as exc:
        raise CliError(str(exc)) from None


def _open_store(args: argparse.Namespace) -> Store:
    """The store; the default one first takes in the action log the process controller keeps."""
    from tokentop.processes.control import default_action_log

    try:
        store = Store(args.db)
    except StoreError as exc:
        raise CliError(str(exc)) from None
    if args.db is None:
        store.import_action_log(default_action_log())
    return store


def scan_into(
    store: Store, args: argparse.Namespace, config: Config, clock: Clock, since: float | None
) -> Engine:
    """Read the transcripts and record changed sessions. The engine resumes from its own
    state cache (the one every front-end keeps, unless --no-cache), so only new bytes are read.

    Top consumers are left out here: they mean reading every transcript a second time (a
    first report over a long history records thousands of sessions). They are filled in
    when a summary is shown in full (`fill_consumers`)."""
    engine = make_engine(args)
    engine.load_cache()
    with progress_line(engine, sys.stderr):
        engine.scan()
    engine.save_cache()
    recorder = SummaryRecorder(
        store, config, clock, minutes_for=engine.minutes, use_git=not args.no_git,
        consumers=False,
    )  # fmt: skip
    now = clock.now()
    judged_at = FakeClock(now)
    watchdog = Watchdog(config, judged_at)
    for session in engine.snapshot().sessions:
        if (since is not None and session.last_ts < since) or not recorder.changed(session):
            continue
        # The Watchdog judges each session as of its last activity, so a summary lists a loop
        # or a drift even when no app or guard was watching (a repeat is ignored by the store).
        judged_at.t = session.last_ts or now
        alone = LedgerSnapshot(judged_at.t, (session,), (), 0, 0)
        for finding in watchdog.judge(alone).decisions:
            store.record_event(finding)
        recorder.record(session, end_reason(session, now, config.history) or "open")
    return engine


def _cached_engine(args: argparse.Namespace) -> Engine:
    """An engine holding only what its cache knows (`--no-scan`): which files each session
    was read from, for `fill_consumers`."""
    engine = make_engine(args)
    engine.load_cache()
    return engine


def refresh_survival(
    store: Store, summaries: list[SessionSummary], config: Config, now: float
) -> list[SessionSummary]:
    """Re-check whether recorded commits are still on their branch; store what changed."""
    fresh: list[SessionSummary] = []
    for s in summaries:
        git = s.git
        if git is not None and git.commits:  # git is asked each time: a reset shows at once
            checked = check_survival(git, s.cost_usd, config.history, now)
            if checked is not git:
                s = msgspec.structs.replace(s, git=checked)
                store.record_summary(s)
        fresh.append(s)
    return fresh


# -- grouping --------------------------------------------------------------------------------


def _group_key(by: str) -> Callable[[SessionSummary], str]:
    keys: dict[str, Callable[[SessionSummary], str]] = {
        "session": lambda s: str(s.key),
        "day": lambda s: when(s.start, "%Y-%m-%d"),
        "project": lambda s: s.project or "(none)",
        "agent": lambda s: s.agent,
    }
    return keys[by]


def group_rows(summaries: Iterable[SessionSummary], by: str) -> list[ReportRow]:
    """Rows in first-activity order (by model: most expensive first)."""
    if by == "model":
        return _model_rows(summaries)
    key = _group_key(by)
    groups: dict[str, list[SessionSummary]] = {}
    for s in sorted(summaries, key=lambda s: s.start):
        groups.setdefault(key(s), []).append(s)
    rows = [_row(name, items) for name, items in groups.items()]
    if by == "session":
        for row, items in zip(rows, groups.values(), strict=True):
            row.project = items[0].project
    return rows


def _row(name: str, items: list[SessionSummary]) -> ReportRow:
    cost = sum(s.cost_usd for s in items)
    gits = [s.git for s in items if s.git is not None]
    commits = sum(len(g.commits) for g in gits)
    checked = [g for g in gits if g.commits and g.surviving is not None]
    surviving = sum(g.surviving or 0 for g in checked) if checked else None
    labels: dict[str, int] = {}
    for s in items:
        labels[s.label] = labels.get(s.label, 0) + 1
    return ReportRow(
        group=name,
        project="",
        sessions=len(items),
        start=min(s.start for s in items),
        end=max(s.end for s in items),
        active_s=sum(s.active_s for s in items),
        tokens=sum(s.tokens.total for s in items),
        cost_usd=cost,
        cost_complete=not any(s.unpriced_models for s in items),
        commits=commits,
        surviving=surviving,
        usd_per_commit=cost / commits if commits else None,
        usd_per_surviving_commit=cost / surviving if surviving else None,
        labels=dict(sorted(labels.items())),
    )


def _model_rows(summaries: Iterable[SessionSummary]) -> list[ReportRow]:
    rows: dict[str, ReportRow] = {}
    for s in summaries:
        for m in s.models:
            row = rows.get(m.model)
            if row is None:
                row = rows[m.model] = ReportRow(
                    m.model, "", 0, s.start, s.end, 0.0, 0, 0.0, True, None, None, None, None, {}
                )
            row.sessions += 1
            row.start, row.end = min(row.start, s.start), max(row.end, s.end)
            row.active_s += s.active_s * m.timeline_share
            row.tokens += m.tokens.total
            row.cost_usd += m.cost_usd or 0.0
            row.cost_complete = row.cost_complete and m.cost_usd is not None
    return sorted(rows.values(), key=lambda r: -r.cost_usd)


# -- rendering -------------------------------------------------------------------------------

COLUMNS = (
    "sessions", "active", "tokens", "cost", "commits", "surviving", "$/commit", "$/surviving",
    "labels",
)  # fmt: skip


def _cells(row: ReportRow) -> list[str]:
    return [
        str(row.sessions),
        duration(row.active_s),
        compact(row.tokens),
        usd(row.cost_usd, row.cost_complete),
        "-" if row.commits is None else str(row.commits),
        "-" if row.surviving is None else str(row.surviving),
        usd(row.usd_per_commit),
        usd(row.usd_per_surviving_commit),
        " ".join(f"{n} {label}" for label, n in row.labels.items()),
    ]


def _header(by: str) -> list[str]:
    return [by, *(["project"] if by == "session" else []), *COLUMNS]


def _line(row: ReportRow, by: str, short: bool) -> list[str]:
    group = row.group
    if by == "session" and short:
        agent, _, sid = group.partition(":")
        group = f"{agent}:{sid[:8]}"
    return [group, *([row.project] if by == "session" else []), *_cells(row)]


def render(
    fmt: str, rows: list[ReportRow], summaries: list[SessionSummary], by: str, since: float | None
) -> str:
    total = _row("total", summaries) if summaries else None
    if fmt == "json":
        doc = {"by": by, "since": since, "rows": rows, "total": total}
        blob = msgspec.json.format(msgspec.json.encode(doc), indent=1)
        return json_for_terminal(blob).decode() + "\n"
    if fmt == "csv":
        return _csv(rows, by)
    if fmt == "md":
        return markdown_report(rows, summaries, by, since, total)
    return _text_table(rows, by, total)


def _text_table(rows: list[ReportRow], by: str, total: ReportRow | None) -> str:
    if not rows or total is None:
        return "no recorded sessions\n"
    table = [[h.upper() for h in _header(by)]]
    table += [[safe(c) for c in _line(r, by, short=True)] for r in rows]
    table.append(["total", *([""] if by == "session" else []), *_cells(total)])
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in table]
    return "\n".join(lines) + "\n"


def _csv(rows: list[ReportRow], by: str) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([by, "project", "sessions", "start", "end", "active_s", "tokens", "cost_usd",
                "cost_complete", "commits", "surviving", "usd_per_commit",
                "usd_per_surviving_commit", "labels"])  # fmt: skip
    for r in rows:
        w.writerow([
            csv_text(r.group), csv_text(r.project), r.sessions, when(r.start, "%Y-%m-%dT%H:%M:%S"),
            when(r.end, "%Y-%m-%dT%H:%M:%S"), round(r.active_s), r.tokens, round(r.cost_usd, 6),
            r.cost_complete, _blank(r.commits), _blank(r.surviving), _blank(r.usd_per_commit),
            _blank(r.usd_per_surviving_commit), ";".join(f"{k}:{v}" for k, v in r.labels.items()),
        ])  # fmt: skip
    return buf.getvalue()


def _blank(value: float | None) -> str:
    return "" if value is None else str(round(value, 6) if isinstance(value, float) else value)


def markdown_report(
    rows: list[ReportRow],
    summaries: list[SessionSummary],
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
    parts.append("\n".join(lines))
    if by == "session":
        ranked = sorted(summaries, key=lambda s: -s.cost_usd)
        parts += [summary_markdown(s, "##").rstrip() for s in ranked[:MD_SESSIONS]]
        if len(ranked) > MD_SESSIONS:
            parts.append(f"… and {len(ranked) - MD_SESSIONS} more (`tokentop summary SESSION`).")
    return "\n\n".join(parts) + "\n"


def _overview(t: ReportRow) -> str:
    labels = ", ".join(f"{n} {label}" for label, n in t.labels.items())
    counted = "commits unknown" if t.commits is None else plural(t.commits, "commit")
    commits = counted + (
        f" ({usd(t.usd_per_commit)}/commit)" if t.usd_per_commit is not None else ""
    )
    return (
        f"**{plural(t.sessions, 'session')}**, {usd(t.cost_usd, t.cost_complete)}, "
        f"{compact(t.tokens)} tokens, active {duration(t.active_s)}; {commits}; {labels}."
    )
