"""`tokentop demo`: real child processes playing coding agents, so anyone can try every key.

The agents write Claude Code and Codex transcripts into a temporary root at a realistic pace:
one steady, one looping on the same failing tool call, one heading over its budget. Their
session ids are chosen here, so the session → process mapping is exact ("launched").
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import msgspec
import psutil

from tokentop.model import SessionKey
from tokentop.processes.finding import ProcessRef, launch

PREFIX = "tokentop-demo-"
MARKER = ".tokentop-demo-owner"
"""In a demo's temp root: the pid and start time of the demo that made it."""


def mark_owner(root: Path) -> None:
    with contextlib.suppress(OSError, psutil.Error):
        me = psutil.Process()
        (root / MARKER).write_text(f"{me.pid} {me.create_time()!r}\n")


def remove_stale_roots(tmp: Path) -> list[Path]:
    """Remove the temp roots of demos that ended without cleaning up (SIGKILLed): ours
    only, i.e. owned by this user, marked by a demo, whose demo process is gone."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(tmp))
    except OSError:
        return removed
    for entry in entries:
        if entry.name.startswith(PREFIX) and _stale(Path(entry.path)):
            shutil.rmtree(entry.path, ignore_errors=True)
            removed.append(Path(entry.path))
    return removed


def _stale(root: Path) -> bool:
    try:
        st = os.lstat(root)
        if not os.path.isdir(root) or os.path.islink(root) or st.st_uid != os.getuid():
            return False
        pid_text, started = (root / MARKER).read_text().split()
        pid, created = int(pid_text), float(started)
    except (OSError, ValueError):
        return False  # not a demo root of ours (or not one we can tell): left alone
    try:
        return abs(psutil.Process(pid).create_time() - created) > 0.01  # a reused pid
    except psutil.NoSuchProcess:
        return True
    except psutil.Error:
        return False


class DemoAgentSpec(msgspec.Struct, frozen=True):
    kind: str
    behavior: str
    project: str
    seed: int


DEFAULT_FLEET = (
    DemoAgentSpec("claude", "steady", "/home/demo/webshop", 1),
    DemoAgentSpec("claude", "loop", "/home/demo/payments-api", 2),
    DemoAgentSpec("codex", "overbudget", "/home/demo/ml-pipeline", 3),
    DemoAgentSpec("codex", "steady", "/home/demo/cli-tools", 4),
)


class DemoFleet:
    """Starts the demo agents and guarantees they die with the app (stop() and atexit)."""

    def __init__(
        self,
        root: Path | None = None,
        specs: tuple[DemoAgentSpec, ...] = DEFAULT_FLEET,
        interval: float = 0.5,
    ) -> None:
        self._own_root = root is None
        if root is None:
            remove_stale_roots(Path(tempfile.gettempdir()))
            root = Path(tempfile.mkdtemp(prefix=PREFIX))
            mark_owner(root)
        self.root = root
        self.specs = specs
        self.interval = interval
        self.children: list[subprocess.Popen[bytes]] = []
        self.refs: dict[SessionKey, ProcessRef] = {}

    @property
    def claude_root(self) -> Path:
        return self.root / "claude"

    @property
    def codex_root(self) -> Path:
        return self.root / "codex"

    def start(self) -> None:
        for spec in self.specs:
            session_id = str(uuid.UUID(int=uuid.uuid4().int))
            agent_root = self.claude_root if spec.kind == "claude" else self.codex_root
            argv = [
                sys.executable, "-m", "tokentop.demo.agent",
                "--kind", spec.kind, "--behavior", spec.behavior,
                "--root", str(agent_root), "--cwd", spec.project,
                "--interval", str(self.interval), "--seed", str(spec.seed),
                "--session-id", session_id,
            ]  # fmt: skip
            proc, ref = launch(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            self.children.append(proc)
            self.refs[SessionKey(spec.kind, session_id)] = msgspec.structs.replace(
                ref, cwd=spec.project, agent=spec.kind
            )

    def stop(self) -> None:
        """Kill every demo agent's process group, paused or not, then remove the temp root."""
        for proc in self.children:
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.killpg(proc.pid, sig)
                except (ProcessLookupError, PermissionError):
                    break
        for proc in self.children:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self.children.clear()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> DemoFleet:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
