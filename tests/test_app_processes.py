"""The app acting on real processes: a Pilot presses p, y, p, y, k, y on a row backed by a real
demo agent (a child process appending a real transcript), and an agent that exits by itself is
recorded as exited. Every child runs in its own process group, killed at teardown."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from textual.pilot import Pilot

from proc_helpers import gone, psutil_status
from tokentop.clock import SystemClock
from tokentop.commands.app import exact_probe
from tokentop.config import Config
from tokentop.demo.agent import escape_cwd
from tokentop.engine.engine import Engine
from tokentop.history.store import Store
from tokentop.model import SessionKey
from tokentop.pricing import PriceTable
from tokentop.processes.control import ProcessController, read_action_log
from tokentop.processes.finding import ProcessRef, launch
from tokentop.processes.mapper import SessionMapper
from tokentop.sources.claude_code import ClaudeCodeSource
from tokentop.ui.app import TokentopApp, make_app
from tokentop.ui.screens.modals import ConfirmModal
from tokentop.ui.widgets.session_table import cell_text

SIZE = (160, 30)
TIMEOUT = 20.0


def start_agent(
    root: Path, sid: str, cwd: str, groups: list[int], *extra: str
) -> tuple[subprocess.Popen[bytes], ProcessRef, Path]:
    argv = [
        sys.executable, "-m", "tokentop.demo.agent", "--kind", "claude", "--behavior", "steady",
        "--root", str(root), "--cwd", cwd, "--interval", "0.05", "--session-id", sid, *extra,
    ]  # fmt: skip
    popen, ref = launch(argv, stdout=subprocess.DEVNULL)
    groups.append(popen.pid)
    return popen, ref, root / "projects" / escape_cwd(cwd) / f"{sid}.jsonl"


def app_for(
    root: Path, refs: dict[SessionKey, ProcessRef], tmp_path: Path, store: Store | None = None
) -> TokentopApp:
    clock = SystemClock()
    engine = Engine([ClaudeCodeSource([root])], PriceTable.default().cost, clock=clock)
    controller = ProcessController(log_path=tmp_path / "actions.jsonl")
    mapper = SessionMapper(refs)
    app = make_app(
        engine,
        config=Config(),
        clock=clock,
        controller=controller,
        mapper=mapper,
        store=store,
        probe=exact_probe(mapper, controller),  # as `tokentop` builds it
    )
    app.min_redraw_s = 0.0
    return app


async def until(pilot: Pilot[None], condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        await pilot.pause(0.05)


def grows(path: Path, seconds: float = 0.6) -> bool:
    before = path.stat().st_size
    time.sleep(seconds)
    return path.stat().st_size > before


async def confirm(pilot: Pilot[None], app: TokentopApp, key: str) -> str:
    await pilot.press(key)
    await until(pilot, lambda: isinstance(app.screen, ConfirmModal))
    text = " ".join(str(w.render()) for w in app.screen.query("Static"))
    await pilot.press("y")
    return text


async def test_p_pauses_and_resumes_and_k_kills_a_real_agent(
    tmp_path: Path, groups: list[int]
) -> None:
    root = tmp_path / "claude"
    sid = "4b5c6d7e-8f90-4a1b-8c2d-3e4f5a6b7c8d"
    popen, ref, transcript = start_agent(root, sid, "/home/dev/shop", groups)
    key = SessionKey("claude", sid)
    app = app_for(root, {key: ref}, tmp_path)
    async with app.run_test(size=SIZE) as pilot:
        table = app.main_table
        await until(pilot, lambda: str(key) in table.shown)
        assert cell_text(table.shown[str(key)], "status").strip() == "live"

        shown = await confirm(pilot, app, "p")
        assert f"pid {popen.pid}" in shown
        await until(pilot, lambda: psutil_status(popen.pid) == psutil.STATUS_STOPPED)
        assert not grows(transcript)
        await until(pilot, lambda: cell_text(table.shown[str(key)], "status").strip() == "paused")

        await confirm(pilot, app, "p")
        await until(pilot, lambda: psutil_status(popen.pid) != psutil.STATUS_STOPPED)
        assert grows(transcript)

        await confirm(pilot, app, "k")
        await until(pilot, lambda: gone(popen.pid))
        assert not grows(transcript)
    log, bad = read_action_log(tmp_path / "actions.jsonl")
    assert bad == 0
    assert [(a.action, a.ok, a.origin, a.pid) for a in log] == [
        ("pause", True, "key:p", popen.pid),
        ("resume", True, "key:p", popen.pid),
        ("kill", True, "key:k", popen.pid),
    ]
    assert {a.session for a in log} == {str(key)}  # the real id, never ""


async def test_an_agent_that_exits_is_recorded_as_exited(tmp_path: Path, groups: list[int]) -> None:
    """Its process is mapped exactly (launched), so its end is seen when it exits, long before
    the idle timeout."""
    root = tmp_path / "claude"
    sid = "5c6d7e8f-9012-4b3c-8d4e-5f6a7b8c9d0e"
    popen, ref, transcript = start_agent(root, sid, "/home/dev/cli", groups, "--max-turns", "3")
    key = SessionKey("claude", sid)
    path = tmp_path / "tokentop.db"
    app = app_for(root, {key: ref}, tmp_path, Store(path))
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: str(key) in app.main_table.shown)
        await asyncio.to_thread(popen.wait, TIMEOUT)
        written = transcript_responses(transcript)
        # recorded when the exit is seen, and again once its last lines are read
        await until(pilot, lambda: recorded_responses(path, key) == written)
    with Store(path) as store:
        summary = store.summary(str(key))
    assert summary is not None and summary.end_reason == "exited"
    assert summary.responses == written >= 3


def transcript_responses(path: Path) -> int:
    ids = set()
    for line in path.read_text().splitlines():
        record = json.loads(line)
        if record.get("type") == "assistant":
            ids.add(record["message"]["id"])
    return len(ids)


def recorded_responses(path: Path, key: SessionKey) -> int:
    with Store(path) as store:
        summary = store.summary(str(key))
    return -1 if summary is None else summary.responses
