"""End to end on loopback: `tokentop serve` receives Claude Code events from the real SDK
exporter, a real Prometheus server (Debian's package, installed here when missing) scrapes
its /metrics, and PromQL through Prometheus's HTTP API returns the exact totals. A budget
decision about the other machine's session is an alert: nothing is signalled."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otel_clients import claude_api_request, log_provider
from proc_helpers import wait_until

SENT = [
    ({"input": 1200, "output": 300, "cache_read": 40_000, "cache_creation": 2_000}, 0.0421),
    ({"input": 15, "output": 900, "cache_read": 42_000, "cache_creation": 0}, 0.0187),
]
TOTAL = sum(sum(t.values()) for t, _ in SENT)
COST = 0.0421 + 0.0187


def _install_prometheus() -> str:
    """Debian's prometheus, installed with apt-get when missing (CI runs as root)."""
    found = shutil.which("prometheus")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        pytest.skip("prometheus is not installed and apt-get can't install it here (not root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "prometheus"]
    if subprocess.run(install, env=env, capture_output=True, timeout=900).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, timeout=900)
        subprocess.run(install, env=env, check=True, capture_output=True, timeout=900)
    found = shutil.which("prometheus")
    assert found, "apt-get installed prometheus but it is not on PATH"
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """`tokentop serve` with a $0.01 budget that kills, in a private home."""
    config = tmp_path / "config.toml"
    config.write_text('[budgets]\nusd = 0.01\n\n[policy.budget]\naction = "kill"\n')
    env = {
        **os.environ, "HOME": str(tmp_path), "XDG_DATA_HOME": str(tmp_path / "data"),
        "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_CACHE_HOME": str(tmp_path / "cache"),
        "XDG_STATE_HOME": str(tmp_path / "state"), "PYTHONUNBUFFERED": "1",
    }  # fmt: skip
    (tmp_path / "claude").mkdir()
    argv = [
        sys.executable, "-m", "tokentop.cli", "serve", "--otlp", "127.0.0.1:0",
        "--prometheus", "127.0.0.1:0", "--no-cache", "--claude-dir", str(tmp_path / "claude"),
        "--config", str(config),
    ]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        first = json.loads(proc.stdout.readline())
        assert first["type"] == "listening", first
        yield proc, first
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _query(base: str, promql: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        data = json.load(resp)
    assert data["status"] == "success", data
    result: list[dict[str, Any]] = data["data"]["result"]
    return result


def _value(base: str, promql: str) -> float | None:
    try:
        result = _query(base, promql)
    except OSError:
        return None
    return float(result[0]["value"][1]) if result else None


def test_prometheus_scrapes_exact_totals(
    serve: tuple[subprocess.Popen[str], dict[str, Any]], tmp_path: Path
) -> None:
    binary = _install_prometheus()
    proc, where = serve
    provider = log_provider(where["otlp"], "claude-code", host="laptop-7")
    for i, (tokens, cost) in enumerate(SENT):
        claude_api_request(provider, "sess-prom", f"req_p{i}", tokens, cost)
    provider.shutdown()
    target = urllib.parse.urlparse(where["metrics"]).netloc
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "scrape_configs:\n  - job_name: tokentop\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    port = _free_port()
    prom = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        tokens = 'sum(tokentop_tokens_total{agent="claude",host="laptop-7"})'
        assert wait_until(lambda: _value(base, tokens) == TOTAL, timeout=60, step=0.5), _value(
            base, tokens
        )
        cost = _value(base, 'sum(tokentop_cost_usd_total{host="laptop-7"})')
        assert cost is not None and abs(cost - COST) < 1e-9
        per_user = _query(base, "sum by (user) (tokentop_cost_usd_total)")
        assert {r["metric"]["user"] for r in per_user} == {"ana@example.com"}
        burning = _query(base, "topk(5, tokentop_burn_tokens_per_minute)")
        assert burning and burning[0]["metric"]["session"] == "sess-prom"
        over = _query(base, "tokentop_budget_used_ratio >= 1")
        assert [r["metric"]["session"] for r in over] == ["sess-prom"]
    finally:
        prom.terminate()
        prom.wait(timeout=20)
    lines = _lines_until(proc, lambda obj: obj.get("type") == "action")
    decision = next(o for o in lines if o.get("type") == "decision")
    action = lines[-1]
    assert decision["detector"] == "budget" and decision["action"] == "kill"
    assert action["ok"] is False and "laptop-7" in action["message"]


def _lines_until(proc: subprocess.Popen[str], done: Any) -> list[dict[str, Any]]:
    assert proc.stdout is not None
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        found.append(json.loads(line))
        if done(found[-1]):
            return found
    raise AssertionError(f"no action line; got {found}")
