"""`tokentop report` and `tokentop summary SESSION`: recorded history, grouped and printed.

Both first run the engine over the transcript roots (resuming from the engine's state cache,
so only what was appended is read) and record a summary of every session that changed,
so a report lists a session written since the last one, on any transcript tree; `--no-scan`
shows the store as it is. Sessions still going on are recorded as "open" and updated by the
next scan. Survival of recorded commits is re-checked with git on every run.

`--by job` groups the recorded sessions into recurring jobs (history/jobs.py, with OpenClaw's
cron run logs read here); `--by block` reads Claude Code's transcripts again for the 5-hour
blocks (history/block_feed.py): blocks need each response's time, which the store does not
keep.
"""

from __future__ import annotations

import argparse
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TextIO

import msgspec

from tokentop.clock import Clock, FakeClock, SystemClock
from tokentop.commands.common import (
    CliError,
    empty_dir_warnings,
    make_engine,
    make_prices,
    make_sources,
)
from tokentop.commands.progress import progress_line
from tokentop.config import Config, ConfigError, load_config
from tokentop.engine.engine import Engine
from tokentop.history.git_output import check_survival
from tokentop.history.report_rows import BY as GROUPS
from tokentop.history.report_rows import group_rows, judge, row_of
from tokentop.history.store import JobTag, Store, StoreError
from tokentop.history.summary import SessionSummary, SummaryRecorder, end_reason, fill_consumers
from tokentop.model import LedgerSnapshot
from tokentop.policy.watchdog import Watchdog
from tokentop.render.markdown import summary_markdown
from tokentop.render.report import MD_SESSIONS, render_rows

BATCH_S = 0.05
"""How long one store transaction records summaries: a commit each took a third of a first
report's recording, and other tokentop processes wait for the store's write lock meanwhile
(a session's git checks, ~50 ms, may run past it once)."""

BY = (*GROUPS, "job", "block")
FORMATS = ("table", "json", "csv", "md")
_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([mhdw])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


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
    p.add_argument(
        "--by",
        choices=BY,
        default="session",
        help="grouping (default: session); job: recurring jobs, week over week; block: "
        "Claude's 5-hour blocks, from the transcripts",
    )
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
    if args.by == "block":
        return report_blocks(args, clock.now(), out)
    with _open_store(args) as store:
        engine = scan_into(store, args, config, clock, since) if args.scan is not False else None
        summaries, bad = store.summaries(since)
        summaries = refresh_survival(store, summaries, config, clock.now())
        if args.format == "md" and args.by == "session":
            ranked = sorted(summaries, key=lambda s: -s.cost_usd)[:MD_SESSIONS]
            files_of = (engine or _cached_engine(args)).session_files
            filled = fill_consumers(store, ranked, config.history.top_consumers, files_of)
            summaries = [filled.get(s.key, s) for s in summaries]
        tags = store.session_jobs() if args.by == "job" else {}
    if args.by == "job":
        out.write(report_jobs(args, config, summaries, tags, clock.now()))
    else:
        judged = judge(summaries, make_prices(config), config.routing)
        total = row_of("total", judged) if judged else None
        rows = group_rows(judged, args.by)
        out.write(render_rows(args.format, rows, judged, args.by, since, total))
    if bad:
        print(f"tokentop: {bad} stored summary(ies) could not be read", file=sys.stderr)
    return 0


