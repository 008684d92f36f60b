"""The cold scan at real scale: a 45 MB history read under the running app (two processes),
newest first with progress, and a worker that never outlives the command that started it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
import pytest

import tokentop.engine.coldscan as coldscan
from claude_lines import escape_cwd, response, write_transcript
from proc_helpers import gone, wait_until
from tokentop.clock import SystemClock
from tokentop.config import Config
from tokentop.engine.engine import Engine
from tokentop.pricing import PriceTable
from tokentop.sources.claude_code import ClaudeCodeSource
from tokentop.ui.app import TokentopApp, make_app

KINDS = ("input", "output", "cache_read", "cache_write")


def engine_over(root: Path, cache_dir: Path) -> Engine:
    source = ClaudeCodeSource(config_dirs=[root])
    return Engine([source], PriceTable.default().cost, cache_dir=cache_dir)


def merges(engine: Engine) -> list[bool]:
    """What each merge of a worker's batch returned."""
    calls: list[bool] = []
    absorb = engine.absorb

    def spy(*args: Any, **kwargs: Any) -> bool:
        calls.append(absorb(*args, **kwargs))
        return calls[-1]

    engine.absorb = spy  # type: ignore[method-assign]
    return calls


async def wait_for(pilot: Any, condition: Any, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await pilot.pause(0.05)
    return True


def tokens(app: TokentopApp) -> dict[str, int]:
    snap = app.snapshot
    assert snap is not None
    return {k: sum(getattr(s.tokens, k) for s in snap.sessions) for k in KINDS}


async def test_app_over_a_big_history_shows_rows_then_new_sessions(
    big_history: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Under the running app (Textual's stderr has no fd) the two-process scan works, rows
    appear while it runs, totals end exact, and a session written afterwards shows."""
    root, expected = big_history
    engine = engine_over(root, tmp_path / "empty-cache")
    merged = merges(engine)
    progress: list[coldscan.ScanProgress] = []
    engine.add_listener(lambda _snap: progress.append(engine.progress) if engine.progress else None)
    app = make_app(engine, config=Config(), clock=SystemClock())
    async with app.run_test(size=(160, 40)) as pilot:
        assert await wait_for(pilot, lambda: app.snapshot is not None and app.snapshot.sessions)
        empty = app.main_screen.query_one("#empty")
        assert "Press a to show them" in str(empty.render())  # all are days old
        await pilot.press("a")
        assert await wait_for(pilot, lambda: app.main_table.row_count > 0)
        done = lambda: engine.progress is None and app.main_table.row_count == 52  # noqa: E731
        assert await wait_for(pilot, done)
        assert progress and progress[0].files_done < 52, "a first view before the end"
        assert merged and all(merged), "the worker process read part of it"
        await pilot.pause(0.3)
        assert tokens(app) == {k: expected["totals"][k] for k in KINDS}
        new = root / "projects" / escape_cwd("/home/dev/work/fresh") / f"{uuid.uuid4()}.jsonl"
        write_transcript(new, new.stem, "/home/dev/work/fresh", [response(new.stem, "/x", 5000)])
        assert await wait_for(pilot, lambda: app.main_table.row_count == 53, timeout=30)
        await pilot.press("q")


def test_newest_files_are_read_first(big_history: tuple[Path, dict[str, Any]]) -> None:
    root, _ = big_history
    files = sorted((root / "projects").rglob("*.jsonl"))
    now = time.time()
    for age, path in enumerate(files):
        os.utime(path, (now - 100 - age, now - 100 - age))
    newest = files[-1]
    os.utime(newest, (now, now))
    order = [item[0] for item in coldscan.newest_first(files)]
    assert order[0] == newest and order[1:] == files[:-1]


def sessions_process(root: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "tokentop.cli", "sessions", "--json", "--claude-dir", str(root)]
    return subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def scan_workers(pid: int) -> list[psutil.Process]:
    try:
        children = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [c for c in children if _name(c) == coldscan.WORKER_NAME.decode()]


def pipes_of(pid: int) -> int:
    """How many pipe ends `pid` holds (a worker holding its own copy of the other end of
    its pipe would never see EOF, and could block forever)."""
    fds = Path(f"/proc/{pid}/fd")
    if not fds.is_dir():
        pytest.skip("no /proc here")
    links = []
    for fd in fds.iterdir():
        try:
            links.append(os.readlink(fd))
        except OSError:
            continue
    return sum(link.startswith("pipe:") for link in links)


def _name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.Error:
        return ""


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_no_worker_outlives_sessions_killed_mid_scan(
    big_history: tuple[Path, dict[str, Any]], tmp_path: Path, sig: signal.Signals
) -> None:
    root, _ = big_history
    proc = sessions_process(root / "projects", tmp_path)
    try:
        workers: list[psutil.Process] = []
        assert wait_until(lambda: bool(workers.extend(scan_workers(proc.pid)) or workers), 30)
        assert all(pipes_of(w.pid) <= 2 for w in workers), "only its own stdin and stdout"
        proc.send_signal(sig)
        proc.wait(timeout=10)
        assert wait_until(lambda: all(gone(w.pid) for w in workers), 10), "worker left behind"
        assert proc.returncode == -sig
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_worker_killed_mid_scan_costs_time_not_tokens(
    big_history: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Its lost batch and everything left are read here; the totals stay exact."""
    root, expected = big_history
    engine = engine_over(root, tmp_path / "cache")
    scan = threading.Thread(target=engine.scan)
    scan.start()
    workers: list[psutil.Process] = []
    try:
        assert wait_until(lambda: bool(workers.extend(scan_workers(os.getpid())) or workers), 30)
        assert scan.is_alive(), "killed during the scan"
        for worker in workers:
            worker.kill()
    finally:
        scan.join(timeout=60)
    assert not scan.is_alive()
    snap = engine.snapshot()
    fresh = [s for s in snap.sessions if s.cwd != "/home/dev/work/fresh"]
    assert {k: sum(getattr(s.tokens, k) for s in fresh) for k in KINDS} == {
        k: expected["totals"][k] for k in KINDS
    }


def test_batches_of_many_small_files_do_not_stall_the_workers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch is sent while the worker writes the last one's result: a list of paths
    bigger than a pipe must not leave both sides blocked writing to each other."""
    root = tmp_path / "claude"
    expected = 0
    for n in range(6000):
        sid = str(uuid.uuid4())
        cwd = f"/home/dev/work/p{n % 40}"
        path = root / "projects" / escape_cwd(cwd) / f"{sid}.jsonl"
        write_transcript(path, sid, cwd, [response(sid, cwd, 1000 + n)])
        expected += 1000 + n
    monkeypatch.setattr(coldscan, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(coldscan, "BATCH_BYTES", 2 * 1024 * 1024)  # ~1400 paths: ~150 KB
    engine = engine_over(root, tmp_path / "cache")
    calls = merges(engine)
    scan = threading.Thread(target=engine.scan, args=(lambda: None,), daemon=True)  # live
    scan.start()
    scan.join(timeout=60)
    assert not scan.is_alive(), "the scan stalled"
    assert len(calls) >= 2 and all(calls), "batches came back from a worker"
    assert sum(s.tokens.total for s in engine.snapshot().sessions) == expected


FORKED_SCAN = """
import json, os, sys
from pathlib import Path
import tokentop.engine.coldscan as coldscan
from tokentop.engine.engine import Engine
from tokentop.pricing import PriceTable
from tokentop.sources.claude_code import ClaudeCodeSource

forked = []
start = coldscan.Forked.start
def spy():
    child = start()
    forked.append(child is not None)
    return child
coldscan.Forked.start = spy
engine = Engine([ClaudeCodeSource(config_dirs=[Path(sys.argv[1])])], PriceTable.default().cost)
engine.scan()
snap = engine.snapshot()
kinds = ("input", "output", "cache_read", "cache_write")
generated = [s for s in snap.sessions if s.cwd != "/home/dev/work/fresh"]  # the app test's
totals = {k: sum(getattr(s.tokens, k) for s in generated) for k in kinds}
print(json.dumps({"forked": forked, "totals": totals}))
"""


def test_a_single_threaded_process_forks_its_workers_and_counts_the_same(
    big_history: tuple[Path, dict[str, Any]],
) -> None:
    """`sessions` and a first-run app fork their workers (no interpreter to start); the
    totals are those of the spawned workers' and of a plain read: the expected ones."""
    root, expected = big_history
    out = subprocess.run(
        [sys.executable, "-c", FORKED_SCAN, str(root)], capture_output=True, text=True, check=True
    )
    result = json.loads(out.stdout)
    assert result["forked"] == [True], "one worker beside the reading parent, forked"
    assert result["totals"] == {k: expected["totals"][k] for k in KINDS}


EARLY_WORKERS = """
import json, os, sys, threading
from pathlib import Path
from tokentop.engine.coldscan import Forked
from tokentop.engine.engine import Engine
from tokentop.pricing import PriceTable
from tokentop.sources.claude_code import ClaudeCodeSource

def engine(cache: str) -> Engine:
    source = ClaudeCodeSource(config_dirs=[Path(sys.argv[1])])
    return Engine([source], PriceTable.default().cost, cache_dir=Path(cache))

first = engine(sys.argv[2])
first.spawn_scan_workers()
kinds = [type(w.proc).__name__ for w in first._early]
first.start()
first.scanned.wait(120)
first.stop()
first.save_cache()
second = engine(sys.argv[2])  # its cache file now exists: not a first run
second.spawn_scan_workers()
stop = threading.Event()
threading.Thread(target=stop.wait, daemon=True).start()
third = engine(sys.argv[3])  # a first run, but another thread runs: no fork, no spawn
third.spawn_scan_workers()
stop.set()
print(json.dumps({"first": kinds, "second": len(second._early), "third": len(third._early)}))
"""


def test_a_first_run_forks_its_workers_before_the_engine_starts(
    big_history: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Ready when the scan starts; never on a warm start, never by starting interpreters."""
    root, _ = big_history
    out = subprocess.run(
        [sys.executable, "-c", EARLY_WORKERS, str(root), str(tmp_path / "a"), str(tmp_path / "b")],
        capture_output=True, text=True, check=True, timeout=180,
    )  # fmt: skip
    result = json.loads(out.stdout)
    expected = min(coldscan.MAX_WORKERS, os.cpu_count() or 1) if (os.cpu_count() or 1) > 1 else 0
    assert result == {"first": ["Forked"] * expected, "second": 0, "third": 0}
