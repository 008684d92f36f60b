#!/usr/bin/env python3
"""Regenerate screenshots/*.svg: the real app over `tokentop demo`'s agents, at a fixed clock.

    python scripts/export_screenshots.py              # writes screenshots/*.svg
    python scripts/export_screenshots.py --out DIR

The demo's four agents (tokentop.demo.fleet.DEFAULT_FLEET) are replayed with the demo agent's own
record builders and behaviours, at the demo's pace, but stamped by a simulated clock instead
of the wall clock, into a temporary root at a fixed path. The real Engine reads those
transcripts; the real app runs over its snapshot with `FakeClock`, in UTC, at 160x45 (and the
main screen once more at 80x24). The
history shot shows earlier demo sessions, replayed the same way in real git repositories with
commits at fixed times, and recorded by the real SummaryRecorder into a store in the root;
among them a week and a half of a nightly job (`tokentop run --job nightly-docs` records its
runs so), whose runs got longer in the last week (the jobs shots). The header's windows are
the real ones: Claude's computed 5-hour block from the demo's Claude transcripts, Codex's
official rate limits from its rollouts, and Claude's official windows as the real
`tokentop statusline` recorded them from a status-line input at the fixed clock.
Every run writes the same bytes, so a diff of the SVGs shows exactly what changed on screen.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import NamedTuple

import msgspec

from tokentop.clock import FakeClock
from tokentop.commands.statusline import handle
from tokentop.config import Budgets, Config
from tokentop.demo.agent import PROFILES, Transcript, Work, session_batches, transcript_path
from tokentop.demo.claude_records import Record, random_uuid
from tokentop.demo.fleet import DEFAULT_FLEET, DemoAgentSpec
from tokentop.engine.engine import Engine
from tokentop.history.official import state_path
from tokentop.history.store import JobTag, Store
from tokentop.history.summary import EndReason, SummaryRecorder
from tokentop.model import LedgerSnapshot, SessionKey, SessionSnapshot
from tokentop.pricing import PriceTable
from tokentop.processes.control import ActionResult
from tokentop.processes.finding import ProcessRef
from tokentop.processes.mapper import SessionMapper
from tokentop.sources.base import Source
from tokentop.sources.claude_code import ClaudeCodeSource
from tokentop.sources.codex import CodexSource
from tokentop.ui.app import TokentopApp, make_app
from tokentop.ui.core import app_core

SIZE = (160, 45)
NOW = 1_763_640_000.0
"""2025-11-20 12:00:00 UTC, the FakeClock's default start."""
ROOT = Path("/tmp/tokentop-demo-shots")
"""A fixed path: transcript paths show in the details, so a random temp dir would change them."""
INTERVAL = 0.5
"""`tokentop demo`'s default --interval."""
BUDGET_USD = 2.0
"""`tokentop demo`'s default --budget."""
RUNNING_FOR_S = {"webshop": 150.0, "payments-api": 95.0, "ml-pipeline": 75.0, "cli-tools": 330.0}
"""How long each demo agent has been running when the shots are taken: the demo's first
minutes, when one agent is over the $2 budget and another is near it."""
QUIET_FOR_S = {"cli-tools": 120.0}
"""Agents that stopped writing this long before the shots (so one row shows as idle)."""
FIRST_PID = 48_213


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def restamp(records: list[Record], ts: float) -> None:
    """Put the simulated clock's time where the record builders put the wall clock's."""
    for record in records:
        if "timestamp" in record:
            record["timestamp"] = iso(ts)
        payload = record.get("payload")
        if record.get("type") == "session_meta" and isinstance(payload, dict):
            payload["timestamp"] = iso(ts)
        limits = payload.get("rate_limits") if isinstance(payload, dict) else None
        if isinstance(limits, dict):  # Codex's windows reset from the demo's own clock
            limits["primary"]["resets_at"] = int(NOW) + 3 * 3600 + 1200
            limits["secondary"]["resets_at"] = int(NOW) + 4 * 86400 + 1200


def stamped_batches(
    spec: DemoAgentSpec, session_id: str, start: float, end: float
) -> Iterator[list[Record]]:
    """The agent's batches from `start` to `end`, paced as `demo_agent.Pacer` paces them."""
    rng = random.Random(f"{spec.seed}:{spec.kind}:{spec.behavior}:{spec.project}")
    jitter = random.Random(spec.seed)
    work = Work(spec.kind, spec.behavior, rng, spec.project)
    pace = PROFILES[spec.behavior].pace
    ts = start
    for records, pause in session_batches(spec.kind, work, session_id, 0):
        if ts > end:
            return
        restamp(records, ts)
        yield records
        ts += INTERVAL * pause * pace * jitter.uniform(0.7, 1.3)