def report_jobs(
    args: argparse.Namespace,
    config: Config,
    summaries: list[SessionSummary],
    tags: dict[str, JobTag],
    now: float,
) -> str:
    """Jobs over the recorded sessions and OpenClaw's cron run logs (those of the OpenClaw
    state dirs this run reads: `--openclaw-dir`, `[roots]`, or the defaults)."""
    from tokentop.history.jobs import job_rows, job_runs
    from tokentop.render.report_jobs import render_jobs
    from tokentop.sources.openclaw_cron import cron_dirs, read_cron

    roots = [r for s in make_sources(args, config) if s.name == "openclaw" for r in s.roots()]
    cron = read_cron(cron_dirs(roots))
    runs = job_runs(summaries, tags, cron, config, make_prices(config))
    if args.since is not None:
        runs = [r for r in runs if r.at >= args.since]
    if cron.bad_lines:
        print(f"tokentop: {cron.bad_lines} unusable OpenClaw cron line(s)", file=sys.stderr)
    rows = job_rows(runs, now, config.jobs.regress_pct)
    return render_jobs(args.format, rows, runs, args.since, config.jobs.regress_pct)


def report_blocks(args: argparse.Namespace, now: float, out: TextIO) -> int:
    """Claude's 5-hour blocks, from the transcripts (the engine finds the sessions and their
    files, resuming from its cache; the blocks read those files' responses again)."""
    from tokentop.history.block_feed import blocks_since
    from tokentop.render.report_blocks import render_blocks

    if args.scan is False:
        raise CliError("--by block reads the transcripts; --no-scan does not apply to it")
    engine = scanned_engine(args)
    since = args.since if args.since is not None else float("-inf")
    blocks, bad = blocks_since(engine.snapshot(), since, now, engine.cost_fn)
    out.write(render_blocks(args.format, blocks, now, args.since, bad))
    return 0


def scanned_engine(args: argparse.Namespace, *, save: bool = True) -> Engine:
    """The engine over the transcripts, resumed from its cache and brought up to date (with a
    progress line on a terminal when that takes over a second), a `--*-dir` given that held
    no transcript said on stderr; its cache saved unless `save` is False."""
    engine = make_engine(args)
    engine.load_cache()
    with progress_line(engine, sys.stderr):
        engine.scan()
    if save:
        engine.save_cache()
    for line in empty_dir_warnings(args, engine):
        print(line, file=sys.stderr)
    return engine


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
    [judged] = judge([found], make_prices(config), config.routing)
    out.write(summary_markdown(found, "#", judged.route, judged.flags))
    return 0


def _find(store: Store, session: str) -> SessionSummary | None:
    try:
        return store.summary(session)
    except StoreError as exc:
        raise CliError(str(exc)) from None


def _config(args: argparse.Namespace) -> Config:
    """The config, with the budgets set for one session (`b`, `run --budget`) from the store
    this report reads, so a summary records the budget the app showed."""
    from tokentop.history.session_budgets import LiveBudgets

    try:
        config = load_config(getattr(args, "config", None))
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    return msgspec.structs.replace(config, session_budgets=LiveBudgets(getattr(args, "db", None)))


def _open_store(args: argparse.Namespace) -> Store:
    """The store; the default one first takes in the action log the process controller keeps."""
    from tokentop.processes.action_log import default_action_log

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
    from tokentop.engine.forked_save import save_beside

    engine = scanned_engine(args, save=False)
    saving = save_beside(engine)  # in a child, while the summaries are recorded here
    recorder = SummaryRecorder(
        store, config, clock, minutes_for=engine.minutes, use_git=not args.no_git,
        consumers=False,
    )  # fmt: skip
    now = clock.now()
    judged_at = FakeClock(now)
    watchdog = Watchdog(config, judged_at)
    changed = [
        s for s in engine.snapshot().sessions
        if (since is None or s.last_ts >= since) and recorder.changed(s)
    ]  # fmt: skip
    try:
        for session in store.batched(changed, BATCH_S):
            # The Watchdog judges each session as of its last activity, so a summary lists a
            # loop or a drift even when no app or guard was watching (a repeat is ignored by
            # the store).
            judged_at.t = session.last_ts or now
            alone = LedgerSnapshot(judged_at.t, (session,), (), 0, 0)
            for finding in watchdog.judge(alone).decisions:
                store.record_event(finding)
            recorder.record(session, end_reason(session, now, config.history) or "open")
    finally:
        saving.wait()
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
