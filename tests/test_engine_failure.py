"""The engine never dies silently: a file that breaks its parser is counted, and a failed
live loop is shown (the app: a red banner and a restart; `watch`/`guard`: one line, exit 1)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from claude_lines import escape_cwd, response, write_transcript
from tokentop.clock import SystemClock
from tokentop.commands.guard import Guard, NdjsonOut
from tokentop.commands.guard import run as guard_run
from tokentop.config import Config
from tokentop.engine.engine import Engine
from tokentop.model import LedgerSnapshot
from tokentop.policy.watchdog import Watchdog
from tokentop.pricing import PriceTable
from tokentop.processes.control import ProcessController
from tokentop.sources.claude_code import ClaudeCodeSource
from tokentop.ui.app import make_app

CWD = "/home/dev/work/demo"


def history(root: Path, sessions: int = 2) -> list[Path]:
    project = root / "projects" / escape_cwd(CWD)
    return [
        write_transcript(project / f"s{i}.jsonl", f"s{i}", CWD, [response(f"s{i}", CWD, 1000)])
        for i in range(sessions)
    ]


def engine_over(root: Path, cache_dir: Path | None = None) -> Engine:
    source = ClaudeCodeSource(config_dirs=[root])
    return Engine([source], PriceTable.default().cost, cache_dir=cache_dir)


def test_a_file_that_breaks_its_parser_is_counted_and_the_rest_read(tmp_path: Path) -> None:
    """JSON nested far deeper than the recursion limit: whatever layer raises, the file's
    damage is counted and the other files' totals stay exact."""
    good = history(tmp_path / "c", sessions=1)[0]
    bad = good.with_name("deep.jsonl")
    bad.write_text('{"type":"assistant","message":' + "[" * 100_000 + "]" * 100_000 + "}\n")
    engine = engine_over(tmp_path / "c")
    engine.scan()
    snap = engine.snapshot()
    assert [s.key.session_id for s in snap.sessions] == ["s0"]
    assert snap.sessions[0].tokens.total == 1000
    health = {f.path: f for f in snap.files}
    assert health[str(bad)].bad_lines >= 1


def failing_once(engine: Engine) -> list[int]:
    """A consumer that raises on the first snapshot: a real way for the live loop to fail."""
    calls: list[int] = []

    def listener(_snap: LedgerSnapshot) -> None:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("consumer broke")

    engine.add_listener(listener)
    return calls


async def test_app_shows_a_red_banner_with_the_log_then_restarts_the_engine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    history(tmp_path / "c")
    engine = engine_over(tmp_path / "c", tmp_path / "cache")
    calls = failing_once(engine)
    app = make_app(engine, config=Config(hide_after_h=1e6), clock=SystemClock())
    async with app.run_test(size=(160, 40)) as pilot:
        banner = app.main_screen.query_one("#banner")
        deadline = time.monotonic() + 20
        while not (banner.display and banner.has_class("failed")):
            assert time.monotonic() < deadline, "no banner"
            await pilot.pause(0.05)
        text = str(banner.render())
        log = tmp_path / "state" / "tokentop" / "engine.log"
        assert "consumer broke" in text and str(log) in text
        assert "RuntimeError: consumer broke" in log.read_text()
        while banner.has_class("failed") or app.main_table.row_count < 2:
            assert time.monotonic() < deadline + 10, "not restarted"
            await pilot.pause(0.05)
        assert len(calls) > 1 and engine.failure is None
        assert "restarted" in str(banner.render())


def test_guard_prints_one_line_and_reports_failure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    history(tmp_path / "c")
    engine = engine_over(tmp_path / "c")
    failing_once(engine)
    controller = ProcessController(log_path=tmp_path / "actions.log")
    watchdog = Watchdog(Config())
    guard = Guard(Config(), controller, None, NdjsonOut(io.StringIO()), watchdog, act=False)  # type: ignore[arg-type]
    stop = threading.Event()
    timer = threading.Timer(20, stop.set)
    timer.start()
    try:
        assert guard_run(engine, watchdog, guard, stop) is False
    finally:
        timer.cancel()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "consumer broke" in err[0] and "engine.log" in err[0]


def test_watch_whose_reader_went_away_says_so_and_exits_non_zero(tmp_path: Path) -> None:
    """`tokentop watch --ndjson | head -1`: writing to the closed pipe fails in the engine's
    thread; watch must not hang on, silently, with nobody reading."""
    history(tmp_path / "c")
    env = {**os.environ, "HOME": str(tmp_path / "home"), "XDG_CACHE_HOME": str(tmp_path / "x")}
    cmd = [sys.executable, "-m", "tokentop.cli", "watch", "--ndjson", "--no-cache"]
    proc = subprocess.Popen(
        [*cmd, "--claude-dir", str(tmp_path / "c")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()  # the reader is gone before the first line
        assert proc.wait(timeout=30) == 1
        err = proc.stderr.read().decode().strip().splitlines()
        assert len(err) == 1 and "the engine stopped" in err[0], err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
