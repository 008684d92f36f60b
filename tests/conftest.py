"""Fixtures shared by the tests that start real processes."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

GEN = Path(__file__).parent / "gen_claude_corpus.py"


@pytest.fixture(scope="session")
def big_history(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """About 45 MB of Claude Code history (52 sessions of 200 responses), made once: more
    than the cold scan's parallel threshold, so its workers run."""
    import tokentop.engine.coldscan as coldscan

    out = tmp_path_factory.mktemp("big") / "claude"
    subprocess.run(
        [sys.executable, str(GEN), str(out), "--sessions", "52", "--turns", "200"],
        check=True, capture_output=True,
    )  # fmt: skip
    expected = json.loads((out / "expected.json").read_text())
    size = sum(p.stat().st_size for p in (out / "projects").rglob("*.jsonl"))
    assert size >= 40 * 1024 * 1024 > coldscan.PARALLEL_MIN_BYTES
    return out, expected


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


@pytest.fixture(scope="session", autouse=True)
def hook_runtime_dir() -> Iterator[str]:
    """A runtime folder of the run's own, so the hook servers that hook calls start (any test
    that runs `python -m tokentop.commands.hook`) are this run's, and stopped at its end."""
    import shutil
    import tempfile

    from hook_server_helpers import stop_servers_in

    folder = tempfile.mkdtemp(prefix="tt-run-", dir="/tmp")  # short: a socket path is < 108
    saved = os.environ.get("XDG_RUNTIME_DIR")
    os.environ["XDG_RUNTIME_DIR"] = folder
    yield folder
    stop_servers_in(folder)
    if saved is None:
        del os.environ["XDG_RUNTIME_DIR"]
    else:
        os.environ["XDG_RUNTIME_DIR"] = saved
    shutil.rmtree(folder, ignore_errors=True)
