"""Run one command and measure its wall time and the peak RSS of its whole process tree."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

RSS_INTERVAL_S = 0.01
"""How often the RSS of the known processes is summed (cheap: one statm read each)."""
TREE_INTERVAL_S = 0.1
"""How often the process tree is rescanned (a scan reads all of /proc, ~4 ms)."""


@dataclass(frozen=True)
class RunResult:
    """One timed run: wall time, peak tree RSS, exit status and where stdout went."""

    wall_s: float
    peak_rss: int
    returncode: int
    stdout_path: Path
    stderr_tail: str
    cpu_s: float = 0.0
    """User + system CPU of the process and the children it waited for (`wait4`)."""


class TreeRssSampler(threading.Thread):
    """Polls the summed RSS of a process and its descendants until stopped.

    The kernel's ru_maxrss covers only the largest single process, so a tool that runs
    a wrapper and a worker at once (ccusage's npm launcher, a multiprocess scan) needs
    this sum; the two are combined in `measure`.
    """

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self._root = psutil.Process(pid)
        self._procs: dict[int, psutil.Process] = {pid: self._root}
        self._done = threading.Event()
        self.peak = 0

    def finish(self) -> None:
        self._done.set()
        self.join()

    def run(self) -> None:
        next_scan = 0.0
        while not self._done.is_set():
            if time.perf_counter() >= next_scan:
                self._rescan()
                next_scan = time.perf_counter() + TREE_INTERVAL_S
            self.peak = max(self.peak, self._sum_rss())
            self._done.wait(RSS_INTERVAL_S)

    def _rescan(self) -> None:
        try:
            children = self._root.children(recursive=True)
        except psutil.Error:
            return
        for child in children:
            self._procs.setdefault(child.pid, child)

    def _sum_rss(self) -> int:
        total = 0
        for pid, proc in list(self._procs.items()):
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                del self._procs[pid]
        return total


def measure(argv: list[str], env: dict[str, str], stdout_path: Path) -> RunResult:
    """Run argv to completion; wall time ends when the process exits, before it is reaped."""
    with stdout_path.open("wb") as out, stdout_path.with_suffix(".err").open("w+b") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        sampler = TreeRssSampler(proc.pid)
        sampler.start()
        os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)
        wall = time.perf_counter() - start
        sampler.finish()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read()[-2000:].decode("utf-8", "replace")
    peak = max(sampler.peak, usage.ru_maxrss * 1024)
    cpu = usage.ru_utime + usage.ru_stime
    return RunResult(wall, peak, proc.returncode, stdout_path, tail, cpu)
