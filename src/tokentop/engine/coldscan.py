"""The cold scan: files newest first, with snapshots on the way, on two cores when it pays.

Sessions active in the last hour are what a user opens tokentop for, so files are read
newest first (by mtime) and snapshots are published on the way (`PUBLISH_S`); older
history fills in behind. When the fresh files are big enough, worker processes read
batches from the same queue: from the other end (oldest first) beside a headless command,
which reads too, or from the front beside a live UI, whose process then only merges (its
core is shared with the UI). Each worker has two batches in flight, so it never waits for
this side to decode, and batches shrink near the end so the workers finish together. Each
batch comes back as a ledger that is merged, or, if any dedupe key or tool call is already
known here (a resumed transcript repeats responses), read again here, which keeps the
totals exact whatever the split.

The worker is a plain `python -m tokentop.engine.coldscan` child with only stdin and stdout as
pipes (`subprocess`, `close_fds`), at a lower priority (`WORKER_NICE`). multiprocessing is
not used: its resource tracker passes `sys.stderr.fileno()` to the child, which is -1 under a
running Textual app and makes every start fail (`bad value(s) in fds_to_keep`). The child
holds no other end of its pipes, asks the kernel to kill it when its parent dies
(PR_SET_PDEATHSIG) and exits on EOF, so no signal that ends the parent can leave it behind.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Protocol

import msgspec

from tokentop.engine.ledger_state import LedgerState
from tokentop.engine.state_cache import FileRecord

if TYPE_CHECKING:
    from tokentop.engine.engine import Engine

PARALLEL_MIN_BYTES = 24 * 1024 * 1024
"""Below this, starting a process costs more than it saves."""
STEP_BYTES = 1024 * 1024
"""What this process reads between checks for stop, merges and snapshots."""
HEADLESS_STEP_BYTES = 4 * STEP_BYTES
"""The same beside a headless command, which publishes nothing on the way: each step is
read into an engine of its own and merged, at a fixed cost that small steps multiply."""
BATCH_BYTES = 12 * 1024 * 1024
"""What the worker reads per batch: each batch costs an export and a merge."""
IN_FLIGHT = 2
"""Batches sent to a worker ahead of its results: one being read, one waiting."""
MAX_WORKERS = 4
"""Each worker holds a batch's tables; more cores than this rarely pay on one disk."""
LEAD_S = 0.15
"""Live, this process reads the newest files itself this long, while workers start."""
WORKER_NICE = 10
"""Beside a live UI, workers yield the CPU to it and to the merging thread, which then answer
at once; the scan's total work is the same, so it ends no later. Beside a headless command
(whose user waits for its output) they run at its priority: niced, they lost half their
core to anything else running on a shared machine."""
RATE_WINDOW_S = 3.0
PUBLISH_S = 0.4
"""Snapshots in the scan's first second: the newest sessions show as they are read."""
LATER_PUBLISH_S = 1.0
"""Then: each judges every session read so far (and redraws), taking CPU from the scan."""
FIRST_PUBLISH_S = 0.0


class WorkerResult(msgspec.Struct):
    ledger: LedgerState
    files: list[FileRecord]
    bytes_read: int


class ScanProgress(msgspec.Struct, frozen=True):
    """How far a cold scan is, for the header."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    elapsed_s: float
    eta_s: float | None = None
    """At the rate of the last few seconds (startup would make an overall rate too slow)."""


Item = tuple[Path, int, float]
"""A file to read: path, size, mtime."""


class _Queue:
    """Files newest first, taken from the front (or, `newest=False`, from the back)."""

    def __init__(self, files: list[Item]) -> None:
        self.items = deque(files)
        self.left = sum(item[1] for item in files)
        self.lock = threading.Lock()

    def take(self, limit: int, newest: bool) -> list[Item]:
        """Up to `limit` bytes (at least one file)."""
        batch: list[Item] = []
        total = 0
        with self.lock:
            while self.items and (not batch or total < limit):
                item = self.items.popleft() if newest else self.items.pop()
                batch.append(item)
                total += item[1]
            self.left -= total
        return batch

    def share(self, readers: int) -> int:
        """A worker's next batch: `BATCH_BYTES`, shrinking near the end so the last
        batches end together instead of one worker reading on alone."""
        return max(STEP_BYTES, min(BATCH_BYTES, self.left // (IN_FLIGHT * readers + 1)))


def newest_first(paths: Sequence[Path]) -> list[Item]:
    """(path, size, mtime), newest first; files that vanished sort last."""
    items: list[Item] = []
    for path in paths:
        try:
            st = path.stat()
            items.append((path, st.st_size, st.st_mtime))
        except OSError:
            items.append((path, 0, 0.0))
    items.sort(key=lambda item: -item[2])
    return items


def worker_count(engine: Engine, bytes_total: int, live: bool) -> int:
    """One process per other core; with snapshots to publish (a live front-end) one per
    core, because then this process's core is shared with the UI or the consumer."""
    cores = os.cpu_count() or 1
    if engine.workers < 2 or cores < 2 or bytes_total < PARALLEL_MIN_BYTES:
        return 0
    try:
        pickle.dumps((engine.sources, engine.cost_fn))
    except Exception:
        return 0  # a test's lambda cost function, say: read here instead
    return min(MAX_WORKERS, cores if live else cores - 1)


