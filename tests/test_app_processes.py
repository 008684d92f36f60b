"""The app acting on real processes: a Pilot presses p, y, p, y, k, y on a row backed by a real
demo agent (a child process appending a real transcript), and an agent that exits by itself is
recorded as exited. Every child runs in its own process group, killed at teardown."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import psutil
from textual.pilot import Pilot
from textual.widgets import Static

from proc_helpers import gone, psutil_status
from test_app import text_of
from tokentop.clock import SystemClock
from tokentop.config import Budgets, Config
from tokentop.demo.agent import escape_cwd
from tokentop.engine.engine import Engine
from tokentop.history.store import Store
from tokentop.model import SessionKey
from tokentop.pricing import PriceTable
from tokentop.processes.control import ProcessController, read_action_log
from tokentop.processes.finding import ProcessRef, launch
from tokentop.processes.mapper import SessionMapper, exact_probe
from tokentop.render.markdown import summary_markdown
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
    root: Path,
    refs: dict[SessionKey, ProcessRef],
    tmp_path: Path,
    store: Store | None = None,
    config: Config | None = None,
) -> TokentopApp:
    clock = SystemClock()
    engine = Engine([ClaudeCodeSource([root])], PriceTable.default().cost, clock=clock)
    controller = ProcessController(log_path=tmp_path / "actions.jsonl")
    mapper = SessionMapper(refs)
    app = make_app(
        engine,
        config=config or Config(),
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


def title(app: TokentopApp) -> str:
    return text_of(app.screen.query_one("#detail-title", Static))


def header(app: TokentopApp) -> str:
    return text_of(app.main_screen.query_one("#header", Static))


def select(app: TokentopApp, key: SessionKey) -> None:
    app.main_table.move_cursor(row=app.main_table.row_index(str(key)))


async def test_k_and_t_are_recorded_as_killed_and_terminated_and_stop_burning_at_once(
    tmp_path: Path, groups: list[int]
) -> None:
    """Issue #12, items 1 and 2: the ending is the action that ended it, the summary's
    "recorded as" agrees with its own event list, and a killed row burns nothing from the
    moment the kill is known: the row, the header's "now", the details (no ETA)."""
    root = tmp_path / "claude"
    a_sid, b_sid = "6d7e8f90-1234-4c5d-8e6f-7a8b9c0d1e2f", "7e8f9012-3456-4d6e-8f7a-8b9c0d1e2f3a"
    a_pop, a_ref, _ = start_agent(root, a_sid, "/home/dev/shop", groups)
    b_pop, b_ref, _ = start_agent(root, b_sid, "/home/dev/api", groups)
    a, b = SessionKey("claude", a_sid), SessionKey("claude", b_sid)
    path = tmp_path / "tokentop.db"
    config = Config(budgets=Budgets(usd=1000.0))
    app = app_for(root, {a: a_ref, b: b_ref}, tmp_path, Store(path), config)
    async with app.run_test(size=SIZE) as pilot:
        table = app.main_table

        def cell(key: SessionKey, name: str) -> str:
            return cell_text(table.shown[str(key)], name).strip()

        await until(pilot, lambda: str(a) in table.shown and str(b) in table.shown)
        await until(pilot, lambda: cell(a, "burn") != "—" and cell(b, "burn") != "—")
        select(app, a)
        await pilot.press("enter")
        await until(pilot, lambda: "ETA" in title(app))  # live, under its budget: an ETA
        await confirm(pilot, app, "k")  # from the details
        await until(pilot, lambda: gone(a_pop.pid))
        await until(pilot, lambda: "killed" in title(app))
        assert "ETA" not in title(app)
        assert "now 0/m" in text_of(app.screen.query_one("#burn-chart", Static))
        await pilot.press("escape")
        assert (cell(a, "status"), cell(a, "burn"), cell(a, "eta")) == ("killed", "—", "")
        select(app, b)
        await confirm(pilot, app, "t")
        await until(pilot, lambda: gone(b_pop.pid))
        await until(pilot, lambda: cell(b, "status") == "term" and cell(b, "burn") == "—")
        await until(pilot, lambda: "live 0 of 2" in header(app))
        assert "now 0 tok/min $0.00/h" in header(app)
    with Store(path) as store:
        killed, terminated = store.summary(str(a)), store.summary(str(b))
    assert killed is not None and terminated is not None
    assert (killed.end_reason, terminated.end_reason) == ("killed", "terminated")
    text = summary_markdown(killed)
    assert "recorded as killed" in text and "**kill** by key:k (ok)" in text
    text = summary_markdown(terminated)
    assert "recorded as terminated" in text and "**terminate** by key:t (ok)" in text


