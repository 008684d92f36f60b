"""Recurring jobs: sessions that are runs of one task, judged run by run and week over week.

A job is named where the agent names it, else found by its prompt:

1. OpenClaw cron (sources/openclaw_cron.py): every finished run in a job's run log is a run
   of that job, by the job's own name, with the status OpenClaw recorded; its session (the
   run log's `sessionId`) brings the spend. A run whose transcript is gone still counts.
2. `tokentop run --job NAME`: the store names the session's job and how the run ended.
3. Elsewhere, sessions sharing a cwd and the fingerprint of their first prompt
   (history/fingerprint.py), from `[jobs] min_runs` of them on.

Week over week: the median cost per run of the last 7 days against the 7 days before. A job
whose median rose by more than `[jobs] regress_pct` is flagged, with the first run where it
changed: over both weeks' runs in time order, the split into a before and an after that
leaves the smallest total distance of each run's cost from its side's median (a change point
that one expensive run cannot fake), the after side being the dearer one.
"""

from __future__ import annotations

import heapq
import statistics
from collections.abc import Iterable, Mapping, Sequence

import msgspec

from tokentop.config import Config
from tokentop.history.routing import Route, merge_routes, route_models
from tokentop.history.store import JobTag
from tokentop.history.summary import SessionSummary
from tokentop.model import path_tail
from tokentop.pricing import PriceTable
from tokentop.sources.openclaw_cron import CronIndex, CronRun

WEEK_S = 7 * 86400
FAILED = frozenset({"error", "stopped"})
MIN_WINDOW_RUNS = 2
"""Runs each week needs before its median is compared: one run is an anecdote."""
NAME_CHARS = 48


class JobRun(msgspec.Struct, frozen=True):
    """One run of a job: its session's spend and output, and how it ended."""

    job_key: str
    """"cron:<jobId>", "run:<name>" or "prompt:<fingerprint>"."""
    job: str
    source: str
    """"openclaw-cron", "run" or "prompt"."""
    at: float
    session: str = ""
    """"agent:session_id"; "" for a cron run whose transcript was not found."""
    status: str = ""
    cost_usd: float = 0.0
    cost_complete: bool = True
    tokens: int = 0
    model_tokens: tuple[tuple[str, int], ...] = ()
    commits: int | None = None
    """None when git could not say (no repository looked at, no transcript)."""
    label: str = ""
    project: str = ""
    route: Route | None = None

    @property
    def failed(self) -> bool:
        return self.status in FAILED


class Change(msgspec.Struct, frozen=True):
    """A job's week over week: both medians, and where it changed if it regressed."""

    previous_median: float
    last_median: float
    pct: float
    regressed: bool
    first_changed: JobRun | None = None


class JobRow(msgspec.Struct, frozen=True):
    """One job over its runs."""

    job_key: str
    job: str
    source: str
    project: str
    runs: int
    failed: int
    cost_usd: float
    cost_complete: bool
    median_cost: float
    last7_median: float | None
    previous7_median: float | None
    change: Change | None
    commits: int | None
    commits_per_run: float | None
    usd_per_commit: float | None
    theater_share: float | None
    median_tokens_by_model: tuple[tuple[str, int, int], ...]
    """(model, median tokens per run that used it, how many runs used it), biggest first."""
    route: Route | None
    first: float
    last: float

    @property
    def regressed(self) -> bool:
        return self.change is not None and self.change.regressed


# -- which session is a run of which job -----------------------------------------------------


def job_runs(
    summaries: Sequence[SessionSummary],
    tags: Mapping[str, JobTag],
    cron: CronIndex,
    config: Config,
    table: PriceTable,
) -> list[JobRun]:
    """Every run of every job, oldest first (a session is a run of at most one job)."""
    by_session = {str(s.key): s for s in summaries}
    runs: list[JobRun] = []
    claimed: set[str] = set()
    for entry in cron.runs:
        if entry.status == "skipped":
            continue  # the job did not run
        s = by_session.get(f"openclaw:{entry.session_id}") if entry.session_id else None
        if s is not None:
            claimed.add(str(s.key))
        key, name = f"cron:{entry.job_id}", cron.name_of(entry.job_id)
        runs.append(_cron_run(key, name, entry, s, table))
    for s in summaries:
        tag = tags.get(str(s.key))
        if tag is not None and str(s.key) not in claimed:
            claimed.add(str(s.key))
            runs.append(session_run(f"run:{tag.job}", tag.job, "run", s, table, tag.status))
    runs += _prompt_runs([s for s in summaries if str(s.key) not in claimed], config, table)
    return sorted(runs, key=lambda r: (r.at, r.session))


