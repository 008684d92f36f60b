"""Polling helpers for the tests that start real processes."""

from __future__ import annotations

import time
from collections.abc import Callable

import psutil


def wait_until(condition: Callable[[], bool], timeout: float = 20.0, step: float = 0.02) -> bool:
    """Poll `condition` until it holds (True) or `timeout` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


def default_sigint() -> None:
    """preexec_fn: Ctrl+C as a terminal delivers it. A test run in the background (`&`, some
    CI runners) starts with SIGINT ignored, and children inherit that; Python then never
    raises KeyboardInterrupt, and a Ctrl+C test would test nothing."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def psutil_status(pid: int) -> str:
    """psutil's status of `pid`, or "gone" when there is no such process."""
    try:
        return str(psutil.Process(pid).status())
    except psutil.NoSuchProcess:
        return "gone"


def gone(pid: int) -> bool:
    """Exited (a zombie waiting to be reaped counts as exited)."""
    return psutil_status(pid) in ("gone", psutil.STATUS_ZOMBIE)