def agent_path(spec: DemoAgentSpec, root: Path, session_id: str, start: float) -> Path:
    if spec.kind == "claude":
        return transcript_path("claude", root / "claude", spec.project, session_id)
    day = datetime.fromtimestamp(start, UTC)
    folder = root / "codex" / "sessions" / day.strftime("%Y/%m/%d")
    return folder / f"rollout-{day.strftime('%Y-%m-%dT%H-%M-%S')}-{session_id}.jsonl"


def write_agent(spec: DemoAgentSpec, root: Path, start: float, end: float) -> str:
    """One agent's transcript from `start` to `end` under `root`; returns its session id."""
    session_id = random_uuid(random.Random(spec.seed), 4 if spec.kind == "claude" else 7)
    path = agent_path(spec, root, session_id, start)
    path.parent.mkdir(parents=True, exist_ok=True)
    transcript = Transcript(path, keep_open=False)
    for records in stamped_batches(spec, session_id, start, end):
        transcript.append(records)
    return session_id


def write_demo_root(root: Path) -> dict[SessionKey, ProcessRef]:
    """Write every demo agent's transcript; the process each would run as, as the demo maps it."""
    refs: dict[SessionKey, ProcessRef] = {}
    for n, spec in enumerate(DEFAULT_FLEET):
        name = os.path.basename(spec.project)
        start, end = NOW - RUNNING_FOR_S[name], NOW - QUIET_FOR_S.get(name, 1.0)
        session_id = write_agent(spec, root, start, end)
        refs[SessionKey(spec.kind, session_id)] = demo_ref(spec, FIRST_PID + 7 * n, session_id)
    return refs


# -- the history: earlier demo sessions, in real git repositories -----------------------------


class Earlier(NamedTuple):
    """A session that ended earlier today, and the commits made in its project meanwhile."""

    kind: str
    behavior: str
    project: str
    seed: int
    hours_ago: float
    minutes: float
    commits_at: tuple[float, ...] = ()
    """Minutes after the session's start."""
    reason: EndReason = "idle"


EARLIER = (
    Earlier("claude", "steady", "webshop", 11, 3.8, 9, (3, 6, 8.5)),
    Earlier("claude", "loop", "payments-api", 12, 3.2, 4),
    Earlier("codex", "overbudget", "ml-pipeline", 13, 2.6, 2.5, (), "killed"),
    Earlier("claude", "steady", "docs-site", 14, 2.1, 0.06),
    Earlier("codex", "steady", "cli-tools", 15, 1.5, 14, (5, 12)),
    Earlier("claude", "steady", "webshop", 16, 0.9, 6, (4,)),
)
GIT_ENV = {"GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"}
"""No user config may change a commit (signing, hooks): the same sha on every machine."""


def git(repo: Path, *args: str, when: float = NOW) -> None:
    env = {**os.environ, **GIT_ENV, "GIT_AUTHOR_NAME": "Demo", "GIT_COMMITTER_NAME": "Demo"}
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "demo@example.com"
    env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{int(when)} +0000"
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


def init_repo(repo: Path) -> None:
    """A repository with yesterday's work in it, so only the sessions' own commits count."""
    if (repo / ".git").exists():
        return
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    git(repo, "config", "user.email", "demo@example.com")
    (repo / "README.md").write_text(f"# {repo.name}\n")
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", "Initial commit", when=NOW - 86_400)


def commit_in(repo: Path, when: float, n: int) -> None:
    (repo / f"step_{int(when)}.py").write_text("".join(f"step_{i} = {i}\n" for i in range(3 + n)))
    git(repo, "add", ".")
    git(repo, "commit", "-q", "-m", f"Normalize values, part {n}", when=when)