def _cron_run(
    key: str, name: str, entry: CronRun, s: SessionSummary | None, table: PriceTable
) -> JobRun:
    if s is not None:
        return session_run(key, name, "openclaw-cron", s, table, entry.status)
    at = entry.run_at or max(entry.ts - entry.duration_s, 0.0)
    return JobRun(key, name, "openclaw-cron", at, status=entry.status)


def _prompt_runs(
    summaries: Iterable[SessionSummary], config: Config, table: PriceTable
) -> list[JobRun]:
    groups: dict[str, list[SessionSummary]] = {}
    for s in summaries:
        if s.prompt_key:
            groups.setdefault(s.prompt_key, []).append(s)
    runs: list[JobRun] = []
    for key, members in groups.items():
        if len(members) < config.jobs.min_runs:
            continue
        first = min(members, key=lambda s: s.start)
        name = prompt_job_name(first.project or path_tail(first.cwd) or "?", first.prompt)
        runs += [session_run(f"prompt:{key}", name, "prompt", s, table) for s in members]
    return runs


def prompt_job_name(project: str, prompt: str) -> str:
    """`site: pick one task from roadmap.md for <date>…`: the project and the normalised
    prompt, cut at a word within NAME_CHARS."""
    text = f"{project}: {prompt}"
    if len(text) <= NAME_CHARS:
        return text
    return text[: NAME_CHARS - 1].rsplit(" ", 1)[0].rstrip(" ,.;:") + "…"


def session_run(
    key: str, name: str, source: str, s: SessionSummary, table: PriceTable, status: str = ""
) -> JobRun:
    git = s.git
    commits = len(git.commits) if git is not None and git.status == "ok" else None
    return JobRun(
        job_key=key,
        job=name,
        source=source,
        at=s.start,
        session=str(s.key),
        status=status,
        cost_usd=s.cost_usd,
        cost_complete=not s.unpriced_models,
        tokens=s.tokens.total,
        model_tokens=tuple((m.model, m.tokens.total) for m in s.models),
        commits=commits,
        label=s.label,
        project=s.project,
        route=route_models(s.models, table),
    )


def jobs_of(
    summaries: Sequence[SessionSummary],
    tags: Mapping[str, JobTag],
    cron: CronIndex,
    config: Config,
    table: PriceTable,
    now: float,
) -> tuple[list[JobRow], list[JobRun]]:
    """Every job's row (the most recently run first) and every run, for a report or a view."""
    runs = job_runs(summaries, tags, cron, config, table)
    return job_rows(runs, now, config.jobs.regress_pct), runs


# -- a job over its runs ---------------------------------------------------------------------


def job_rows(runs: Iterable[JobRun], now: float, regress_pct: float) -> list[JobRow]:
    """One row per job, the most recently run first."""
    groups: dict[str, list[JobRun]] = {}
    for run in sorted(runs, key=lambda r: r.at):
        groups.setdefault(run.job_key, []).append(run)
    rows = [job_row(items, now, regress_pct) for items in groups.values()]
    return sorted(rows, key=lambda r: (-r.last, r.job))


