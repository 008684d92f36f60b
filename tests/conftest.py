"""Fixtures shared by the tests that start real processes."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator

import pytest


@pytest.fixture
def groups() -> Iterator[list[int]]:
    """Process groups to SIGKILL at teardown, whatever happens (SIGCONT first, in case one
    was paused)."""
    pgids: list[int] = []
    yield pgids
    for pgid in pgids:
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
