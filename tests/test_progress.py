"""The progress line of `report` and `summary`: drawn on a terminal only, erased when done."""

from __future__ import annotations

import io
import os
import pty
import time

import pytest

from tokentop.commands import progress


def test_a_slow_block_shows_its_status_on_a_terminal_and_erases_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(progress, "DELAY_S", 0.05)
    monkeypatch.setattr(progress, "EVERY_S", 0.02)
    master, slave = pty.openpty()
    terminal = os.fdopen(slave, "w")
    with terminal, progress.status_line(lambda: "reading 3/10 files", terminal):
        time.sleep(0.2)
    shown = read_all(master)
    assert "reading 3/10 files" in shown
    assert shown.endswith("\r\x1b[K")  # the line is gone once the work is done


def read_all(master: int) -> str:
    """Everything written to the terminal, once its other end is closed (EIO after)."""
    chunks = []
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    return b"".join(chunks).decode()


def test_nothing_is_drawn_when_quick_or_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(progress, "DELAY_S", 0.05)
    piped = io.StringIO()
    with progress.status_line(lambda: "reading", piped):
        time.sleep(0.1)
    assert piped.getvalue() == ""
    master, slave = pty.openpty()
    with os.fdopen(slave, "w") as terminal:
        with progress.status_line(lambda: "reading", terminal):
            pass  # done before the delay
        os.set_blocking(master, False)
        with pytest.raises(BlockingIOError):
            os.read(master, 100)
    os.close(master)
