"""The live path: append responses to a transcript while `tokentop watch --ndjson` runs.

Measures the delay from a completed write to the NDJSON line that reflects it, and the
CPU the watcher burns while nothing changes.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

import psutil

PROJECT = "/home/dev/work/live-bench"
SEEN_TIMEOUT_S = 5.0
STARTUP_TIMEOUT_S = 15.0


@dataclass(frozen=True)
class LiveResult:
    """Delays in ms (None = never seen) and idle CPU in percent of one core."""

    delays_ms: list[float | None]
    idle_cpu_pct: float | None
    note: str


class NdjsonReader(threading.Thread):
    """Reads the watcher's stdout and remembers when each session's counters advanced."""

    def __init__(self, stream: IO[bytes], session_id: str) -> None:
        super().__init__(daemon=True)
        self._stream = stream
        self._session_id = session_id
        self._cond = threading.Condition()
        self.responses = -1
        self.seen_at = 0.0
        self.lines = 0
        self.bad_lines = 0

    def run(self) -> None:
        for raw in iter(self._stream.readline, b""):
            now = time.perf_counter()
            count = self._responses_in(raw)
            with self._cond:
                self.lines += 1
                if count is not None:
                    self.responses = max(self.responses, count)
                    self.seen_at = now
                self._cond.notify_all()

    def _responses_in(self, raw: bytes) -> int | None:
        try:
            doc = json.loads(raw)
        except ValueError:
            self.bad_lines += 1
            return None
        if not isinstance(doc, dict) or doc.get("type") != "session":
            return None
        session: Any = doc.get("session", doc)
        if not isinstance(session, dict) or self._session_id not in json.dumps(session):
            return None
        return int(session["responses"]) if "responses" in session else None

    def wait_for(self, responses: int, timeout: float) -> float | None:
        """perf_counter time of the line that first showed `responses`, or None on timeout."""
        with self._cond:
            ok = self._cond.wait_for(lambda: self.responses >= responses, timeout)
            return self.seen_at if ok else None


class Transcript:
    """A realistic Claude Code transcript, shaped like the shared corpus generator's output."""

    def __init__(self, path: Path, seed: int) -> None:
        self.path = path
        self.rnd = random.Random(seed)
        self.session_id = str(self._uuid())
        self.parent: str | None = None
        self.responses = 0

    def _uuid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rnd.getrandbits(128))

    def _line(self, record: dict[str, Any]) -> bytes:
        uid = str(self._uuid())
        common = {"isSidechain": False, "userType": "external", "cwd": PROJECT}
        ts = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        full = {"parentUuid": self.parent, **common, "sessionId": self.session_id, **record}
        full |= {"uuid": uid, "timestamp": ts, "version": "2.0.31", "gitBranch": "main"}
        self.parent = uid
        return json.dumps(full, separators=(",", ":")).encode() + b"\n"

    def user_prompt(self) -> bytes:
        message = {"role": "user", "content": "Implement the next roadmap task."}
        return self._line({"type": "user", "message": message})

    def response(self) -> bytes:
        """One API response as two lines (text, tool_use) sharing message.id and requestId."""
        mid = "msg_01" + self._uuid().hex[:22]
        rid = "req_011" + self._uuid().hex[:21]
        out, cw = self.rnd.randint(20, 1200), self.rnd.randint(0, 3000)
        usage: dict[str, Any] = {"input_tokens": self.rnd.randint(1, 12)}
        usage["cache_creation_input_tokens"] = cw
        usage |= {"cache_read_input_tokens": 15000, "output_tokens": out}
        usage["cache_creation"] = {"ephemeral_5m_input_tokens": cw, "ephemeral_1h_input_tokens": 0}
        blocks: list[dict[str, Any]] = [
            {"type": "text", "text": "Running the tests now."},
            {
                "type": "tool_use",
                "id": "toolu_01" + self._uuid().hex[:22],
                "name": "Bash",
                "input": {"command": "pytest -q"},
            },
        ]
        lines = b""
        for i, block in enumerate(blocks):
            line_usage = usage if i == len(blocks) - 1 else {**usage, "output_tokens": 3}
            message: dict[str, Any] = {
                "id": mid,
                "type": "message",
                "role": "assistant",
                "content": [block],
            }
            message |= {"model": "claude-sonnet-4-5-20250929", "usage": line_usage}
            lines += self._line({"type": "assistant", "requestId": rid, "message": message})
        self.responses += 1
        return lines


