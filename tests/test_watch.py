"""Discovery and the change feed, over real folders with real watchfiles."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tokentop.engine.changes import ChangeFeed, discover, make_plan

TIMEOUT = 5.0


def is_jsonl(path: Path) -> bool:
    return path.suffix == ".jsonl"


class Collector:
    """Gathers reported paths; lets a test wait for one with a generous timeout."""

    def __init__(self) -> None:
        self.seen: set[Path] = set()
        self.threads: set[str] = set()
        self._cond = threading.Condition()

    def __call__(self, paths: set[Path]) -> None:
        with self._cond:
            self.seen |= paths
            self.threads.add(threading.current_thread().name)
            self._cond.notify_all()

    def wait_for(self, path: Path, nudge: Callable[[], None] | None = None) -> bool:
        """Wait until `path` is reported; `nudge` re-writes while waiting (watch start-up race)."""
        deadline = time.monotonic() + TIMEOUT
        with self._cond:
            while path not in self.seen:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.2))
                if nudge is not None and path not in self.seen:
                    nudge()
            return True


@pytest.fixture
def collector() -> Collector:
    return Collector()


@pytest.fixture
def feeds() -> Iterator[list[ChangeFeed]]:
    made: list[ChangeFeed] = []
    yield made
    for feed in made:
        feed.stop()


def start_feed(
    feeds: list[ChangeFeed], roots: list[Path], collector: Collector, sweep: float = 60.0
) -> ChangeFeed:
    feed = ChangeFeed(roots, is_jsonl, collector, sweep_interval=sweep)
    feeds.append(feed)
    feed.start()
    return feed


def appender(path: Path) -> Callable[[], None]:
    def write() -> None:
        with open(path, "ab") as handle:
            handle.write(b'{"x":1}\n')

    return write


def test_discover_finds_transcripts_and_skips_missing_roots(tmp_path: Path) -> None:
    root = tmp_path / "projects"
    (root / "a" / "sub").mkdir(parents=True)
    (root / "a" / "s1.jsonl").write_text("{}\n")
    (root / "a" / "sub" / "s2.jsonl").write_text("{}\n")
    (root / "a" / "notes.txt").write_text("x")
    found = discover([root, tmp_path / "missing", root / "a" / "notes.txt"], is_jsonl)
    assert found == [root / "a" / "s1.jsonl", root / "a" / "sub" / "s2.jsonl"]


def test_plan_watches_nearest_ancestor_of_missing_root(tmp_path: Path) -> None:
    present = tmp_path / "claude"
    present.mkdir()
    plan = make_plan([present, present / "nested", tmp_path / "codex" / "sessions"])
    assert plan.roots == (str(present),)
    assert plan.ancestors == (str(tmp_path), str(present))
    assert str(tmp_path / "codex" / "sessions") in plan.missing


def test_append_is_reported_by_the_watcher(
    tmp_path: Path, collector: Collector, feeds: list[ChangeFeed]
) -> None:
    path = tmp_path / "s.jsonl"
    path.write_text("{}\n")
    start_feed(feeds, [tmp_path], collector)  # sweep at 60 s: only the watcher can report
    write = appender(path)
    write()
    assert collector.wait_for(path, nudge=write)
    assert "tokentop-watch" in collector.threads


def test_irrelevant_files_are_not_reported(
    tmp_path: Path, collector: Collector, feeds: list[ChangeFeed]
) -> None:
    start_feed(feeds, [tmp_path], collector)
    noise = tmp_path / "notes.txt"
    marker = tmp_path / "marker.jsonl"
    noise.write_text("x")
    write = appender(marker)
    write()
    assert collector.wait_for(marker, nudge=write)
    assert noise not in collector.seen


def test_new_folder_and_file_after_start_are_reported(
    tmp_path: Path, collector: Collector, feeds: list[ChangeFeed]
) -> None:
    start_feed(feeds, [tmp_path], collector)
    path = tmp_path / "2026" / "11" / "23" / "rollout.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("{}\n")
    assert collector.wait_for(path, nudge=appender(path))


def test_root_created_after_start_is_reported_by_ancestor_watch(
    tmp_path: Path, collector: Collector, feeds: list[ChangeFeed]
) -> None:
    root = tmp_path / ".codex" / "sessions"
    feed = start_feed(feeds, [root], collector)
    assert feed.plan.roots == ()
    path = root / "2026" / "11" / "rollout.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("{}\n")
    assert collector.wait_for(path, nudge=appender(path))
    assert feed.plan.roots == (str(root),)


def test_sweep_reports_new_changed_and_deleted_files(
    tmp_path: Path, collector: Collector, feeds: list[ChangeFeed]
) -> None:
    old = tmp_path / "old.jsonl"
    old.write_text("{}\n")
    root = tmp_path / "later"
    feed = ChangeFeed([tmp_path, root], is_jsonl, collector, sweep_interval=3600)
    # not started: the sweep itself is tested, with an empty baseline
    assert feed.sweep_once() == {old}
    assert feed.sweep_once() == set()
    appender(old)()
    new = root / "new.jsonl"
    root.mkdir()
    new.write_text("{}\n")
    assert feed.sweep_once() == {old, new}
    old.unlink()
    assert feed.sweep_once() == {old}


def test_without_a_baseline_the_first_sweep_reports_every_file(
    tmp_path: Path, collector: Collector, feeds: list[ChangeFeed]
) -> None:
    """The engine starts its feed so: a file it read, then appended to before the watcher
    was up, is reported by that first sweep, never lost."""
    old = tmp_path / "old.jsonl"
    old.write_text("{}\n")
    feed = ChangeFeed([tmp_path], is_jsonl, collector, sweep_interval=3600)
    feeds.append(feed)
    feed.start(baseline=False)
    appender(old)()
    assert feed.sweep_once() == {old}
    assert feed.sweep_once() == set()


def test_sweep_thread_catches_changes_the_watcher_misses(
    tmp_path: Path, collector: Collector, feeds: list[ChangeFeed]
) -> None:
    feed = ChangeFeed([tmp_path / "late"], is_jsonl, collector, sweep_interval=0.1)
    feeds.append(feed)
    feed.start()
    path = tmp_path / "late" / "s.jsonl"
    path.parent.mkdir()
    path.write_text("{}\n")
    assert collector.wait_for(path)


def test_a_costly_sweep_runs_less_often(
    tmp_path: Path, collector: Collector, feeds: list[ChangeFeed], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A sweep of a huge tree waits long enough to stay within its share of a core."""
    import tokentop.engine.changes as changes

    monkeypatch.setattr(changes, "SWEEP_SHARE", 0.1)
    sweeps: list[float] = []

    def costly() -> set[Path]:
        sweeps.append(time.monotonic())
        spent = time.thread_time()
        while time.thread_time() - spent < 0.02:
            pass  # 20 ms of CPU: the next sweep waits ~0.2 s, not 0.05
        return set()

    feed = ChangeFeed([tmp_path], is_jsonl, collector, sweep_interval=0.05)
    feed.sweep_once = costly  # type: ignore[method-assign]
    feeds.append(feed)
    feed.start()
    time.sleep(1.5)
    feed.stop()
    gaps = [b - a for a, b in itertools.pairwise(sweeps)]
    assert len(sweeps) >= 2 and min(gaps) >= 0.19, gaps