def job_row(runs: Sequence[JobRun], now: float, regress_pct: float) -> JobRow:
    first = runs[0]
    costs = [r.cost_usd for r in runs]
    known = [r.commits for r in runs if r.commits is not None]
    commits = sum(known) if known else None
    labelled = [r.label for r in runs if r.label not in ("", "unknown")]
    routes = [r.route for r in runs if r.route is not None]
    cost = sum(costs)
    _, before, after = _weeks(runs, now)
    last7, previous7 = _median(after), _median(before)
    return JobRow(
        job_key=first.job_key,
        job=first.job,
        source=first.source,
        project=next((r.project for r in runs if r.project), ""),
        runs=len(runs),
        failed=sum(r.failed for r in runs),
        cost_usd=cost,
        cost_complete=all(r.cost_complete for r in runs),
        median_cost=statistics.median(costs),
        last7_median=last7,
        previous7_median=previous7,
        change=week_over_week(runs, now, regress_pct),
        commits=commits,
        commits_per_run=commits / len(known) if commits is not None else None,
        usd_per_commit=cost / commits if commits else None,
        theater_share=labelled.count("theater") / len(labelled) if labelled else None,
        median_tokens_by_model=tokens_by_model(runs),
        route=merge_routes(routes) if routes else None,
        first=first.at,
        last=runs[-1].at,
    )


def _weeks(runs: Sequence[JobRun], now: float) -> tuple[list[JobRun], list[float], list[float]]:
    """The runs of the last two weeks, and the costs of the week before the last and of the
    last (one definition for the row's medians and its week-over-week change)."""
    span = [r for r in runs if now - 2 * WEEK_S <= r.at <= now]
    before = [r.cost_usd for r in span if r.at < now - WEEK_S]
    after = [r.cost_usd for r in span if r.at >= now - WEEK_S]
    return span, before, after


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def tokens_by_model(runs: Iterable[JobRun]) -> tuple[tuple[str, int, int], ...]:
    per_model: dict[str, list[int]] = {}
    for run in runs:
        for model, tokens in run.model_tokens:
            per_model.setdefault(model, []).append(tokens)
    rows = [(m, round(statistics.median(v)), len(v)) for m, v in per_model.items()]
    return tuple(sorted(rows, key=lambda r: (-r[1], r[0])))


def week_over_week(runs: Sequence[JobRun], now: float, regress_pct: float) -> Change | None:
    """The last 7 days' median cost per run against the 7 days before; None unless each
    week has MIN_WINDOW_RUNS runs."""
    span, before, after = _weeks(runs, now)
    if len(before) < MIN_WINDOW_RUNS or len(after) < MIN_WINDOW_RUNS:
        return None
    previous, last = statistics.median(before), statistics.median(after)
    pct = (last - previous) / previous * 100 if previous > 0 else (100.0 if last > 0 else 0.0)
    regressed = pct > regress_pct
    changed = first_changed(span) if regressed else None
    return Change(previous, last, pct, regressed, changed)


def first_changed(runs: Sequence[JobRun]) -> JobRun | None:
    """The run where the cost level changed: the split of `runs` (time order) into before
    and after with the least total absolute distance from each side's median, the after side
    dearer than the before side. O(n log n): a job run every minute has 20,000 in two weeks."""
    costs = [r.cost_usd for r in runs]
    heads = running_l1(costs)
    tails = running_l1(costs[::-1])
    best: tuple[float, int] | None = None
    for k in range(1, len(costs)):
        (low, head), (high, tail) = heads[k - 1], tails[len(costs) - k - 1]
        if high > low and (best is None or head + tail < best[0]):
            best = (head + tail, k)
    return runs[best[1]] if best is not None else None


def running_l1(values: Sequence[float]) -> list[tuple[float, float]]:
    """For each prefix of `values`: (its median, the sum of |value - median|), kept with two
    heaps (the lower half as a max-heap, the upper as a min-heap) and their sums."""
    low: list[float] = []
    high: list[float] = []
    sums = [0.0, 0.0]
    out: list[tuple[float, float]] = []
    for v in values:
        if not low or v <= -low[0]:
            heapq.heappush(low, -v)
            sums[0] += v
        else:
            heapq.heappush(high, v)
            sums[1] += v
        if len(low) > len(high) + 1:
            moved = -heapq.heappop(low)
            heapq.heappush(high, moved)
            sums[0], sums[1] = sums[0] - moved, sums[1] + moved
        elif len(high) > len(low):
            moved = heapq.heappop(high)
            heapq.heappush(low, -moved)
            sums[0], sums[1] = sums[0] + moved, sums[1] - moved
        m = -low[0]
        median = m if len(low) > len(high) else (m + high[0]) / 2
        out.append((median, (m * len(low) - sums[0]) + (sums[1] - m * len(high))))
    return out