async def test_paused_then_exited_is_recorded_so(tmp_path: Path, groups: list[int]) -> None:
    """Paused with `p` (zero burn, no ETA at once), then its process goes away."""
    root = tmp_path / "claude"
    sid = "8f901234-5678-4e7f-8a9b-0c1d2e3f4a5b"
    popen, ref, _ = start_agent(root, sid, "/home/dev/docs", groups)
    key = SessionKey("claude", sid)
    path = tmp_path / "tokentop.db"
    app = app_for(root, {key: ref}, tmp_path, Store(path), Config(budgets=Budgets(usd=1000.0)))
    async with app.run_test(size=SIZE) as pilot:
        table = app.main_table

        def cell(name: str) -> str:
            return cell_text(table.shown[str(key)], name).strip()

        await until(pilot, lambda: str(key) in table.shown and cell("eta") != "")
        await confirm(pilot, app, "p")
        await until(pilot, lambda: psutil_status(popen.pid) == psutil.STATUS_STOPPED)
        await until(pilot, lambda: cell("status") == "paused")
        assert (cell("burn"), cell("eta")) == ("—", "")
        assert "now 0 tok/min $0.00/h" in header(app)
        os.killpg(popen.pid, signal.SIGKILL)  # it goes away while paused
        await asyncio.to_thread(popen.wait, TIMEOUT)
        await until(pilot, lambda: recorded_reason(path, key) == "paused-then-exited")
    with Store(path) as store:
        summary = store.summary(str(key))
    assert summary is not None
    text = summary_markdown(summary)
    assert "recorded as paused-then-exited" in text and "**pause** by key:p (ok)" in text


def recorded_reason(path: Path, key: SessionKey) -> str:
    with Store(path) as store:
        summary = store.summary(str(key))
    return "" if summary is None else summary.end_reason


def test_the_exact_probe_is_cheap_on_the_engine_thread() -> None:
    """Asked for every session at every judgement: the state of an exactly mapped process is
    reused for PROBE_TTL_S, and the mapping (or its absence) is looked up again only after
    EXACT_TTL_S (a resumed session may run in a new process); it never scans /proc."""
    from tokentop.processes.mapper import EXACT_TTL_S, PROBE_TTL_S, ExactProbe

    mapped, unmapped = SessionKey("claude", "mapped"), SessionKey("claude", "guess")
    lookups: list[SessionKey] = []
    states = ["running", "stopped", "unknown"]
    now = [0.0]

    def exact_ref(key: SessionKey) -> str | None:
        lookups.append(key)
        return "ref" if key == mapped else None

    probe = ExactProbe(exact_ref, lambda ref: states.pop(0), clock=lambda: now[0])
    assert (probe(mapped), probe(unmapped)) == ("running", None)
    now[0] += PROBE_TTL_S / 2
    assert (probe(mapped), probe(unmapped)) == ("running", None)
    assert lookups == [mapped, unmapped]
    now[0] += PROBE_TTL_S
    assert probe(mapped) == "stopped"  # asked again, the mapping reused
    assert probe(unmapped) is None and lookups == [mapped, unmapped]
    now[0] += EXACT_TTL_S
    assert probe(mapped) is None  # "unknown" is no state the watchdog can use
    assert probe(unmapped) is None and lookups == [mapped, unmapped, mapped, unmapped]


def test_the_exact_probe_reads_the_registry_again_once_it_changes(tmp_path: Path) -> None:
    """A mapping `run` records after the probe first found none, and the exit `run` records
    of its agent, count from the next judgement's refresh, not after the caches' TTLs (even
    when another reader of the registry saw the change first); an exit recorded for another
    process (the same pid, another start) changes nothing."""
    from tokentop.processes.mapper import RecordedMapper
    from tokentop.processes.registry import ExitRecord, Registry, SessionRecord, append

    path, key = tmp_path / "sessions.jsonl", SessionKey("claude", "s1")
    mapper = RecordedMapper(Registry(path), ProcessController(), SessionMapper())
    probe = exact_probe(mapper, mapper.controller)
    assert probe is not None and probe(key) is None
    popen, ref = launch([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        record = SessionRecord("claude", "s1", ref.pid, ref.create_time, "launched", time.time())
        append(path, record)
        assert probe(key) is None  # cached: nothing has told the probe yet
        assert key in mapper.registry.sessions()  # another reader (a key's worker) first
        probe.refresh()
        assert probe(key) == "running"
        append(path, ExitRecord(ref.pid, ref.create_time + 1.0, time.time()))
        probe.refresh()
        assert probe(key) == "running"
    finally:
        os.killpg(popen.pid, signal.SIGKILL)
        popen.wait()
    assert probe(key) == "running"  # its state is cached for PROBE_TTL_S
    append(path, ExitRecord(ref.pid, ref.create_time, time.time()))
    probe.refresh()
    assert probe(key) == "gone"
