"""A progress line on a terminal for commands that can take a while (`report`, `summary`).

A first `report` reads the whole history; without a word for seconds it looks hung. The line
appears only on a TTY and only once the work has taken `DELAY_S`, is redrawn in place, and
is erased when the work is done, so output piped to a file or a script never sees it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from tokentop.engine.engine import Engine

DELAY_S = 1.0
"""Work shorter than this shows nothing."""
EVERY_S = 0.25
_ERASE = "\r\x1b[K"


def scan_status(engine: Engine) -> str:
    """What the engine's scan is doing, in numbers only (no untrusted text)."""
    p = engine.progress
    if p is None:
        return "tokentop: reading transcripts…"
    mb_done, mb_total = p.bytes_done / 2**20, p.bytes_total / 2**20
    eta = f", about {p.eta_s:.0f} s left" if p.eta_s is not None else ""
    return (
        f"tokentop: reading transcripts: {p.files_done}/{p.files_total} files, "
        f"{mb_done:.0f}/{mb_total:.0f} MB{eta}"
    )


@contextmanager
def progress_line(engine: Engine, stream: TextIO) -> Iterator[None]:
    """Show the engine's scan progress on `stream` while the block runs (TTY only)."""
    with status_line(lambda: scan_status(engine), stream):
        yield


@contextmanager
def status_line(status: Callable[[], str], stream: TextIO) -> Iterator[None]:
    """Redraw `status()` on `stream` every EVERY_S after DELAY_S, if it is a terminal."""
    if not _is_tty(stream):
        yield
        return
    done = threading.Event()
    shown = threading.Event()

    def draw() -> None:
        if done.wait(DELAY_S):
            return
        while True:
            stream.write(_ERASE + status())
            stream.flush()
            shown.set()
            if done.wait(EVERY_S):
                return

    thread = threading.Thread(target=draw, name="tokentop-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=1.0 + EVERY_S)
        if shown.is_set():
            stream.write(_ERASE)
            stream.flush()


def _is_tty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
