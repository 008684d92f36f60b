"""Measure the OTLP receiver and the Prometheus exposition of `tokentop serve` (issue #14).

- throughput: the OpenTelemetry SDK's OTLP/HTTP log exporter (protobuf) sends pre-built
  batches of `claude_code.api_request` records to a `tokentop serve` child process, as fast
  as one client can; requests/s and events/s, for batches of 1 and of 512 records (the SDK's
  default batch size);
- memory: the child's RSS before and after 1000 live sessions from 1000 hosts;
- scrape: the time of GET /metrics with those sessions, median of 20.

    python bench/otlp.py [--seconds 10] [--sessions 1000]

Needs the test extra (the SDK exporter) and the fleet extra. Nothing here runs in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.resources import Resource


class Collect(LogRecordExporter):
    """Keeps the records the SDK built, to export them later in timed batches."""

    def __init__(self) -> None:
        self.records: list[ReadableLogRecord] = []

    def export(self, batch: Any) -> Any:
        self.records.extend(batch)

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        return True


def build(n: int, sessions: int, host_of: Any, tag: str) -> list[ReadableLogRecord]:
    """`n` Claude Code api_request records spread over `sessions` sessions."""
    by_host: dict[str, LoggerProvider] = {}
    sink = Collect()
    for i in range(n):
        sid = f"{tag}-s{i % sessions}"
        host = host_of(i % sessions)
        provider = by_host.get(host)
        if provider is None:
            attrs = {"service.name": "claude-code", "host.name": host}
            provider = by_host[host] = LoggerProvider(resource=Resource.create(attrs))
            provider.add_log_record_processor(SimpleLogRecordProcessor(sink))
        provider.get_logger("claude_code").emit(
            body="claude_code.api_request",
            timestamp=time.time_ns(),
            attributes={
                "event.name": "api_request", "session.id": sid, "model": "claude-sonnet-4-5",
                "request_id": f"req_{tag}_{i}", "input_tokens": "1200", "output_tokens": "300",
                "cache_read_tokens": "40000", "cache_creation_tokens": "2000",
                "cost_usd": "0.0421", "user.email": f"dev{i % 50}@example.com",
            },
        )  # fmt: skip
    return sink.records


def serve(home: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    env = {**os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "d"),
           "XDG_CACHE_HOME": str(home / "c"), "XDG_CONFIG_HOME": str(home / "cfg")}  # fmt: skip
    (home / "claude").mkdir()
    argv = [
        sys.executable, "-m", "tokentop.cli", "serve", "--otlp", "127.0.0.1:0",
        "--prometheus", "127.0.0.1:0", "--no-cache", "--claude-dir", str(home / "claude"),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())


def throughput(url: str, batch: int, seconds: float) -> tuple[float, float]:
    records = build(max(batch * 20, 2000), 200, lambda s: f"host{s % 20}", f"t{batch}")
    batches = [records[i : i + batch] for i in range(0, len(records) - batch + 1, batch)]
    exporter = OTLPLogExporter(endpoint=f"{url}/v1/logs", timeout=30)
    sent = requests = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        chunk = batches[requests % len(batches)]
        exporter.export(chunk)
        requests += 1
        sent += len(chunk)
    wall = time.perf_counter() - start
    exporter.shutdown()
    return requests / wall, sent / wall


def scrape_ms(metrics: str, reps: int = 20) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(reps):
        t0 = time.perf_counter()
        with urllib.request.urlopen(metrics, timeout=30) as resp:
            size = len(resp.read())
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times), size


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--sessions", type=int, default=1000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        proc, where = serve(Path(tmp))
        child = psutil.Process(proc.pid)
        try:
            time.sleep(1.0)
            rss0 = child.memory_info().rss
            out: dict[str, Any] = {"rss_start_mb": round(rss0 / 2**20, 1)}
            exporter = OTLPLogExporter(endpoint=f"{where['otlp']}/v1/logs", timeout=30)
            live = build(args.sessions * 5, args.sessions, lambda s: f"host{s}", "live")
            for i in range(0, len(live), 512):
                exporter.export(live[i : i + 512])
            time.sleep(2.0)  # the engine applies and notifies
            out["rss_live_sessions_mb"] = round(child.memory_info().rss / 2**20, 1)
            out["live_sessions"] = args.sessions
            ms, size = scrape_ms(where["metrics"])
            out["scrape_ms_median"] = round(ms, 1)
            out["scrape_bytes"] = size
            for batch in (1, 512):
                rps, eps = throughput(where["otlp"], batch, args.seconds)
                out[f"batch{batch}_requests_per_s"] = round(rps, 1)
                out[f"batch{batch}_events_per_s"] = round(eps, 1)
            out["rss_end_mb"] = round(child.memory_info().rss / 2**20, 1)
            out["cpu_count"] = os.cpu_count()
            print(json.dumps(out, indent=1))
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
