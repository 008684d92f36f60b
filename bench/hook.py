"""Time `tokentop hook` answering a PreToolUse event, whole process, on a ~50 MB transcript.

Claude Code runs the hook before every tool call, as `python -m tokentop.commands.hook` with
the event's JSON on stdin. The first call reads the whole transcript; the next ones read only
what was appended (nothing here), from the hook's per-session state.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

TURNS = 12000
"""Responses in the session: ~53 MB of transcript with the shared generator."""


@dataclass
class HookResult:
    first_ms: float | None = None
    warm_ms: list[float] = field(default_factory=list)
    transcript_mb: float = 0.0
    note: str = ""


def transcript(corpus_dir: Path, generator: Path) -> Path:
    """One long session, generated once and kept beside the corpora."""
    root = corpus_dir / f"hook-t{TURNS}"
    if not (root / "expected.json").is_file():
        cmd = [sys.executable, str(generator), str(root), "--sessions", "1", "--turns", str(TURNS)]
        subprocess.run([*cmd, "--seed", "5"], check=True, stdout=subprocess.DEVNULL)
    return next((root / "projects").rglob("*.jsonl"))


def run_hook(env: dict[str, str], corpus_dir: Path, generator: Path, reps: int) -> HookResult:
    """The first call and `reps` warm calls, each a new `python -m tokentop.commands.hook`."""
    path = transcript(corpus_dir, generator)
    event = {
        "session_id": path.stem,
        "transcript_path": str(path),
        "cwd": str(path.parent),
        "hook_event_name": "PreToolUse",
        "tool_name": "Bash",
        "tool_input": {"command": "ls"},
    }
    stdin = json.dumps(event).encode()
    argv = [sys.executable, "-m", "tokentop.commands.hook"]
    result = HookResult(transcript_mb=path.stat().st_size / 2**20)
    for i in range(reps + 1):
        start = time.perf_counter()
        done = subprocess.run(argv, input=stdin, env=env, capture_output=True, check=False)
        took = (time.perf_counter() - start) * 1000
        if done.returncode not in (0, 2):
            result.note = f"exit {done.returncode}: {done.stderr.decode(errors='replace')[-160:]}"
            return result
        if i == 0:
            result.first_ms = took
        else:
            result.warm_ms.append(took)
    return result


def print_hook(result: HookResult, max_ms: float) -> None:
    print(f"hook (PreToolUse, {result.transcript_mb:.0f} MB transcript, whole process)")
    if result.first_ms is None or not result.warm_ms:
        print(f"  not available {result.note}")
        return
    warm = statistics.median(result.warm_ms)
    verdict = "PASS" if warm < max_ms else "FAIL"
    print(
        f"  first {result.first_ms:.0f} ms; warm median {warm:.0f} ms "
        f"({min(result.warm_ms):.0f}-{max(result.warm_ms):.0f}, {len(result.warm_ms)} calls)  "
        f"{verdict} (< {max_ms:.0f} ms)"
    )