class ColdScan:
    """Reads `fresh` files into `engine`, publishing snapshots on the way."""

    def __init__(
        self,
        engine: Engine,
        fresh: Sequence[Path],
        publish: Callable[[], None] | None = None,
        spawned: Sequence[Worker] = (),
    ) -> None:
        self.engine = engine
        self.publish = publish
        files = newest_first(fresh)
        self.queue = _Queue(files)
        self.files_total = len(files)
        self.bytes_total = self.queue.left
        self.files_done = 0
        self.bytes_done = 0
        self.started = time.monotonic()
        self.step_bytes = STEP_BYTES if publish is not None else HEADLESS_STEP_BYTES
        self.workers = list(spawned)
        """Workers started before the files were listed (see `Engine._live`): used as far as
        `run` wants any, else closed; it starts the rest."""
        self._marks: deque[tuple[float, int]] = deque([(self.started, 0)])

    def run(self) -> bool:
        """Read everything (or until the engine stops); True if anything changed."""
        live = self.publish is not None
        wanted = worker_count(self.engine, self.bytes_total, live)
        close_all(self.workers[wanted:])
        del self.workers[wanted:]
        nice = WORKER_NICE if live else 0
        while len(self.workers) < wanted and (new := Worker.spawn(self.engine, nice=nice)):
            self.workers.append(new)
        for worker in self.workers:
            worker.attach(self.queue, newest=live, readers=len(self.workers) + (not live))
        try:
            changed = self._loop()
        finally:
            close_all(self.workers)
        if not self.engine.stopping():
            for worker in self.workers:
                changed |= self._merge(worker.take_results())
        self.engine.progress = None
        return changed

    def _loop(self) -> bool:
        """Read steps newest first, merge what the workers send, publish on the way.

        Live, with workers, this process reads only for its first `LEAD_S` (the newest
        files, while the workers start) and then merges: its core is shared with the UI, and
        the workers read newest first too."""
        changed = False
        next_publish = time.monotonic() + FIRST_PUBLISH_S
        lead_until = time.monotonic() + LEAD_S if self.publish is not None else float("inf")
        published = 0
        while not self.engine.stopping():
            for worker in self.workers:
                changed |= self._merge(worker.take_results())
            led = time.monotonic() > lead_until and any(w.busy for w in self.workers)
            step = [] if led else self.queue.take(self.step_bytes, newest=True)
            if step:
                changed |= self._read_here(step)
                self._done(step)
            elif not any([w.wait_idle(0.02) for w in self.workers]) and not self.queue.items:
                break
            publish = self.publish
            if publish and time.monotonic() >= next_publish and self.files_done > published:
                publish()  # a first view as soon as anything is read
                now = time.monotonic()
                pause = PUBLISH_S if now - self.started < 1.0 else LATER_PUBLISH_S
                next_publish, published = now + pause, self.files_done
        return changed

    def _read_here(self, step: list[Item]) -> bool:
        """Read a step into an engine of its own and merge it, as a worker's batch is: the
        new keys are looked up in a small dict, and this engine's tables get them hashed."""
        from tokentop.engine.engine import Engine

        engine = self.engine
        batch = Engine(engine.sources, engine.cost_fn, clock=engine.clock, workers=1)
        changed = batch.process(item[0] for item in step)
        if not engine.adopt(batch):
            changed = engine.process(item[0] for item in step)
        return changed

    def _merge(self, results: list[tuple[list[Item], WorkerResult | None]]) -> bool:
        """Fold in the worker's batches; a refused (or lost) batch is read here instead."""
        changed = False
        for batch, result in results:
            ok = result is not None and self.engine.absorb(
                result.ledger, result.files, result.bytes_read
            )
            if not ok:
                changed |= self.engine.process(item[0] for item in batch)
            changed = True
            self._done(batch)
        return changed

    def _done(self, batch: list[Item]) -> None:
        self.files_done += len(batch)
        self.bytes_done += sum(item[1] for item in batch)
        self.engine.progress = self.progress()

    def progress(self) -> ScanProgress:
        now = time.monotonic()
        marks = self._marks
        marks.append((now, self.bytes_done))
        while len(marks) > 2 and now - marks[1][0] > RATE_WINDOW_S:
            marks.popleft()
        (then, before), eta = marks[0], None
        if now - then > 0.2 and self.bytes_done > before:
            rate = (self.bytes_done - before) / (now - then)
            eta = (self.bytes_total - self.bytes_done) / rate
        return ScanProgress(
            self.files_done, self.files_total, self.bytes_done, self.bytes_total,
            now - self.started, eta,
        )  # fmt: skip


