"""Wires sources, tailer, ledger and watcher into one headless engine (no Textual here).

One lock serialises file reads and ledger updates; listeners receive immutable snapshots
from the engine thread, coalesced so a burst of appends produces at most `max_hz` of them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Container, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tokentop.clock import Clock, SystemClock, spaced
from tokentop.engine import state_cache as cache_mod
from tokentop.engine.failure import EngineFailure, failure_of
from tokentop.engine.inbox import Inbox
from tokentop.engine.ledger import CostFn, Ledger
from tokentop.engine.ledger_state import LedgerState
from tokentop.engine.resume import file_records, resume, tracked_from
from tokentop.engine.tail import Tailer, TailState
from tokentop.engine.tracked import Tracked, unchanged
from tokentop.model import Event, EventRun, LedgerSnapshot, SessionKey
from tokentop.sources.base import Source, Walk, name_text, prefixes, transcript_names, under
from tokentop.sources.wholefile import WholeFileParser

if TYPE_CHECKING:
    from tokentop.engine.coldscan import ScanProgress, Worker

Listener = Callable[[LedgerSnapshot], None]


QUIET_SHARE = 0.01
"""With nothing appended, a snapshot (and every listener's judging of it) every `tick_s`, or
less often when that would take more than this share of a core: a history of 10k sessions
costs ~70 ms a snapshot here. Appends are still published at once."""
BUSY_SHARE = 0.1
"""While files grow, snapshots come at most `max_hz` a second, and no closer than keeps
their judging within this share of a core (10k sessions: ~0.7 s apart)."""


class Engine:
    """Reads transcripts incrementally and keeps a ledger; usable headless or under the UI."""

    def __init__(
        self,
        sources: Sequence[Source],
        cost_fn: CostFn,
        *,
        clock: Clock | None = None,
        cache_dir: Path | None = None,
        debounce_ms: int = 50,
        sweep_s: float = 5.0,
        max_hz: float = 10.0,
        tick_s: float = 1.0,
        workers: int = 2,
    ) -> None:
        self.sources = list(sources)
        self.cost_fn = cost_fn
        self.clock = clock or SystemClock()
        self.debounce_ms = debounce_ms
        self.sweep_s = sweep_s
        self.min_interval = 1.0 / max_hz
        self.tick_s = tick_s
        """With nothing appended, listeners still get a snapshot this often (or less, see
        QUIET_SHARE): rates decay, stalls show and quiet sessions end on time (the Watchdog
        judges each one)."""
        self.workers = workers
        self.ledger = Ledger(cost_fn)
        self.roots = [(s, r) for s in self.sources for r in s.roots()]
        self._root_prefixes = [(s, prefixes([r])) for s, r in self.roots]
        self.files: dict[str, Tracked] = {}
        self.bytes_read = 0
        self.cache_note = ""
        self._cache_path = cache_mod.cache_path(cache_dir, self.root_names()) if cache_dir else None
        self._lock = threading.RLock()
        self._listeners: list[Listener] = []
        self._pending: set[Path] = set()
        self._inbox = Inbox()
        """Events from no file (telemetry), applied by the engine thread: see ingest()."""
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._early: list[Worker] | None = None
        """Cold scan workers started before the engine thread (see spawn_scan_workers)."""
        self._feed: object | None = None
        self._last_snapshot: LedgerSnapshot | None = None
        self._saved: tuple[int, int, int] | None = None
        self.progress: ScanProgress | None = None
        self.scanned = threading.Event()
        """Set once the first full scan is done: what was on disk at start is counted."""
        """How far the cold scan is, while one runs."""
        self.failure: EngineFailure | None = None
        """Why the live loop stopped, if it failed; cleared by restart()."""
        self.file_errors = 0
        self._failure_listeners: list[Callable[[EngineFailure], None]] = []
        self.cache_id = ""
        """The save id of the cache this engine's state matches ("" when it matches none)."""

    # -- setup -----------------------------------------------------------------------------

    def root_names(self) -> list[str]:
        return [f"{s.name}:{r}" for s, r in self.roots]

    def load_cache(self) -> None:
        """Resume from the cache if it matches these roots; otherwise the next scan is cold."""
        if self._cache_path is None:
            return
        resumed, self.cache_note = resume(self._cache_path, self.sources, self.cost_fn)
        if resumed is None:
            return
        with self._lock:
            self.ledger, self.files, self.cache_id = resumed
            self._saved = self.change_mark()

    def change_mark(self) -> tuple[int, int, int]:
        """What `save_cache` compares to tell whether anything changed since a save (a
        forked child's save is of the state at its mark: `saved_elsewhere`)."""
        return (self.ledger.version, self.bytes_read, len(self.files))

    def file_records(self) -> list[cache_mod.FileRecord]:
        with self._lock:
            return file_records(self.files.values())

    def absorb(
        self, ledger: LedgerState, records: list[cache_mod.FileRecord], bytes_read: int
    ) -> bool:
        """Fold in what another process read (see coldscan); False if it must be re-read."""
        files = tracked_from(records, self.sources)
        return files is not None and self._fold(ledger, files, bytes_read)

    def adopt(self, batch: Engine) -> bool:
        """Fold in files read into an engine of their own (a cold scan's batch read here);
        False if they must be read again by this one (see Ledger.merge)."""
        return self._fold(batch.ledger, batch.files, batch.bytes_read, batch.file_errors)

    def _fold(
        self,
        ledger: LedgerState | Ledger,
        files: dict[str, Tracked],
        bytes_read: int,
        file_errors: int = 0,
    ) -> bool:
        with self._lock:
            if not self.ledger.merge(ledger, self.clock.now()):
                return False
            self.files.update(files)
            self.bytes_read += bytes_read
            self.file_errors += file_errors
        return True

    def save_cache(self, save_id: str = "") -> None:
        """Persist offsets and counters, unless nothing changed since they were loaded/saved.
        `save_id`: the id the save carries (a forked child's, which its parent knows)."""
        if self._cache_path is None or self._saved == self.change_mark():
            return
        records = self.file_records()
        with self._lock:
            save_id = save_id or os.urandom(16).hex()
            ledger = self.ledger.cache_state(self.clock.now())
            data = cache_mod.CacheFile(
                cache_mod.CACHE_VERSION, self.root_names(), records, ledger, save_id=save_id
            )
            try:
                cache_mod.save(self._cache_path, data, self.ledger.save_index)
                self._saved = self.change_mark()
                self.cache_id = save_id
            except (OSError, ValueError) as exc:  # ValueError: the base index cut meanwhile
                self.cache_note = f"cache not saved: {getattr(exc, 'strerror', None) or exc}"

    def saved_elsewhere(self, mark: tuple[int, int, int], save_id: str) -> None:
        """A forked child saved the state this engine had at `mark`, as `save_id`. The
        dedupe tables here are not rebased on the index it wrote: a later save here
        writes the whole index again (correct, only slower)."""
        self._saved, self.cache_id = mark, save_id

    # -- reading ---------------------------------------------------------------------------

    @property
    def cache_path(self) -> Path | None:
        return self._cache_path

    def find_transcripts(self, known: Container[str] = ()) -> list[Path]:
        """Transcripts under the roots whose path is not in `known` (the scan passes the
        files it follows, so a warm restart builds no Path for the thousands it knows).

        Symlinked folders are followed (once each), and a file reached by a second path
        (or already followed under another one) is left out, so it counts once. A folder
        that cannot be listed is followed as a file with one bad line saying why.
        """
        found: list[Path] = []
        with self._lock:
            items = list(self.files.items())
        seen = {(t.tailer.state.dev, t.tailer.state.inode) for p, t in items if p in known}
        for source, root in self.roots:
            if root.exists() and not root.is_dir():  # a file named as a root: a proxy log
                if str(root) not in known and source.is_transcript(root):
                    found.append(root)
                continue
            wanted = transcript_names(source)
            walk = Walk(getattr(source, "suffixes", (".jsonl",)), seen, wanted)
            found += [Path(name) for name in walk.names(str(root)) if name not in known]
            for folder, reason in walk.unreadable:
                if folder not in known and folder not in self.files:
                    tracked = Tracked(source, Tailer(folder), source.new_parser(Path(folder)))
                    tracked.parser.bad(f"cannot list folder {name_text(folder)}: {reason}")
                    tracked.tailer.state.failed = True
                    with self._lock:
                        self.files[folder] = tracked
        return found

    def scan(
        self, publish: Callable[[], None] | None = None, spawned: Sequence[Worker] = ()
    ) -> bool:
        """Read every known and newly found file up to its end; True if anything changed.

        New files go through the cold scan (coldscan): newest first, `publish` called on
        the way so a first view shows before old history is read. `spawned` are its
        workers, if started early (see `_live`).
        """
        try:
            changed = self.process(list(self.files))
            fresh = list(dict.fromkeys(self.find_transcripts(self.files)))
        except BaseException:
            if spawned:
                from tokentop.engine.coldscan import close_all

                close_all(spawned)
            raise
        if fresh or spawned:  # the scan closes workers it has no use for
            from tokentop.engine.coldscan import ColdScan  # (a restart seldom needs it)

            changed |= ColdScan(self, fresh, publish, spawned).run()
        return changed

    def stopping(self) -> bool:
        return self._stop.is_set()

    def process(self, paths: Iterable[Path | str]) -> bool:
        changed = False
        with self._lock:
            for path in paths:
                try:
                    changed |= self._process_one(path)
                except Exception as exc:  # one bad file must not stop the others
                    changed |= self._file_failed(str(path), exc)
        return changed

    def _file_failed(self, key: str, exc: Exception) -> bool:
        """Count a file whose reading raised like a bad line, with the reason."""
        self.file_errors += 1
        tracked = self.files.get(key)
        if tracked is None:
            return False
        tracked.parser.bad(f"read failed: {type(exc).__name__}: {exc}"[:200])
        return True

    def _process_one(self, name: Path | str) -> bool:
        key = str(name)
        tracked = self.files.get(key)
        if tracked is None:
            path = Path(name)
            source = self._source_for(path)
            if source is None:
                return False
            tracked_path = getattr(source, "tracked_path", None)  # e.g. a SQLite -wal file
            if tracked_path is not None and (real := tracked_path(path)) != path:
                return self._process_one(real)
            tracked = Tracked(source, Tailer(TailState(path=key)), source.new_parser(path))
            self.files[key] = tracked
        if isinstance(tracked.parser, WholeFileParser):
            return self._refresh(tracked, tracked.parser, key)
        if unchanged(tracked.tailer, key):
            return False
        changed = False
        while True:
            result = tracked.tailer.read_new()
            if result.reset:
                tracked.parser = tracked.source.new_parser(Path(key))
            if result.skipped_lines:
                tracked.parser.bad(result.error or "over-long line skipped", result.skipped_lines)
                changed = True
            elif result.error:
                tracked.parser.last_error = result.error
            if result.data:
                self.bytes_read += len(result.data)
                events: list[Event | EventRun] = []
                tracked.parser.feed_runs(result.data, events)
                self.ledger.apply(events, key, self._arrival())
                changed = True
            if not result.more:
                return changed

    def _refresh(self, tracked: Tracked, parser: WholeFileParser, key: str) -> bool:
        """A rewritten file (whole JSON, SQLite): the parser re-reads it if it changed."""
        events: list[Event] = []
        if not parser.refresh(events):
            return False
        tracked.tailer.state.offset = parser.size
        self.ledger.apply(events, key, self._arrival())
        return True

    def _source_for(self, path: Path) -> Source | None:
        name = str(path)
        for source, root in self._root_prefixes:
            if under(name, root) and source.is_transcript(path):
                return source
        return None

    # -- events from no file (telemetry) ---------------------------------------------------

    def ingest(self, events: Sequence[Event], origin: str) -> None:
        """Queue events that came from no file (e.g. OTLP from another machine); any thread.

        The engine thread applies them after its scan, so a cache loaded at start can't
        replace them, and notifies at its usual coalesced rate. `origin` stands in for a
        file name in the session's `files`.
        """
        self._inbox.put(events, origin)
        self._wake.set()

    @property
    def backlog(self) -> int:
        """Ingested events not applied yet (a receiver refuses more past a limit)."""
        return self._inbox.backlog

    def apply_inbox(self) -> bool:
        """Apply queued ingested events; True if a counter changed (the engine thread calls
        it; a caller without a running engine may too)."""
        inbox = self._inbox.take()
        with self._lock:
            now = self._arrival()
            return sum(self.ledger.apply(events, origin, now) for origin, events in inbox) > 0

    def _arrival(self) -> float:
        """When lines read now arrived, for a response without a timestamp of its own (its
        burn is placed there); none for history read by the first scan."""
        return self.clock.now() if self.scanned.is_set() else 0.0

    def session_files(self, key: str) -> list[str]:
        """The files a session was read from (`key` is `str(SessionKey)`); [] if unknown.

        Read without the engine lock, which a cold scan holds for seconds: a dict lookup
        and a list copy are atomic under the GIL, and a file added meanwhile shows next time.
        """
        state = self.ledger.state.sessions.get(key)
        return list(state.files) if state is not None else []

    def minutes(self, key: SessionKey) -> dict[int, tuple[float, float]]:
        """A session's (tokens, cost) per minute index, copied under the lock: a summary
        built on another thread reads them while this one applies events."""
        with self._lock:
            state = self.ledger.state.sessions.get(str(key))
            return {} if state is None else {m: (t, c) for m, t, c in state.minute_items()}

    # -- snapshots -------------------------------------------------------------------------

    def snapshot(self, at: float | None = None, calls_since: float | None = None) -> LedgerSnapshot:
        """The current state, with burn rates evaluated at the clock's now (or `at`: the
        hook judges the instant its tool call happened). `calls_since`: a one-off view for a
        command's output, see SnapshotCache.take; it is not `last_snapshot`."""
        with self._lock:
            health = {k: t.health() for k, t in self.files.items()}
            now = self.clock.now() if at is None else at
            snap = self.ledger.snapshot(now, health, calls_since)
            if calls_since is None:
                self._last_snapshot = snap
            return snap

    @property
    def last_snapshot(self) -> LedgerSnapshot | None:
        """The latest snapshot taken (None before the first)."""
        return self._last_snapshot

    def add_listener(self, fn: Listener) -> None:
        self._listeners.append(fn)

    def _notify(self) -> None:
        snap = self.snapshot()
        for fn in list(self._listeners):
            fn(snap)

    # -- live mode -------------------------------------------------------------------------

    def start(self) -> None:
        """Scan in the background, then follow changes until stop()."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name="tokentop-engine", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        feed = self._feed
        if feed is not None:
            feed.stop()  # type: ignore[attr-defined]
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _on_changes(self, paths: set[Path]) -> None:
        """Called from the watcher's threads; the engine thread does the reading."""
        with self._lock:
            self._pending.update(paths)
        self._wake.set()

    def add_failure_listener(self, fn: Callable[[EngineFailure], None]) -> None:
        self._failure_listeners.append(fn)

    def restart(self) -> None:
        """Start again from the cache (or a cold scan) after the live loop failed."""
        self.stop()
        with self._lock:
            self.ledger = Ledger(self.cost_fn)
            self.files = {}
            self._saved = None
            self.failure = None
        self._stop.clear()
        self.start()

    def spawn_scan_workers(self) -> None:
        """On a first run (no cache file at all) the whole history is read, and is usually
        big: fork the cold scan's workers now, so they are ready when the scan starts. Only
        while this process has a single thread (a front-end calls it before starting any);
        else, or if the history turns out small, the scan starts what it needs. Once."""
        from tokentop.engine.coldscan import PARALLEL_MIN_BYTES, Worker, worker_count

        if self._early is not None:
            return
        self._early = []
        if self._cache_path is None or self._cache_path.exists():
            return
        for _ in range(worker_count(self, PARALLEL_MIN_BYTES, live=True)):
            if (worker := Worker.spawn(self, fork_only=True)) is not None:
                self._early.append(worker)

    def _run(self) -> None:
        try:
            self._live()
        except Exception as exc:  # said out loud: the front-ends show it and react
            self.failure = failure_of(exc)
            for fn in list(self._failure_listeners):
                fn(self.failure)
        finally:
            feed, self._feed = self._feed, None
            if feed is not None:
                feed.stop()  # type: ignore[attr-defined]

    def _live(self) -> None:
        from tokentop.engine.changes import ChangeFeed
        from tokentop.engine.coldscan import close_all

        started, self._early = self._early or [], []
        try:
            self.load_cache()
            feed = ChangeFeed(
                [r for _, r in self.roots],
                lambda p: self._source_for(p) is not None,
                self._on_changes,
                debounce_ms=self.debounce_ms,
                sweep_interval=self.sweep_s,
            )
            self._feed = feed
            feed.start(baseline=False)  # before the scan: nothing written during it is missed
        except BaseException:
            close_all(started)
            raise
        self.scan(self._notify, started)
        if self._stop.is_set():
            return  # an unfinished scan is not saved: the next start resumes cold
        self.scanned.set()
        self._notify()
        last_save = time.monotonic()
        last_notify = time.monotonic()
        quiet_every = self.tick_s
        while not self._stop.is_set():
            self._wake.wait(self.tick_s)
            self._wake.clear()
            if self._stop.is_set():
                break
            with self._lock:
                pending, self._pending = self._pending, set()
            changed = bool(pending) and self.process(pending)
            if self.apply_inbox() or changed:
                pause = spaced(self._notify, BUSY_SHARE, self.min_interval)
                last_notify = time.monotonic()
                self._stop.wait(pause)  # stop() ends it
            elif time.monotonic() - last_notify >= quiet_every:
                quiet_every = spaced(self._notify, QUIET_SHARE, self.tick_s)
                last_notify = time.monotonic()
            if time.monotonic() - last_save > 30:
                self.save_cache()
                last_save = time.monotonic()
        self.save_cache()