def append(path: Path, data: bytes) -> float:
    """Append in one write and return the perf_counter time right after it completed."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    return time.perf_counter()


def tree_cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU of a process and its live descendants."""
    total = 0.0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            times = p.cpu_times()
        except psutil.Error:
            continue
        total += times.user + times.system
    return total


def idle_cpu_percent(pid: int, seconds: float) -> float:
    """CPU of the watcher tree over `seconds` of no file changes, in % of one core."""
    proc = psutil.Process(pid)
    before, start = tree_cpu_seconds(proc), time.perf_counter()
    time.sleep(seconds)
    return 100.0 * (tree_cpu_seconds(proc) - before) / (time.perf_counter() - start)


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT, then SIGTERM, then SIGKILL the watcher's own process group."""
    for sig, wait in ((signal.SIGINT, 3.0), (signal.SIGTERM, 3.0), (signal.SIGKILL, 5.0)):
        if proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(wait)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            continue


def run_live(
    tokentop: list[str], env: dict[str, str], root: Path, options: LiveOptions
) -> LiveResult:
    """Start the watcher on a fresh root, append responses one by one, time each NDJSON echo."""
    transcript = prepare_root(root, options.seed)
    argv = [*tokentop, "watch", "--ndjson", "--claude-dir", str(root), "--no-cache"]
    stderr_path = root.with_name(root.name + ".stderr")
    with stderr_path.open("wb") as stderr:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    assert proc.stdout is not None
    reader = NdjsonReader(proc.stdout, transcript.session_id)
    reader.start()
    try:
        result = drive(proc, reader, transcript, options)
    finally:
        stop(proc)
    if not result.delays_ms or None in result.delays_ms:
        result = replace(result, note=f"{result.note}; stderr: {last_line(stderr_path)}")
    return result


@dataclass(frozen=True)
class LiveOptions:
    """How many responses to append, how far apart, and how long to watch the idle CPU."""

    writes: int
    interval_s: float
    idle_s: float
    seed: int = 1


def prepare_root(root: Path, seed: int) -> Transcript:
    """A fresh CLAUDE_CONFIG_DIR holding one session with a prompt and one response."""
    project = root / "projects" / PROJECT.replace("/", "-")
    project.mkdir(parents=True)
    transcript = Transcript(project / "placeholder", seed)
    transcript.path = project / f"{transcript.session_id}.jsonl"
    append(transcript.path, transcript.user_prompt() + transcript.response())
    return transcript


def drive(
    proc: subprocess.Popen[bytes],
    reader: NdjsonReader,
    transcript: Transcript,
    options: LiveOptions,
) -> LiveResult:
    """Wait for the initial snapshot, then time each append and measure the idle CPU."""
    notes = []
    if reader.wait_for(transcript.responses, STARTUP_TIMEOUT_S) is None:
        if proc.poll() is not None:
            return LiveResult([], None, f"watcher exited with {proc.returncode} at startup")
        notes.append(f"no session line within {STARTUP_TIMEOUT_S:.0f} s of startup")
    delays: list[float | None] = []
    jitter = random.Random(options.seed)  # so writes don't phase-lock with a poll loop
    for _ in range(options.writes):
        time.sleep(options.interval_s * jitter.uniform(0.5, 1.5))
        written = append(transcript.path, transcript.response())
        seen = reader.wait_for(transcript.responses, SEEN_TIMEOUT_S)
        delays.append(None if seen is None else max(0.0, seen - written) * 1000.0)
    time.sleep(1.0)  # let debounce timers and the last snapshot settle before idling
    notes.append(f"{reader.lines} NDJSON lines, {reader.bad_lines} not JSON")
    if proc.poll() is not None:
        notes.append(f"watcher exited with {proc.returncode}")
        return LiveResult(delays, None, "; ".join(notes))
    return LiveResult(delays, idle_cpu_percent(proc.pid, options.idle_s), "; ".join(notes))


def last_line(path: Path) -> str:
    """The last non-empty line of a log file, to explain a failure in one line."""
    lines = path.read_bytes().decode("utf-8", "replace").strip().splitlines()
    return lines[-1][:200] if lines else "(empty)"