def record_history(root: Path, store: Store, config: Config) -> None:
    """Replay the earlier sessions (cwd: a real repository) and record them as the app would."""
    reasons: dict[str, EndReason] = {}
    for e in EARLIER:
        repo = root / "repos" / e.project
        start = NOW - e.hours_ago * 3600
        init_repo(repo)
        for n, minute in enumerate(e.commits_at):
            commit_in(repo, start + minute * 60, n)
        spec = DemoAgentSpec(e.kind, e.behavior, str(repo), e.seed)
        reasons[write_agent(spec, root / "earlier", start, start + e.minutes * 60)] = e.reason
    clock = FakeClock(NOW)
    engine = Engine(sources_in(root / "earlier"), PriceTable.default().cost, clock=clock, workers=1)
    engine.scan()
    recorder = SummaryRecorder(store, config, clock, minutes_for=engine.minutes)
    for session in sorted(engine.snapshot().sessions, key=lambda s: s.first_ts):
        recorder.record(session, reasons[session.key.session_id])


NIGHTLY = tuple((10.6 - 1.5 * n, 2.0 if n < 4 else 4.5, n != 5) for n in range(7))
"""The nightly job's runs: (days before NOW, minutes, committed), the last three longer."""


def record_jobs(root: Path, store: Store, config: Config) -> None:
    """A nightly docs job, run by `tokentop run --job nightly-docs`: its runs as that command
    records them (a summary, and the job's name with how the run ended)."""
    repo = root / "repos" / "docs-site"
    init_repo(repo)
    for n, (days, minutes, committed) in enumerate(NIGHTLY):
        start = NOW - days * 86400
        if committed:
            commit_in(repo, start + minutes * 50, n)
        spec = DemoAgentSpec("claude", "steady", str(repo), 40 + n)
        write_agent(spec, root / "nightly", start, start + minutes * 60)
    clock = FakeClock(NOW)
    engine = Engine(sources_in(root / "nightly"), PriceTable.default().cost, clock=clock, workers=1)
    engine.scan()
    recorder = SummaryRecorder(store, config, clock, minutes_for=engine.minutes)
    for session in sorted(engine.snapshot().sessions, key=lambda s: s.first_ts):
        recorder.record(session, "exited")
        ok = session.first_ts < NOW - 5 * 86400 or session.first_ts > NOW - 2 * 86400
        store.set_job(session.key, JobTag("nightly-docs", "run", "ok" if ok else "error"))


STATUS_INPUT = {
    "session_id": "shots-statusline", "cwd": "/home/demo/webshop",
    "cost": {"total_cost_usd": 1.92}, "context_window": {"total_input_tokens": 812_000,
    "total_output_tokens": 41_000, "context_window_size": 200_000},
    "rate_limits": {"five_hour": {"used_percentage": 38, "resets_at": int(NOW) + 2 * 3600},
                    "seven_day": {"used_percentage": 64, "resets_at": int(NOW) + 3 * 86400}},
}  # fmt: skip
"""What Claude Code hands its status-line command (the documented fields), heard at NOW - 90 s."""


def record_statusline(root: Path) -> Path:
    """Run the real `tokentop statusline` on STATUS_INPUT; its state file is what the app reads."""
    os.environ["XDG_STATE_HOME"] = str(root / "state")
    handle(json.dumps(STATUS_INPUT).encode(), io.StringIO(), NOW - 90)
    return state_path()


def sources_in(root: Path) -> list[Source]:
    return [ClaudeCodeSource(config_dirs=[root / "claude"]), CodexSource(homes=[root / "codex"])]


def demo_ref(spec: DemoAgentSpec, pid: int, session_id: str) -> ProcessRef:
    argv = (
        "python3", "-m", "tokentop.demo.agent", "--kind", spec.kind, "--behavior", spec.behavior,
        "--root", f"{ROOT}/{spec.kind}", "--cwd", spec.project, "--session-id", session_id,
    )  # fmt: skip
    return ProcessRef(pid, NOW - 600, argv, spec.project, "launched", True, spec.kind)