def test_callback_failure_does_not_kill_the_feed(tmp_path: Path, feeds: list[ChangeFeed]) -> None:
    collector = Collector()
    calls = 0

    def flaky(paths: set[Path]) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("engine bug")
        collector(paths)

    feed = ChangeFeed([tmp_path], is_jsonl, flaky, sweep_interval=0.1)
    feeds.append(feed)
    feed.start()
    path = tmp_path / "s.jsonl"
    write = appender(path)
    write()
    assert collector.wait_for(path, nudge=write)
    assert "engine bug" in feed.last_error


def test_stop_returns_promptly_and_ends_threads(
    tmp_path: Path, collector: Collector, feeds: list[ChangeFeed]
) -> None:
    feed = start_feed(feeds, [tmp_path, tmp_path / "missing" / "root"], collector)
    assert feed.is_alive()
    started = time.monotonic()
    feed.stop()
    assert time.monotonic() - started < 2.0
    assert not feed.is_alive()


def test_unreadable_root_is_skipped_without_traceback(
    tmp_path: Path, collector: Collector, feeds: list[ChangeFeed]
) -> None:
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    feed = start_feed(feeds, [blocker / "projects", tmp_path], collector)
    assert discover([blocker / "projects"], is_jsonl) == []
    path = tmp_path / "s.jsonl"
    write = appender(path)
    write()
    assert collector.wait_for(path, nudge=write)
    assert feed.is_alive()
    assert os.path.isfile(blocker)
