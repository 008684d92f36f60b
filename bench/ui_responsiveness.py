#!/usr/bin/env python3
"""UI responsiveness under load: 500 sessions, 50 appends/s, keys pressed meanwhile.

Run by hand (never in CI): `python bench/ui_responsiveness.py [--sessions 500 --rate 50]`.
Starts the real engine and the app headless (Textual's run_test) over a generated Claude Code
root, appends lines from a thread, and prints:
- event-loop lag: how late a 50 ms timer fires on the UI loop, p50/p95/max;
- key latency: from a "down" key entering the driver to the table's handler, and to the
  table's next paint. Target: p95 < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from textual import events

from tokentop.clock import SystemClock
from tokentop.config import Config
from tokentop.engine.engine import Engine
from tokentop.pricing import PriceTable
from tokentop.sources.claude_code import ClaudeCodeSource
from tokentop.ui.app import make_app


def line(sid: str, n: int, cwd: str, rng: random.Random) -> str:
    stamp = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    usage = {
        "input_tokens": rng.randint(5, 50),
        "output_tokens": rng.randint(50, 3000),
        "cache_creation_input_tokens": rng.randint(0, 2000),
        "cache_read_input_tokens": rng.randint(1000, 90000),
    }
    message = {"id": f"msg_{sid}_{n}", "role": "assistant", "model": "claude-sonnet-4-5"}
    record = {
        "type": "assistant",
        "sessionId": sid,
        "timestamp": stamp,
        "cwd": cwd,
        "version": "2.0.14",
        "requestId": f"req_{sid}_{n}",
        "message": {**message, "content": [{"type": "text", "text": "ok"}], "usage": usage},
    }
    return json.dumps(record) + "\n"


def make_root(root: Path, sessions: int) -> list[tuple[Path, str, str]]:
    rng = random.Random(1)
    files = []
    for i in range(sessions):
        cwd = f"/home/dev/proj{i:03}"
        sid = f"{i:08x}-0000-4000-8000-{i:012x}"
        folder = root / "projects" / cwd.replace("/", "-")
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{sid}.jsonl"
        path.write_text("".join(line(sid, n, cwd, rng) for n in range(5)))
        files.append((path, sid, cwd))
    return files


def append_forever(files: list[tuple[Path, str, str]], rate: float, stop: threading.Event) -> None:
    rng = random.Random(2)
    n = 1000
    while not stop.wait(1 / rate):
        path, sid, cwd = rng.choice(files[: max(1, len(files) // 10)])  # a tenth are busy
        n += 1
        with path.open("a") as f:
            f.write(line(sid, n, cwd, rng))


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[int(q) - 1] if len(values) > 1 else values[0]


class KeyProbe:
    """Times a key from the driver to its handler, and to the next paint of the table."""

    def __init__(self) -> None:
        self.sent = 0.0
        self.handled: list[float] = []
        self.painted: list[float] = []
        self.waiting_paint = False

    def install(self) -> None:
        from tokentop.ui.widgets.session_table import SessionTable

        probe = self
        move, render = SessionTable.action_cursor, SessionTable.render_lines

        def timed_move(table: SessionTable, step: int) -> None:
            probe.handled.append((time.perf_counter() - probe.sent) * 1000)
            probe.waiting_paint = True
            move(table, step)

        def timed_render(table: SessionTable, crop: Any) -> Any:
            lines = render(table, crop)
            if probe.waiting_paint:
                probe.waiting_paint = False
                probe.painted.append((time.perf_counter() - probe.sent) * 1000)
            return lines

        SessionTable.action_cursor = timed_move  # type: ignore[method-assign]
        SessionTable.render_lines = timed_render  # type: ignore[method-assign]

    def press_down(self, app: Any) -> None:
        self.sent = time.perf_counter()
        app._driver.send_message(events.Key("down", None))


async def measure(root: Path, files: list[tuple[Path, str, str]], args: argparse.Namespace) -> None:
    clock = SystemClock()
    engine = Engine([ClaudeCodeSource(config_dirs=[root])], PriceTable.default().cost, clock=clock)
    app = make_app(engine, config=Config(), clock=clock)
    probe = KeyProbe()
    probe.install()
    stop = threading.Event()
    async with app.run_test(size=(160, 50)) as pilot:
        while len(app.listed) < len(files):
            await pilot.pause(0.1)
        writer = threading.Thread(target=append_forever, args=(files, args.rate, stop))
        writer.start()
        lags: list[float] = []
        deadline = time.monotonic() + args.seconds
        while time.monotonic() < deadline:
            t0 = time.perf_counter()
            await asyncio.sleep(0.05)
            lags.append((time.perf_counter() - t0 - 0.05) * 1000)
            if len(lags) % 7 == 0:
                probe.press_down(app)
        stop.set()
        writer.join()
    print(f"sessions {len(files)}, appends/s {args.rate}, {args.seconds:.0f} s")
    print(
        f"loop lag ms      p50 {pct(lags, 50):6.1f}  p95 {pct(lags, 95):6.1f}  max {max(lags):6.1f}"
    )
    for name, values in (("key handled ms", probe.handled), ("key painted ms", probe.painted)):
        print(
            f"{name}   p50 {pct(values, 50):6.1f}  p95 {pct(values, 95):6.1f}"
            f"  max {max(values):6.1f}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0, help="appended lines per second")
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tokentop-ui-bench-") as tmp:
        files = make_root(Path(tmp), args.sessions)
        asyncio.run(measure(Path(tmp), files, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