class ScannedEngine:
    """The real Engine, scanned once at the fixed clock, its snapshot handed to the listeners
    once (the watchdog); it does not follow files or tick afterwards."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.listeners: list[Callable[[LedgerSnapshot], None]] = []
        self.tick_s = 1.0

    def start(self) -> None:
        self.engine.scan()
        snap = self.engine.snapshot()
        for fn in self.listeners:
            fn(snap)

    def stop(self) -> None:
        pass

    def snapshot(self) -> LedgerSnapshot:
        return self.engine.snapshot()

    def add_listener(self, fn: Callable[[LedgerSnapshot], None]) -> None:
        self.listeners.append(fn)


class NoSignals:
    """A controller that signals nothing: the shots never act on a process."""

    def _result(self, action: str, ref: ProcessRef, reason: str, origin: str) -> ActionResult:
        return msgspec.convert(
            {"action": action, "ok": False, "pids": [], "message": "screenshots: no signal",
             "reason": reason, "origin": origin, "timestamp": NOW, "pid": ref.pid},
            ActionResult,
        )  # fmt: skip

    def pause(self, ref: ProcessRef, reason: str, origin: str) -> ActionResult:
        return self._result("pause", ref, reason, origin)

    def resume(self, ref: ProcessRef, reason: str, origin: str) -> ActionResult:
        return self._result("resume", ref, reason, origin)

    def terminate(self, ref: ProcessRef, reason: str, origin: str) -> ActionResult:
        return self._result("terminate", ref, reason, origin)

    def kill(self, ref: ProcessRef, reason: str, origin: str) -> ActionResult:
        return self._result("kill", ref, reason, origin)


def demo_app(root: Path) -> TokentopApp:
    config = Config(budgets=Budgets(usd=BUDGET_USD))
    store = Store(root / "history.db")
    record_history(root, store, config)
    record_jobs(root, store, config)
    refs = write_demo_root(root)
    clock = FakeClock(NOW)
    engine = Engine(sources_in(root), PriceTable.default().cost, clock=clock, workers=1)
    scanned = ScannedEngine(engine)
    core = app_core(scanned, config, clock, store=store, official=record_statusline(root))
    return make_app(
        scanned,
        config=config,
        clock=clock,
        controller=NoSignals(),
        mapper=SessionMapper(refs),
        store=store,
        core=core,
    )


def project_of(session: SessionSnapshot) -> str:
    return os.path.basename(session.cwd)


SHOTS: dict[str, tuple[str, ...]] = {
    "main": (),
    "detail": ("select:payments-api", "enter"),
    "kill_confirm": ("select:ml-pipeline", "k"),
    "help": ("question_mark",),
    "history": ("h",),
    "history_jobs": ("h", "j"),
    "job_runs": ("h", "j", "enter"),
    "main_80x24": (),
}
"""Screenshot name -> keys pressed first ("select:PROJECT" moves the cursor to that row)."""
SIZES: dict[str, tuple[int, int]] = {"main_80x24": (80, 24)}
"""Shots taken at another terminal size than SIZE: the classic 80x24 terminal."""


async def take(name: str, steps: tuple[str, ...], root: Path, out: Path) -> None:
    app = demo_app(root)
    async with app.run_test(size=SIZES.get(name, SIZE)) as pilot:
        await app.workers.wait_for_complete()
        watch = app.core.windows
        if watch is not None and watch.ready.wait(30):  # the windows are read: draw them
            app.rejudge()
            app.min_redraw_s = 0.0
            await app.workers.wait_for_complete()
        await pilot.pause()
        app.clear_notifications()  # alerts raised on the first frame would cover the rows
        for step in steps:
            if step.startswith("select:"):
                app.main_table.move_cursor(row_of(app, step.removeprefix("select:")))
            else:
                await pilot.press(step)
            await app.workers.wait_for_complete()
            await pilot.pause()
        await pilot.pause()
        svg = app.export_screenshot(title=f"tokentop — {name.replace('_', ' ')}")
    (out / f"{name}.svg").write_text(svg, encoding="utf-8")


def row_of(app: TokentopApp, project: str) -> int:
    """The table row showing the session of `project`."""
    keys = [k for k, m in app.listed.items() if project_of(m.session) == project]
    return app.main_table.row_index(keys[0])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parents[1] / "screenshots")
    args = parser.parse_args(argv)
    if shutil.which("git") is None:
        print("export_screenshots: git is needed for the history shot", file=sys.stderr)
        return 2
    os.environ["TZ"] = "UTC"  # "today" starts at local midnight
    os.environ.update(GIT_ENV)  # git as the recorder runs it: no user config either
    time.tzset()
    args.out.mkdir(parents=True, exist_ok=True)
    for name, steps in SHOTS.items():
        shutil.rmtree(ROOT, ignore_errors=True)
        try:
            asyncio.run(take(name, steps, ROOT, args.out))
        finally:
            shutil.rmtree(ROOT, ignore_errors=True)
        print(args.out / f"{name}.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
