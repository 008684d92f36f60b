"""OpenClaw's cron jobs and their run logs: which sessions are runs of which job.

Layout, as OpenClaw documents it (openclaw/openclaw `docs/automation/cron-jobs.md`,
"Storage & history") and writes it (`src/cron/run-log.ts`, `src/cron/store.ts`):

- `<state dir>/cron/jobs.json`: `{"version": 1, "jobs": [...]}`, each job with its `id` (older
  tools write `jobId`), `name`, `schedule` and `payload` (`message` for an isolated
  `agentTurn`, `text` for a main-session `systemEvent`);
- `<state dir>/cron/runs/<jobId>.jsonl`: one line per finished run, `{"ts", "jobId",
  "action": "finished", "status": "ok"|"error"|"skipped", "error", "summary", "sessionId",
  "sessionKey", "runAtMs", "durationMs", ...}` (OpenClaw skips lines that are not
  `action: finished` with a string jobId and a numeric ts, and so does this reader);
- an isolated run is a fresh session (`sessionId`) under the key `...:cron:<jobId>:run:<id>`
  in the agent's `sessions/sessions.json`, its transcript `<sessionId>.jsonl` as any other
  (sources/openclaw.py reads it); its first prompt starts `[cron:<jobId> <job name>]`.

Newer OpenClaw releases keep the job list in an SQLite state database instead of jobs.json;
the run logs and transcripts stay where they were, so runs are still found (named by their
job id when no jobs.json names them). Every byte is untrusted: files are read only when
regular and at most MAX_FILE_BYTES, lines over MAX_RUN_LINE are bad, names are cut.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import msgspec

from tokentop.files import read_bounded
from tokentop.sources.base import DECODE_ERRORS, bounded_ts

MAX_FILE_BYTES = 8 << 20
"""OpenClaw prunes a run log at 2 MB by default; of a bigger one the newest 8 MiB are read."""
MAX_RUN_LINE = 1 << 20
"""A run-log entry is a few hundred bytes (its summary a few KB); longer lines are junk."""
MAX_NAME = 120
MAX_RUN_LOGS = 10_000
STATUSES = frozenset({"ok", "error", "skipped"})


class CronJob(msgspec.Struct, frozen=True):
    id: str
    name: str


class CronRun(msgspec.Struct, frozen=True):
    """One finished run, as its job's run log records it."""

    job_id: str
    ts: float
    """When the run finished (Unix seconds)."""
    status: str
    """"ok", "error", "skipped", or "" when the log says nothing else we know."""
    session_id: str = ""
    run_at: float = 0.0
    duration_s: float = 0.0


class CronIndex(msgspec.Struct, frozen=True):
    """Every job and run found under the given state dirs, and lines that were not usable."""

    jobs: dict[str, CronJob]
    runs: tuple[CronRun, ...]
    bad_lines: int = 0

    def name_of(self, job_id: str) -> str:
        job = self.jobs.get(job_id)
        return job.name if job is not None and job.name else job_id


class _Job(msgspec.Struct, gc=False):
    id: str | None = None
    jobId: str | None = None
    name: str | None = None


class _Store(msgspec.Struct, gc=False):
    jobs: list[_Job] = []


class _Entry(msgspec.Struct, gc=False):
    ts: float | None = None
    jobId: str | None = None
    action: str | None = None
    status: str | None = None
    sessionId: str | None = None
    runAtMs: float | None = None
    durationMs: float | None = None


_STORE = msgspec.json.Decoder(_Store | list[_Job])
_ENTRY = msgspec.json.Decoder(_Entry)


def cron_dirs(openclaw_dirs: Iterable[Path]) -> list[Path]:
    """`<state dir>/cron` for each OpenClaw state dir (given as the dir or its `agents`)."""
    found = [d.parent / "cron" if d.name == "agents" else d / "cron" for d in openclaw_dirs]
    return list(dict.fromkeys(found))


def read_cron(dirs: Iterable[Path]) -> CronIndex:
    """Every job and finished run under the cron dirs that exist (none: an empty index)."""
    jobs: dict[str, CronJob] = {}
    runs: list[CronRun] = []
    bad = 0
    for folder in dirs:
        found, unusable = _jobs(folder / "jobs.json")
        jobs.update(found)
        bad += unusable
        for log in _run_logs(folder / "runs"):
            entries, unusable = _runs(log)
            runs += entries
            bad += unusable
    return CronIndex(jobs, tuple(sorted(runs, key=lambda r: r.ts)), bad)


def _jobs(path: Path) -> tuple[dict[str, CronJob], int]:
    blob = _read(path)
    if blob is None:
        return {}, 0
    try:
        doc = _STORE.decode(blob)
    except DECODE_ERRORS:
        return {}, 1
    listed = doc if isinstance(doc, list) else doc.jobs
    jobs: dict[str, CronJob] = {}
    for job in listed:
        job_id = (job.id or job.jobId or "").strip()
        if not job_id:
            continue
        jobs[job_id] = CronJob(job_id[:MAX_NAME], (job.name or "").strip()[:MAX_NAME])
    return jobs, 0


def _run_logs(folder: Path) -> list[Path]:
    try:
        names = sorted(os.listdir(folder))[:MAX_RUN_LOGS]
    except OSError:
        return []
    return [folder / n for n in names if n.endswith(".jsonl")]


def _runs(path: Path) -> tuple[list[CronRun], int]:
    blob = _read(path, newest=True)
    if blob is None:
        return [], 0
    runs: list[CronRun] = []
    bad = 0
    for line in blob.split(b"\n"):
        if not line.strip():
            continue
        run = _run(line) if len(line) <= MAX_RUN_LINE else None
        if run is None:
            bad += 1
        elif run.job_id:
            runs.append(run)
    return runs, bad


def _run(line: bytes) -> CronRun | None:
    """A finished run; one with no job or time is skipped as OpenClaw skips it (an empty
    job id); a line that is not a run-log entry at all is None (bad)."""
    try:
        e = _ENTRY.decode(line)
    except DECODE_ERRORS:
        return None
    ts = bounded_ts((e.ts or 0.0) / 1000)
    if e.action != "finished" or not e.jobId or not ts:
        return CronRun("", 0.0, "")
    status = e.status if e.status in STATUSES else ""
    return CronRun(
        job_id=e.jobId.strip()[:MAX_NAME],
        ts=ts,
        status=status,
        session_id=(e.sessionId or "")[:MAX_NAME],
        run_at=bounded_ts((e.runAtMs or 0.0) / 1000),
        duration_s=max(0.0, min((e.durationMs or 0.0) / 1000, 1e7)),
    )


def _read(path: Path, newest: bool = False) -> bytes | None:
    """The file (at most MAX_FILE_BYTES: its start, or with `newest` its end from the first
    whole line), if it is a regular file: never a FIFO or a device."""
    got = read_bounded(path, MAX_FILE_BYTES, tail=newest)
    if got is None:
        return None
    data, size = got
    return data[data.find(b"\n") + 1 :] if newest and size > MAX_FILE_BYTES else data
