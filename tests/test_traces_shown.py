"""A traced app's session is shown beside the coding agents, under its `service.name`: in
the app's table, on /metrics and in `tokentop report`.

`tokentop serve` runs as a user runs it, over a real Claude Code transcript, with its data
dir in tmp; the app's table is fed the snapshot of a real receiver.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from proc_helpers import wait_until
from telemetry_helpers import rig
from test_app import SIZE, Harness, settle
from test_guard import Lines
from test_telemetry_traces import body, chat, counted, send
from ui_fakes import sample_sessions


def claude_root(tmp_path: Path) -> Path:
    """A Claude projects dir holding one small real-shaped transcript."""
    root = tmp_path / "claude" / "projects" / "-home-dev-shop"
    root.mkdir(parents=True)
    line = {
        "type": "assistant", "sessionId": "c0ffee00-1111-4222-8333-444455556666",
        "timestamp": "2026-01-02T03:04:05.000Z", "cwd": "/home/dev/shop", "requestId": "req_1",
        "message": {"id": "msg_1", "model": "claude-sonnet-4-5-20250929", "usage": {
            "input_tokens": 10, "output_tokens": 20, "cache_read_input_tokens": 0,
            "cache_creation_input_tokens": 0}},
    }  # fmt: skip
    (root / "c0ffee00-1111-4222-8333-444455556666.jsonl").write_text(json.dumps(line) + "\n")
    return tmp_path / "claude"


def test_serve_exports_and_reports_the_traced_app_beside_claude(
    tmp_path: Path, groups: list[int]
) -> None:
    cfg = tmp_path / "config.toml"
    cfg.write_text("live_timeout_s = 1.0\nended_after_s = 2.0\n\n[history]\nidle_end_s = 2.0\n")
    argv = [
        sys.executable, "-m", "tokentop.cli", "serve", "--claude-dir", str(claude_root(tmp_path)),
        "--no-cache", "--config", str(cfg), "--otlp", "127.0.0.1:0", "--prometheus", "127.0.0.1:0",
    ]  # fmt: skip
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    serve = subprocess.Popen(
        argv, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    groups.append(serve.pid)
    lines = Lines(serve)
    assert wait_until(lambda: bool(lines.of("listening")), timeout=30)
    where = lines.of("listening")[0]
    payload = body(chat(1, n=1, session__id="ticket-9"), chat(2, n=2, session__id="ticket-9"))
    request = urllib.request.Request(f"{where['otlp']}/v1/traces", data=payload, method="POST")
    request.add_header("Content-Type", "application/x-protobuf")
    with urllib.request.urlopen(request, timeout=10) as reply:
        assert reply.status == 200

    def scraped() -> str:
        with urllib.request.urlopen(where["metrics"], timeout=10) as reply:
            return str(reply.read().decode())

    tokens = counted([1, 2]).total
    assert wait_until(lambda: 'agent="support-bot"' in scraped() and 'agent="claude"' in scraped())
    rows = [line for line in scraped().splitlines() if line.startswith("tokentop_tokens_total")]
    bot = sum(float(r.rsplit(" ", 1)[1]) for r in rows if 'agent="support-bot"' in r)
    assert bot == tokens

    def reported() -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-m", "tokentop.cli", "report", "--no-scan", "--by", "agent",
             "--format", "json"], env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return {row["group"]: row for row in json.loads(done.stdout)["rows"]}

    # Recorded when it ends: after 2 s quiet (history.idle_end_s), the keeper writes it.
    assert wait_until(lambda: "support-bot" in reported(), timeout=30, step=1.0)
    found = reported()
    assert "claude" in found and found["support-bot"]["tokens"] == tokens
    serve.send_signal(signal.SIGTERM)
    serve.wait(timeout=20)


async def test_the_app_lists_the_traced_app_under_its_service_name() -> None:
    with rig() as r:
        send(r, body(chat(1, n=1, session__id="ticket-9")))
        traced = r.wait_tokens("support-bot", "ticket-9", counted([1]).total)
    h = Harness()
    async with h.app.run_test(size=SIZE) as pilot:
        h.publish((*sample_sessions(), traced))
        await settle(pilot)
        agents = h.column("agent")
        assert "support-bot" in agents and "claude" in agents
