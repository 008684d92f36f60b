"""Time `tokentop hook` answering a PreToolUse event, whole process, on a ~50 MB transcript.

Claude Code runs the hook before every tool call, as `python -m tokentop.commands.hook` with
the event's JSON on stdin. That command hands the call to this user's resident hook server
when one runs, and answers in-process (and starts one) when none does. Measured here, each
call a new process, back to back:
- the session's first call: no server yet, no per-session state: it reads the whole
  transcript in-process, and starts the server;
- warm calls through the server (the target);
- warm calls in-process (`TOKENTOP_HOOK_SERVER=off`: what every call cost before the server);
- calls that find no server (stopped before each): in-process, plus starting one, and how
  long after that call the new server is ready;
- the server's memory: its own and its waiting workers' unique set sizes, summed.
The runtime folder (the server's socket) is a private one of the bench's, so no server of
yours is used or stopped.

    python bench/hook.py [--calls 12] [--corpus-dir /tmp/tokentop-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

TURNS = 12000
"""Responses in the session: ~53 MB of transcript with the shared generator."""
START_CALLS = 5
"""Calls timed with no server running (each starts one, which must get ready first)."""


@dataclass
class HookResult:
    first_ms: float | None = None
    warm_ms: list[float] = field(default_factory=list)
    """Through the hook server."""
    alone_ms: list[float] = field(default_factory=list)
    """In-process (TOKENTOP_HOOK_SERVER=off)."""
    start_ms: list[float] = field(default_factory=list)
    """No server running: in-process, and a server started for the next call."""
    ready_ms: list[float] = field(default_factory=list)
    """From the end of such a call until the new server's socket exists."""
    server_mb: float = 0.0
    transcript_mb: float = 0.0
    note: str = ""


def transcript(corpus_dir: Path, generator: Path) -> Path:
    """One long session, generated once and kept beside the corpora."""
    root = corpus_dir / f"hook-t{TURNS}"
    if not (root / "expected.json").is_file():
        cmd = [sys.executable, str(generator), str(root), "--sessions", "1", "--turns", str(TURNS)]
        subprocess.run([*cmd, "--seed", "5"], check=True, stdout=subprocess.DEVNULL)
    return next((root / "projects").rglob("*.jsonl"))


class HookBench:
    """Calls of `python -m tokentop.commands.hook` in one isolated environment."""

    def __init__(self, env: dict[str, str], path: Path) -> None:
        self.runtime = tempfile.mkdtemp(prefix="tt-bench-", dir="/tmp")  # a socket path < 108
        self.env = env | {"XDG_RUNTIME_DIR": self.runtime}
        event = {
            "session_id": path.stem, "transcript_path": str(path), "cwd": str(path.parent),
            "hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {"command": "ls"},
        }  # fmt: skip
        self.stdin = json.dumps(event).encode()

    def call(self, **extra: str) -> float:
        """One call's wall time in ms; raises RuntimeError when it failed."""
        argv = [sys.executable, "-m", "tokentop.commands.hook"]
        start = time.perf_counter()
        done = subprocess.run(argv, input=self.stdin, env=self.env | extra, capture_output=True)
        took = (time.perf_counter() - start) * 1000
        if done.returncode not in (0, 2) or b"tokentop hook:" in done.stderr:
            raise RuntimeError(f"exit {done.returncode}: {done.stderr.decode()[-160:]}")
        return took

    def served(self) -> bool:
        """Whether a call is answered by the server (an in-process one imports msgspec)."""
        argv = [sys.executable, "-X", "importtime", "-m", "tokentop.commands.hook"]
        done = subprocess.run(argv, input=self.stdin, env=self.env, capture_output=True)
        return b"| msgspec\n" not in done.stderr

    def socket(self) -> Path | None:
        return next(Path(self.runtime, "tokentop").glob("hook-*.sock"), None)

    def wait_ready(self, timeout: float = 30.0) -> float:
        """ms until the server's socket exists."""
        start = time.perf_counter()
        while self.socket() is None and time.perf_counter() - start < timeout:
            time.sleep(0.005)
        return (time.perf_counter() - start) * 1000

    def stop(self) -> None:
        argv = [sys.executable, "-m", "tokentop.commands.hook", "stop"]
        subprocess.run(argv, env=self.env, capture_output=True, check=False)
        for marker in Path(self.runtime, "tokentop").glob("hook-*.lock"):
            os.utime(marker, (0, 0))  # the next call may start a server at once (no backoff)

    def server_mb(self) -> float:
        try:
            import psutil
        except ImportError:
            return 0.0
        procs = [p for p in psutil.process_iter(["cmdline"]) if self._serves(p.info["cmdline"])]
        return sum(p.memory_full_info().uss for p in procs) / 2**20

    def _serves(self, cmdline: list[str] | None) -> bool:
        return (
            bool(cmdline)
            and "tokentop.commands.hook_server" in cmdline
            and any(
                arg.startswith(self.runtime)
                for arg in cmdline  # type: ignore[union-attr]
            )
        )

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.runtime, ignore_errors=True)


