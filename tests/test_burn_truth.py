"""Burn, budget share and ETA against a real writer at a known pace (tests/paced_writer.py).

The writer is a child process appending a response of 5,000 output tokens every 0.25 s
(1.2 M tokens/min; $1.20/min at the $1/Mtok the config gives its model) to a real
transcript, and logging the instant of each write. `tokentop watch --ndjson` (a real
process) and the app (Pilot, over the real engine) must report, from 10 s on:
- burn within ±15 % of the pace measured from the writer's own log;
- the share of the budget used, exactly (responses × $0.005 / budget);
- an ETA within ±20 % of the instant the budget is really crossed (the schedule's).
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from paced_writer import PRICE_TOML, times_path
from test_app_processes import until
from test_cli import Watch
from tokentop.clock import SystemClock
from tokentop.config import parse_config
from tokentop.engine.engine import Engine
from tokentop.pricing import build_table
from tokentop.sources.claude_code import ClaudeCodeSource
from tokentop.ui.app import make_app
from tokentop.ui.views.rows import budget_text, burn_text, eta_text

WRITER = Path(__file__).parent / "paced_writer.py"
GAP, TOKENS = 0.25, 5000
COST = TOKENS / 1e6
BUDGET = 0.5
CROSSING = math.ceil(BUDGET / COST - 1e-9)
"""The response whose cost reaches the budget: the 100th, 25 s after the start."""
PACE = TOKENS / GAP * 60


class Writer:
    def __init__(self, root: Path, session: str, groups: list[int]) -> None:
        self.root, self.session = root, session
        argv = [sys.executable, str(WRITER), str(root), session, str(GAP), str(TOKENS)]
        self.proc = subprocess.Popen(argv, start_new_session=True)
        groups.append(self.proc.pid)
        self.started = time.time()

    def times(self) -> list[float]:
        path = times_path(self.root, self.session)
        return [float(x) for x in path.read_text().split()] if path.exists() else []

    def truth(self, responses: int) -> tuple[float, float]:
        """The real pace over the first `responses` writes, and when the budget is crossed
        (that write's scheduled instant: the writer keeps to its start + n × GAP)."""
        times = self.times()[:responses]
        pace = (len(times) - 1) * TOKENS / (times[-1] - times[0]) * 60
        start = times[0] - GAP
        return pace, start + CROSSING * GAP

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=5)


def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"{PRICE_TOML}[budgets]\nusd = {BUDGET}\n")
    return path


def check(record: dict[str, Any], writer: Writer, now: float) -> None:
    """One session record, judged at `now`, against the writer's truth."""
    n = record["responses"]
    pace, crossing = writer.truth(n)
    assert record["burn"]["tokens_per_min"] == pytest.approx(pace, rel=0.15)
    assert record["budget_used"] == pytest.approx(n * COST / BUDGET, abs=1e-6)
    assert record["budget"] == {"usd": BUDGET, "tokens": None, "from": "default"}
    assert record["state"] == "live"
    assert record["eta_s"] == pytest.approx(crossing - now, rel=0.2)


def test_watch_ndjson_reports_the_writers_pace_budget_share_and_eta(
    tmp_path: Path, groups: list[int]
) -> None:
    root = tmp_path / "claude"
    (root / "projects").mkdir(parents=True)
    watch = Watch(tmp_path, "--claude-dir", str(root), "--config", str(config_file(tmp_path)))
    try:
        time.sleep(1.5)  # watch is up (an empty folder scans at once)
        writer = Writer(root, "pace-watch", groups)
        checked = 0
        while time.time() - writer.started < 14:
            record = watch.wait_for(lambda o: o["type"] == "session", timeout=5)
            at = datetime.fromisoformat(record["last_activity"]).timestamp()
            if record["budget_used"] is None or at - writer.started < 10:
                continue
            check(record, writer, at)
            checked += 1
        writer.stop()
        assert checked >= 10  # one line per response, four a second
    finally:
        watch.close()


async def test_the_app_row_shows_the_writers_pace_budget_share_and_eta(
    tmp_path: Path, groups: list[int]
) -> None:
    root = tmp_path / "claude"
    (root / "projects").mkdir(parents=True)
    config = parse_config(config_file(tmp_path).read_text())
    clock = SystemClock()
    engine = Engine([ClaudeCodeSource([root])], build_table(config.prices).cost, clock=clock)
    app = make_app(engine, config=config, clock=clock)
    app.min_redraw_s = 0.0
    async with app.run_test(size=(160, 30)) as pilot:
        writer = Writer(root, "pace-app", groups)
        key = "claude:pace-app"
        await until(pilot, lambda: key in app.main_table.shown)
        checked = 0
        while time.time() - writer.started < 13:
            await pilot.pause(0.3)
            judgement = app.judgement
            judged = next(j for j in judgement.sessions if str(j.session.key) == key)
            at = judged.session.last_response_ts
            if at - writer.started < 10:
                continue
            s, use = judged.session, judged.use
            row = app.main_table.shown[key]
            assert (row.burn, row.budget, row.eta) == (
                burn_text(s),
                budget_text(use),
                eta_text(use),
            )
            record = {
                "responses": s.responses, "burn": {"tokens_per_min": s.tokens_per_min},
                "budget_used": use.fraction, "state": judged.state,
                "budget": {"usd": use.budget.usd, "tokens": use.budget.tokens, "from": use.origin},
                "eta_s": use.eta_s,
            }  # fmt: skip
            check(record, writer, judgement.snapshot.taken_at)
            checked += 1
        writer.stop()
        assert checked >= 5


def test_watch_prints_the_turn_to_idle_with_no_byte_written(
    tmp_path: Path, groups: list[int]
) -> None:
    """A writer that stops: after `live_timeout_s` of silence a line says idle, with no
    burn and no ETA, though nothing was appended since."""
    root = tmp_path / "claude"
    (root / "projects").mkdir(parents=True)
    config = config_file(tmp_path)
    config.write_text("live_timeout_s = 2\n" + config.read_text())
    watch = Watch(tmp_path, "--claude-dir", str(root), "--config", str(config))
    try:
        time.sleep(1.5)
        argv = [sys.executable, str(WRITER), str(root), "stops", str(GAP), str(TOKENS), "8"]
        subprocess.run(argv, check=True, timeout=30)
        last = watch.wait_for(lambda o: o["type"] == "session" and o["responses"] == 8)
        assert last["state"] == "live" and last["burn"]["tokens_per_min"] > 0
        idle = watch.wait_for(lambda o: o["type"] == "session" and o["state"] == "idle", 10)
        assert idle["responses"] == 8 and idle["last_activity"] == last["last_activity"]
        assert idle["burn"] == {"tokens_per_min": 0.0, "usd_per_hour": 0.0}
        assert idle["eta_s"] is None and idle["budget_used"] == pytest.approx(8 * COST / BUDGET)
    finally:
        watch.close()
