"""`tokentop serve` under abuse, over real sockets on loopback: a record bomb is refused
cheaply, slow bodies and idle connections lock no one out, and under all of it at once an
honest event is answered within 5 s and counted, with the server's RSS under 300 MB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flood_helpers import (
    PeakRss,
    claude_event,
    flooding,
    get,
    json_bomb,
    post,
    raise_fd_limit,
    record_bomb,
)
from proc_helpers import wait_until

MB = 1024 * 1024


class Serve:
    def __init__(self, proc: subprocess.Popen[str], first: dict[str, Any], stderr: Path) -> None:
        self.proc = proc
        self.otlp = int(first["otlp"].rsplit(":", 1)[1])
        self.metrics = int(first["metrics"].rsplit(":", 1)[1].split("/")[0])
        self.stderr = stderr

    def tokens_of(self, host: str) -> float:
        status, text = get(self.metrics)
        assert status == 200
        return sum(
            s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == "tokentop_tokens_total" and s.labels.get("host") == host
        )

    def honest(self, tokens: int = 1000) -> tuple[int, float, str]:
        """One real event from another machine: (status, seconds, its host)."""
        host = f"box-{uuid.uuid4().hex[:8]}"
        body = claude_event(f"s-{host}", host, f"req-{host}", 0.01, tokens)
        status, took = post(self.otlp, "/v1/logs", body, timeout=30)
        return status, took, host

    def counted(self, host: str, tokens: int = 1000) -> bool:
        return wait_until(lambda: self.tokens_of(host) == tokens, timeout=10)


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Serve]:
    raise_fd_limit()
    home = tmp_path_factory.mktemp("serve")
    env = {
        **os.environ, "HOME": str(home), "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"), "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_STATE_HOME": str(home / "state"), "PYTHONUNBUFFERED": "1",
    }  # fmt: skip
    (home / "claude").mkdir()
    argv = [
        sys.executable, "-m", "tokentop.cli", "serve", "--otlp", "127.0.0.1:0",
        "--prometheus", "127.0.0.1:0", "--no-cache", "--claude-dir", str(home / "claude"),
    ]  # fmt: skip
    stderr = home / "stderr.txt"
    with stderr.open("w") as err:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # drain decisions
        yield Serve(proc, first, stderr)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "Traceback" not in stderr.read_text()  # no BrokenPipe (or any) traceback


def _bombs(port: int, results: list[int], each: int = 4) -> list[threading.Thread]:
    threads = []
    kinds = ((record_bomb(), "application/x-protobuf"), (json_bomb(), "application/json"))
    for body, ctype in kinds:
        for _ in range(each):
            headers = {"Content-Encoding": "gzip", "Content-Type": ctype}
            args = (port, "/v1/logs", body, headers)
            thread = threading.Thread(target=lambda a=args: results.append(post(*a)[0]))
            thread.start()
            threads.append(thread)
    return threads


def test_record_bombs_are_refused_cheaply(serve: Serve) -> None:
    """8 M empty records in 16 KB of gzip (and 3 M `{}` in OTLP/JSON), four of each at
    once: each is refused before it is parsed, the RSS stays small, and an honest event
    sent meanwhile is answered at once (the hub lock is not held while records are read)."""
    assert len(record_bomb()) < 20_000 and len(json_bomb()) < 20_000
    rss = PeakRss(serve.proc.pid)
    results: list[int] = []
    threads = _bombs(serve.otlp, results)
    status, took, host = serve.honest()
    for thread in threads:
        thread.join(timeout=60)
    peak = rss.stop()
    assert results == [413] * 8
    assert status == 200 and took < 5.0
    assert serve.counted(host)
    assert peak < 300 * MB, f"peak RSS {peak / MB:.0f} MB"


def test_slow_bodies_lock_no_one_out(serve: Serve) -> None:
    """40 bodies announcing 100 kB and sending a byte every 5 s: an honest POST is served,
    and the slow ones are cut at the request deadline, not kept alive byte by byte."""
    with flooding() as flood:
        flood.slow_bodies(serve.otlp, 40, every_s=1.0)
        time.sleep(0.5)
        status, took, host = serve.honest()
        assert status == 200 and took < 5.0 and serve.counted(host)


def test_idle_connections_lock_no_one_out(serve: Serve) -> None:
    """3,000 idle connections to /metrics and as many to the receiver: scrapes and events
    still go through, and idle sockets are dropped rather than kept one thread each."""
    with flooding() as flood:
        flood.idle(serve.metrics, 3000)
        flood.idle(serve.otlp, 3000)
        time.sleep(0.5)
        status, _ = get(serve.metrics, timeout=5)
        assert status == 200
        sent, took, host = serve.honest()
        assert sent == 200 and took < 5.0 and serve.counted(host)
        threads = len(__import__("psutil").Process(serve.proc.pid).threads())
        assert threads < 50, f"{threads} threads"


def test_the_flood(serve: Serve) -> None:
    """The issue's definition of done: the record bomb, 40 slow bodies and 3,000 idle
    connections at once; an honest event is answered within 5 s and counted, the RSS stays
    under 300 MB, and the server serves normally afterwards."""
    rss = PeakRss(serve.proc.pid)
    results: list[int] = []
    with flooding() as flood:
        flood.idle(serve.otlp, 3000)
        flood.slow_bodies(serve.otlp, 40)
        threads = _bombs(serve.otlp, results, each=2)
        status, took, host = serve.honest()
        assert status == 200 and took < 5.0, (status, took)
        assert serve.counted(host)
        for thread in threads:
            thread.join(timeout=60)
    peak = rss.stop()
    assert peak < 300 * MB, f"peak RSS {peak / MB:.0f} MB"
    assert results == [413] * 4
    status, took, host = serve.honest()
    assert status == 200 and took < 2.0 and serve.counted(host)
