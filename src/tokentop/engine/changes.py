"""Discovery of transcript files and a feed of paths that changed.

Two mechanisms feed the same callback: watchfiles (inotify/FSEvents, low latency) and a slow
stat sweep as a safety net for filesystems where notifications are missed (network mounts,
some containers). Roots that do not exist yet are covered by a flat watch on their nearest
existing ancestor, so `~/.codex/sessions` appearing after launch is picked up.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import msgspec
import watchfiles

from tokentop.clock import spaced
from tokentop.sources.base import walk_files

log = logging.getLogger(__name__)

IsRelevant = Callable[[Path], bool]
OnChanges = Callable[[set[Path]], None]
_ANCESTOR_STEP_MS = 200
"""Root creation is rare and not latency-critical; a slower step halves idle wake-ups."""
SWEEP_SHARE = 0.005
"""The most of one core the stat sweep may take: it is a safety net behind the watcher."""
_Signature = tuple[int, int, int]
"""(size, mtime_ns, inode): any difference means the sweep reports the file."""


def discover(roots: Iterable[Path], is_transcript: IsRelevant) -> list[Path]:
    """All transcript files under the roots, sorted by name; missing or unreadable roots are
    skipped."""
    found: set[Path] = set()
    for root in roots:
        if os.path.isfile(root):
            if is_transcript(root):
                found.add(root)
            continue
        found.update(path for path in walk_files(root, ("",)) if is_transcript(path))
    return sorted(found, key=str)  # Path's own order compares parts: slow on 10k's


class WatchPlan(msgspec.Struct, frozen=True):
    """Which paths to watch: existing roots recursively, ancestors of missing roots flat."""

    roots: tuple[str, ...] = ()
    ancestors: tuple[str, ...] = ()
    missing: tuple[str, ...] = ()


def make_plan(roots: Iterable[Path]) -> WatchPlan:
    """Split roots into those that exist and the nearest existing ancestors of the others."""
    present: set[str] = set()
    missing: set[str] = set()
    for root in roots:
        path = os.path.abspath(root)
        (present if os.path.exists(path) else missing).add(path)
    ancestors = {_nearest_existing(path) for path in missing}
    return WatchPlan(_outermost(present), tuple(sorted(ancestors)), tuple(sorted(missing)))


def _nearest_existing(path: str) -> str:
    while not os.path.isdir(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def _outermost(paths: set[str]) -> tuple[str, ...]:
    """Drop roots nested in another root, so no folder is watched twice."""
    kept: list[str] = []
    for path in sorted(paths):
        if not any(path.startswith(outer.rstrip(os.sep) + os.sep) for outer in kept):
            kept.append(path)
    return tuple(kept)


def _snapshot(roots: Iterable[str], is_relevant: IsRelevant) -> dict[Path, _Signature]:
    """Stat every relevant file under the roots; vanished-mid-walk files are left out."""
    signatures: dict[Path, _Signature] = {}
    for path in discover((Path(root) for root in roots), is_relevant):
        try:
            st = os.stat(path)
        except OSError:
            continue
        signatures[path] = (st.st_size, st.st_mtime_ns, st.st_ino)
    return signatures


class _PlanStop:
    """A watchfiles stop_event: set on shutdown or when the plan it was started for is stale."""

    def __init__(self, feed: ChangeFeed, generation: int) -> None:
        self._feed = feed
        self._generation = generation

    def is_set(self) -> bool:
        return self._feed.stopping or self._feed.generation != self._generation


class ChangeFeed:
    """Reports batches of dirty paths to `on_changes`, from background daemon threads.

    `on_changes(paths)` is called from the watcher threads (`tokentop-watch`,
    `tokentop-watch-ancestors`) and the sweep thread (`tokentop-sweep`), one call at a time
    (calls are serialized by a lock). It must not block for long; hand off to the engine.
    Deleted files are reported too; reading them tells the caller they are gone.

    Idle cost, measured: step 50 ms ≈ 0.13 % of a core (25 ms ≈ 0.3 %); latency after a write
    is about step + debounce. `stop()` returns within one step.

    Start the feed *before* the cold scan: the sweep's baseline is taken in `start()` (or is
    empty, and the first sweep reports every file), so no change after `start()` returns is
    lost, and a path reported during the scan just reads nothing new.
    """

    def __init__(
        self,
        roots: Iterable[Path],
        is_relevant: IsRelevant,
        on_changes: OnChanges,
        *,
        debounce_ms: int = 50,
        step_ms: int = 50,
        rust_timeout_ms: int = 2_000,
        sweep_interval: float = 5.0,
        force_polling: bool | None = None,
    ) -> None:
        self.roots = tuple(Path(root) for root in roots)
        self.is_relevant = is_relevant
        self.on_changes = on_changes
        self.debounce_ms = debounce_ms
        self.step_ms = step_ms
        self.rust_timeout_ms = rust_timeout_ms
        self.sweep_interval = sweep_interval
        self.force_polling = force_polling
        self.generation = 0
        self.stopping = False
        self.last_error = ""
        """The latest watcher or callback failure, for display; the feed keeps running."""
        self._plan = WatchPlan()
        self._seen: dict[Path, _Signature] = {}
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._emit_lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def plan(self) -> WatchPlan:
        return self._plan

    def start(self, baseline: bool = True) -> None:
        """Take the sweep baseline and start the threads (once; a stopped feed stays stopped).

        Without a `baseline` the first sweep reports every file: for a caller to whom an
        unchanged file costs a stat (the engine), that is cheaper than walking the whole
        tree before its first view."""
        if self._threads:
            return
        self._plan = make_plan(self.roots)
        self._seen = _snapshot(self._plan.roots, self.is_relevant) if baseline else {}
        targets = {
            "tokentop-watch": lambda: self._watch_loop(recursive=True),
            "tokentop-watch-ancestors": lambda: self._watch_loop(recursive=False),
            "tokentop-sweep": self._sweep_loop,
        }
        for name, target in targets.items():
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop all threads, waiting at most about `timeout` seconds in total."""
        self.stopping = True
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._threads = [thread for thread in self._threads if thread.is_alive()]

    def is_alive(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    # -- watcher threads ------------------------------------------------------------------

    def _watch_loop(self, recursive: bool) -> None:
        while not self.stopping:
            with self._changed:
                generation, plan = self.generation, self._plan
            paths = plan.roots if recursive else plan.ancestors
            if paths and not self._watch(paths, recursive, generation):
                self._stop.wait(self.sweep_interval)  # retry later; the sweep covers the gap
                continue
            self._wait_for_new_plan(generation)

    def _watch(self, paths: tuple[str, ...], recursive: bool, generation: int) -> bool:
        """Run watchfiles until stopped or the plan changes; False if it failed."""
        keep = self._keep_change if recursive else self._keep_ancestor_change
        try:
            for changes in watchfiles.watch(
                *paths,
                watch_filter=keep,
                debounce=self.debounce_ms,
                step=self.step_ms if recursive else max(self.step_ms, _ANCESTOR_STEP_MS),
                stop_event=_PlanStop(self, generation),
                rust_timeout=self.rust_timeout_ms,
                raise_interrupt=False,
                recursive=recursive,
                force_polling=self.force_polling,
                ignore_permission_denied=True,
            ):
                self._on_watch_changes(changes, recursive)
        except Exception as exc:  # a vanished root or an inotify limit: the sweep still runs
            self._note_error(f"file watcher stopped: {exc}")
            return False
        return True

    def _wait_for_new_plan(self, generation: int) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.stopping or self.generation != generation)

    def _keep_change(self, change: watchfiles.Change, path: str) -> bool:
        if self.is_relevant(Path(path)):
            return True
        return change == watchfiles.Change.added and os.path.isdir(path)

    def _keep_ancestor_change(self, change: watchfiles.Change, path: str) -> bool:
        prefix = path.rstrip(os.sep) + os.sep
        return any(root == path or root.startswith(prefix) for root in self._plan.missing)

    def _on_watch_changes(
        self, changes: set[tuple[watchfiles.Change, str]], recursive: bool
    ) -> None:
        if not recursive:
            self._replan()
            return
        dirty: set[Path] = set()
        for change, raw in changes:
            path = Path(raw)
            if self.is_relevant(path):
                dirty.add(path)
            elif change == watchfiles.Change.added:
                # files written into a new folder before its watch was added
                dirty.update(discover([path], self.is_relevant))
        self._emit(dirty)

    # -- plan changes and the sweep -------------------------------------------------------

    def _replan(self) -> None:
        """Restart the watchers if roots appeared or vanished; report files in new roots."""
        new_plan = make_plan(self.roots)
        with self._changed:
            old_plan = self._plan
            if new_plan == old_plan:
                return
            self._plan = new_plan
            self.generation += 1
            self._changed.notify_all()
        appeared = [Path(root) for root in new_plan.roots if root not in old_plan.roots]
        self._emit(set(discover(appeared, self.is_relevant)))

    def _sweep_loop(self) -> None:
        """Sweep every `sweep_interval`, or less often on a tree so big that a sweep would
        cost more than `SWEEP_SHARE` of a core (10k files take ~0.12 s of CPU here)."""
        wait = self.sweep_interval
        while not self._stop.wait(wait):
            wait = spaced(self._sweep_safely, SWEEP_SHARE, self.sweep_interval)

    def _sweep_safely(self) -> None:
        try:
            self.sweep_once()
        except Exception as exc:  # never let the safety net die
            self._note_error(f"sweep failed: {exc}")

    def sweep_once(self) -> set[Path]:
        """Rescan the roots; report and return files that are new, changed or vanished."""
        self._replan()
        current = _snapshot(self._plan.roots, self.is_relevant)
        previous, self._seen = self._seen, current
        dirty = {path for path, sig in current.items() if previous.get(path) != sig}
        dirty.update(previous.keys() - current.keys())
        self._emit(dirty)
        return dirty

    def _emit(self, paths: set[Path]) -> None:
        if not paths or self.stopping:
            return
        with self._emit_lock:
            try:
                self.on_changes(paths)
            except Exception as exc:  # the engine's bug must not kill the feed
                self._note_error(f"change handler failed: {exc!r}")

    def _note_error(self, message: str) -> None:
        if message != self.last_error:  # a persistent failure is logged once, not every retry
            log.warning("%s", message)
        self.last_error = message