def run_hook(env: dict[str, str], corpus_dir: Path, generator: Path, reps: int) -> HookResult:
    """The session's first call, then `reps` warm calls through the server and in-process,
    and START_CALLS calls that find no server."""
    path = transcript(corpus_dir, generator)
    result = HookResult(transcript_mb=path.stat().st_size / 2**20)
    bench = HookBench(env, path)
    try:
        result.first_ms = bench.call()
        bench.wait_ready()
        if not bench.served():
            result.note = "the hook server did not answer"
        result.warm_ms = [bench.call() for _ in range(reps)]
        result.server_mb = bench.server_mb()
        result.alone_ms = [bench.call(TOKENTOP_HOOK_SERVER="off") for _ in range(reps)]
        for _ in range(min(reps, START_CALLS)):
            bench.stop()
            result.start_ms.append(bench.call())
            result.ready_ms.append(bench.wait_ready())
    except RuntimeError as error:
        result.note = str(error)
    finally:
        bench.close()
    return result


def print_hook(result: HookResult, max_ms: float) -> None:
    print(f"hook (PreToolUse, {result.transcript_mb:.0f} MB transcript, whole process)")
    if result.first_ms is None or not result.warm_ms or not result.alone_ms:
        print(f"  not available {result.note}")
        return
    warm = statistics.median(result.warm_ms)
    verdict = "PASS" if warm < max_ms and not result.note else "FAIL"
    print(f"  first call of the session (in-process, starts the server): {result.first_ms:.0f} ms")
    target = f"{verdict} (< {max_ms:.0f} ms)"
    print(f"  warm, through the hook server: {_spread(result.warm_ms)}  {target}")
    print(f"  warm, in-process (TOKENTOP_HOOK_SERVER=off): {_spread(result.alone_ms)}")
    if result.start_ms:
        ready = statistics.median(result.ready_ms)
        print(f"  no server running (in-process, starts one): {_spread(result.start_ms)}; "
              f"the server ready {ready:.0f} ms after")  # fmt: skip
    print(f"  hook server memory (USS, server and waiting workers): {result.server_mb:.1f} MB")
    if result.note:
        print(f"  note: {result.note}")


def _spread(values: list[float]) -> str:
    return (
        f"median {statistics.median(values):.0f} ms "
        f"({min(values):.0f}-{max(values):.0f}, {len(values)} calls)"
    )


def main() -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from report import HOOK_MAX_MS
    from run import DEFAULT_GENERATOR, precompile_tokentop
    from tools import isolated_env

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--calls", type=int, default=12, help="warm calls timed each way")
    ap.add_argument("--corpus-dir", type=Path, default=Path("/tmp/tokentop-bench"))
    ap.add_argument("--generator", type=Path, default=DEFAULT_GENERATOR)
    args = ap.parse_args()
    precompile_tokentop()
    with tempfile.TemporaryDirectory(prefix="tokentop-bench-") as tmp:
        load = " ".join(f"{x:.2f}" for x in os.getloadavg())
        print(f"cores {os.cpu_count()}, load average before: {load}")
        result = run_hook(isolated_env(Path(tmp)), args.corpus_dir, args.generator, args.calls)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print_hook(result, HOOK_MAX_MS)
    return 0 if not result.note else 1


if __name__ == "__main__":
    sys.exit(main())
