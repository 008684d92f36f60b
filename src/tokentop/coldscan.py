"""A cold scan on two cores: a child process reads about half the project folders.

Parsing and counting are CPU-bound Python, so a second process is the only way to use the
second core. Files are split by project folder, because a resumed or subagent transcript
repeats responses of files in its own folder; the ledgers are then merged, and if any
dedupe key turns out to be in both halves the child's half is read again sequentially,
which keeps the totals exact whatever the split.
"""

from __future__ import annotations

import os
import pickle
import threading
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from tokentop.cache import FileRecord
from tokentop.ledger import CostFn
from tokentop.ledger_state import LedgerState

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from tokentop.engine import Engine
    from tokentop.sources.base import Source

PARALLEL_MIN_BYTES = 24 * 1024 * 1024
"""Below this, starting a process costs more than it saves."""


class WorkerResult(msgspec.Struct):
    ledger: LedgerState
    files: list[FileRecord]
    bytes_read: int


def project_groups(
    paths: Sequence[Path], roots: Sequence[Path], sizes: dict[Path, int]
) -> list[list[Path]]:
    """Files grouped by whole project folder, the largest groups first."""
    groups: dict[Path, list[Path]] = defaultdict(list)
    for path in paths:
        groups[_project_dir(path, roots)].append(path)
    return sorted(groups.values(), key=lambda g: -sum(sizes[p] for p in g))


def _project_dir(path: Path, roots: Sequence[Path]) -> Path:
    for root in roots:
        if path.is_relative_to(root):
            rel = path.relative_to(root)
            return root / rel.parts[0] if len(rel.parts) > 1 else root
    return path.parent


def scan_parallel(engine: Engine, fresh: Sequence[Path]) -> set[Path]:
    """Read `fresh` files with a child process sharing the work; returns the paths done.

    Both processes claim project folders, largest first, from a shared counter until none
    is left, so they finish together whatever each folder costs (bytes are a poor guide:
    per-line work dominates) and however busy each core is.
    """
    sizes = {p: _size(p) for p in fresh}
    if sum(sizes.values()) < PARALLEL_MIN_BYTES or (os.cpu_count() or 1) < 2:
        return set()
    try:
        pickle.dumps((engine.sources, engine.cost_fn))
    except Exception:
        return set()  # a test's lambda cost function, say: read sequentially instead
    groups = project_groups(fresh, [r for _, r in engine.roots], sizes)
    mine: set[Path] = set()

    def claim_and_read(claim: Callable[[], int]) -> None:
        while (index := claim()) < len(groups):
            engine.process(groups[index])
            mine.update(groups[index])

    blobs = _run_child(engine.sources, engine.cost_fn, groups, claim_and_read)
    if blobs is None:
        return mine
    result = msgspec.msgpack.decode(blobs.pop(), type=WorkerResult)
    result.ledger.packed = blobs.pop()  # the only reference: the merge drops it once read
    if not engine.absorb(result.ledger, result.files, result.bytes_read):
        return mine
    return set(fresh)


def _run_child(
    sources: Sequence[Source],
    cost_fn: CostFn,
    groups: list[list[Path]],
    meanwhile: Callable[[Callable[[], int]], None],
) -> list[bytes] | None:
    """Run `meanwhile(claim)` here while a child reads the groups it claims; returns the
    child's packed dedupe tables and its encoded `WorkerResult`, as two messages so neither
    side ever holds the tables twice."""
    # fork is fast and safe while this is the only thread (the `sessions` command); under
    # the live app other threads exist, and forking them is unsafe, so spawn instead.
    import multiprocessing  # only a cold scan pays for this import

    method = "fork" if threading.active_count() == 1 else "spawn"
    ctx: Any = multiprocessing.get_context(method)
    counter = ctx.Value("i", 0)
    receiver, sender = ctx.Pipe(duplex=False)
    child = ctx.Process(
        target=_child_main, args=(sources, cost_fn, groups, counter, sender), daemon=True
    )
    child.start()
    sender.close()
    try:
        meanwhile(partial(_claim, counter))
        return [receiver.recv_bytes(), receiver.recv_bytes()]
    except (EOFError, OSError):
        return None
    finally:
        child.join(timeout=5)
        if child.is_alive():
            child.kill()
        receiver.close()


def _claim(counter: Any) -> int:
    """The next unclaimed group's index (past the end when all are taken)."""
    with counter.get_lock():
        index: int = counter.value
        counter.value = index + 1
    return index


def _child_main(
    sources: Sequence[Source],
    cost_fn: CostFn,
    groups: list[list[Path]],
    counter: Any,
    sender: Connection,
) -> None:
    from tokentop.engine import Engine

    engine = Engine(sources, cost_fn, workers=1)
    while (index := _claim(counter)) < len(groups):
        engine.process(groups[index])
    state = engine.ledger.export(final=True)
    sender.send_bytes(state.packed)
    state.packed = b""
    result = WorkerResult(state, engine.file_records(), engine.bytes_read)
    sender.send_bytes(msgspec.msgpack.encode(result))
    sender.close()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