def close_all(workers: Sequence[Worker]) -> None:
    """Stop workers that will read nothing more (or nothing at all)."""
    for worker in workers:
        worker.close()


class Child(Protocol):
    """What a worker needs of its child process: `subprocess.Popen`, or `Forked`."""

    @property
    def stdin(self) -> IO[bytes] | None: ...
    @property
    def stdout(self) -> IO[bytes] | None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


class Forked:
    """A worker forked from this process (Linux, and only while it has a single thread:
    a fork copies no other thread, and a lock another thread held would stay held)."""

    def __init__(self, pid: int, stdin: IO[bytes], stdout: IO[bytes]) -> None:
        self.pid, self.stdin, self.stdout = pid, stdin, stdout
        self._status: int | None = None

    @classmethod
    def start(cls) -> Forked | None:
        if not fork_is_safe():
            return None
        child_in, to_child = os.pipe()
        from_child, child_out = os.pipe()
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            for fd in (child_in, to_child, from_child, child_out):
                os.close(fd)
            raise
        if pid == 0:  # the child: never returns into the caller
            code = 1
            try:
                detach_child(keep=(child_in, child_out))
                serve(os.fdopen(child_in, "rb"), os.fdopen(child_out, "wb"), parent)
                code = 0
            finally:
                os._exit(code)
        os.close(child_in)
        os.close(child_out)
        return cls(pid, os.fdopen(to_child, "wb"), os.fdopen(from_child, "rb"))

    def kill(self) -> None:
        if self._status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self._status is None:
            pid, status = os.waitpid(self.pid, 0 if deadline is None else os.WNOHANG)
            if pid:
                self._status = os.waitstatus_to_exitcode(status)
            elif deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired([str(self.pid)], timeout or 0.0)
            else:
                time.sleep(0.01)
        return self._status


def fork_is_safe() -> bool:
    """Linux, and this process has a single thread: a fork copies no other thread, and a
    lock another thread held would stay held in the child."""
    return sys.platform.startswith("linux") and len(os.listdir("/proc/self/task")) == 1


def detach_child(keep: tuple[int, ...]) -> None:
    """In a forked child: nothing of the parent's but the two pipes and the loaded modules
    (stdio goes to /dev/null, every other descriptor is closed), and Ctrl+C's default."""
    import gc

    gc.freeze()  # the parent's objects: never traversed, so their pages stay shared
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    keep_all = sorted({0, 1, 2, *keep})
    limit = min(os.sysconf("SC_OPEN_MAX"), 1 << 16)
    for low, high in zip(keep_all, [*keep_all[1:], limit], strict=True):
        os.closerange(low + 1, high)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


class Worker:
    """The child process and the thread that feeds it batches and collects its ledgers."""

    def __init__(self, proc: Child) -> None:
        self.proc = proc
        self.queue = _Queue([])
        self.newest = True
        self.readers = 1
        self.cond = threading.Condition()
        self.results: list[tuple[list[Item], WorkerResult | None]] = []
        self.busy = True
        self.thread = threading.Thread(target=self._feed, name="tokentop-coldscan", daemon=True)

    @classmethod
    def spawn(
        cls, engine: Engine, fork_only: bool = False, nice: int = WORKER_NICE
    ) -> Worker | None:
        """Start the child and send it the sources; it reads nothing until `attach`.

        A process with no other thread yet forks it (`Forked`): the child then has every
        module loaded already, where a new interpreter spends ~0.1 s of CPU importing.
        `fork_only`: None rather than a new interpreter."""
        cmd = [sys.executable, "-m", "tokentop.engine.coldscan", str(os.getpid())]
        try:
            proc: Child | None = Forked.start()
            if proc is None and fork_only:
                return None
            proc = proc or subprocess.Popen(
                cmd,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                close_fds=True,
            )
        except OSError:
            return None
        worker = cls(proc)
        try:
            assert proc.stdin is not None
            _send(proc.stdin, pickle.dumps((engine.sources, engine.cost_fn, nice)))
        except OSError:
            worker.close()
            return None
        return worker

    def attach(self, queue: _Queue, *, newest: bool, readers: int) -> None:
        """Start feeding the child batches from `queue`, shared by `readers` processes."""
        self.queue, self.newest, self.readers = queue, newest, readers
        self.thread.start()

    def _feed(self) -> None:
        """Keep `IN_FLIGHT` batches sent ahead, so the child starts its next batch the moment
        it has written a result instead of waiting for this thread to decode it."""
        stdin, stdout = self.proc.stdin, self.proc.stdout
        assert stdin is not None and stdout is not None
        sent: deque[list[Item]] = deque()
        try:
            while True:
                while len(sent) < IN_FLIGHT and (
                    batch := self.queue.take(self.queue.share(self.readers), self.newest)
                ):
                    sent.append(batch)
                    if not self._send_batch(stdin, batch):
                        break  # the child is gone: the receive below says so
                if not sent:
                    break
                batch = sent.popleft()
                result = self._receive(stdout)
                with self.cond:
                    self.results.append((batch, result))
                    if result is None:  # the child is gone: what it held is read here
                        self.results.extend((lost, None) for lost in sent)
                        sent.clear()
                    self.cond.notify_all()
                if result is None:
                    break
        finally:
            with self.cond:
                self.busy = False
                self.cond.notify_all()

    @staticmethod
    def _send_batch(stdin: IO[bytes], batch: list[Item]) -> bool:
        try:
            _send(stdin, msgspec.msgpack.encode([os.fsencode(item[0]) for item in batch]))
        except Exception:
            return False
        return True

    @staticmethod
    def _receive(stdout: IO[bytes]) -> WorkerResult | None:
        try:
            packed = _recv(stdout)
            encoded = _recv(stdout)
            if packed is None or encoded is None:
                return None
            result = msgspec.msgpack.decode(encoded, type=WorkerResult)
        except Exception:  # whatever went wrong, the batch is read here instead
            return None
        result.ledger.packed = packed
        return result

    def take_results(self) -> list[tuple[list[Item], WorkerResult | None]]:
        with self.cond:
            results, self.results = self.results, []
        return results

    def wait_idle(self, timeout: float) -> bool:
        """Wait a little for a result; False once the worker has nothing left to do."""
        with self.cond:
            if not self.results and self.busy:
                self.cond.wait(timeout)
            return self.busy or bool(self.results)

    def close(self) -> None:
        """Stop the child: EOF when its work is done, else kill; the thread then ends."""
        with self.queue.lock:
            self.queue.items.clear()  # only left when the scan is abandoned
        if self.proc.stdin is not None:
            with contextlib.suppress(OSError):
                self.proc.stdin.close()
        if self.busy:
            self.proc.kill()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.thread.ident is not None:
            self.thread.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


_HEADER = struct.Struct("<Q")
MAX_FRAME = 1 << 34


def _send(stream: IO[bytes], data: bytes) -> None:
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _recv(stream: IO[bytes]) -> bytes | None:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    if size > MAX_FRAME:
        return None
    data = stream.read(size)
    return data if len(data) == size else None


WORKER_NAME = b"tokentop-scan"
"""The worker's process name (`ps -o comm`, psutil's `name()`), forked or not."""


def _die_with_parent(parent: int) -> None:
    """Ask the kernel for SIGKILL when the parent dies (Linux); EOF covers the rest. Also
    names the process, so `ps` tells a worker from its parent."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig, pr_set_name = 1, 15
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
        libc.prctl(pr_set_name, ctypes.c_char_p(WORKER_NAME), 0, 0, 0)
    if os.getppid() != parent:  # it died before the request took effect
        os._exit(0)


def worker_main(parent: int) -> None:
    """The child started as `python -m tokentop.engine.coldscan`."""
    serve(sys.stdin.buffer, sys.stdout.buffer, parent)


def serve(stdin: IO[bytes], stdout: IO[bytes], parent: int) -> None:
    """The child: read batches from `stdin` until EOF, answer each with a ledger.

    A thread drains stdin as frames arrive: the parent sends the next batch while this one
    is read, and a frame bigger than the pipe would otherwise block it while this side
    blocks writing a result it is not reading yet."""
    import queue

    from tokentop.engine.engine import Engine

    _die_with_parent(parent)
    setup = _recv(stdin)
    if setup is None:
        return
    sources, cost_fn, nice = pickle.loads(setup)  # our own parent's bytes, over our own pipe
    with contextlib.suppress(OSError):
        os.nice(nice)
    frames: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()

    def drain() -> None:
        while (frame := _recv(stdin)) is not None:
            frames.put(frame)
        frames.put(None)

    threading.Thread(target=drain, name="tokentop-coldscan-in", daemon=True).start()
    while (frame := frames.get()) is not None:
        paths = [Path(os.fsdecode(p)) for p in msgspec.msgpack.decode(frame, type=list[bytes])]
        engine = Engine(sources, cost_fn, workers=1)
        engine.process(paths)
        state = engine.ledger.export(final=True)
        _send(stdout, state.packed)
        state.packed = b""
        result = WorkerResult(state, engine.file_records(), engine.bytes_read)
        _send(stdout, msgspec.msgpack.encode(result))


if __name__ == "__main__":
    worker_main(int(sys.argv[1]))
