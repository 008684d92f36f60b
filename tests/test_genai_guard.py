"""`tokentop guard --otlp`: a local app traced by OpenLLMetry goes over its budget and is
killed through the exact `process.pid` mapping; a process that merely reuses that pid
number is never touched.

The app is tests/genai_apps/openai_app.py (the official `openai` SDK, instrumented) calling
the loopback upstream of test_genai_clients; guard runs as a real child process, as a user
runs it, with its data dir in tmp. Every child runs in its own process group, killed at
teardown whatever happens.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from proc_helpers import gone, wait_until
from test_genai_clients import APPS, Upstream, app_env, genai_python, upstream
from test_guard import Lines
from tokentop.config import Budget
from tokentop.history.store import Store
from tokentop.model import SessionKey

__all__ = ["genai_python", "upstream"]  # fixtures, shared with test_genai_clients

KILL_OVER_5000_TOKENS = '[budgets]\ntokens = 5000\n\n[policy.budget]\naction = "kill"\n'
NS_LAST_PID = Path("/proc/sys/kernel/ns_last_pid")


def start_guard(tmp_path: Path, groups: list[int]) -> tuple[Lines, str]:
    """`tokentop guard --otlp` over an empty Claude dir; its OTLP URL once it listens."""
    cfg = tmp_path / "config.toml"
    cfg.write_text(KILL_OVER_5000_TOKENS)
    root = tmp_path / "claude"
    (root / "projects").mkdir(parents=True)
    argv = [
        sys.executable, "-m", "tokentop.cli", "guard", "--claude-dir", str(root), "--no-cache",
        "--config", str(cfg), "--registry", str(tmp_path / "registry.jsonl"),
        "--otlp", "127.0.0.1:0",
    ]  # fmt: skip
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    guard = subprocess.Popen(
        argv, stdout=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    groups.append(guard.pid)
    lines = Lines(guard)
    assert wait_until(lambda: bool(lines.of("ready")), timeout=30), "guard never became ready"
    (listening,) = lines.of("listening")
    return lines, str(listening["otlp"])


def start_app(
    python: Path, otlp: str, base: str, calls: int, session: str, groups: list[int]
) -> subprocess.Popen[bytes]:
    argv = [str(python), str(APPS / "openai_app.py"), base, str(calls), session]
    env = app_env(otlp, "support-bot")
    app = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    groups.append(app.pid)
    return app


def test_a_runaway_local_app_is_killed_through_its_exporter_pid(
    tmp_path: Path, groups: list[int], genai_python: Path, upstream: str
) -> None:
    lines, otlp = start_guard(tmp_path, groups)
    app = start_app(genai_python, otlp, upstream, 0, "ticket-42", groups)
    assert wait_until(lambda: gone(app.pid), timeout=60), f"still running; {lines.items}"
    assert wait_until(lambda: bool(lines.of("action")))
    (decision,) = [d for d in lines.of("decision") if d["action"] == "kill"]
    assert decision["session"] == "support-bot:ticket-42" and decision["detector"] == "budget"
    action = lines.of("action")[0]
    assert action["ok"] is True and action["pid"] == app.pid, action
    assert action["mapping"] == "exporter" and action["origin"] == "policy:budget"
    calls = Upstream.calls
    assert calls >= 5000 // 1060  # over 5000 tokens after ~5 calls (a fast loop makes more
    time.sleep(0.5)
    assert Upstream.calls == calls  # before it was killed); nothing calls the model now


def take_pid(pid: int, groups: list[int]) -> subprocess.Popen[bytes] | None:
    """A sleeper that gets `pid` (the kernel hands out ns_last_pid + 1 next), or None."""
    for _ in range(50):
        NS_LAST_PID.write_text(str(pid - 1))
        sleeper = subprocess.Popen(["sleep", "120"], start_new_session=True)
        groups.append(sleeper.pid)
        if sleeper.pid == pid:
            return sleeper
        sleeper.kill()
        sleeper.wait()
    return None


@pytest.mark.skipif(
    not os.access(NS_LAST_PID, os.W_OK), reason="reusing a pid on purpose needs root"
)
def test_a_process_that_reuses_the_pid_is_never_touched(
    tmp_path: Path, groups: list[int], genai_python: Path, upstream: str
) -> None:
    lines, otlp = start_guard(tmp_path, groups)
    app = start_app(genai_python, otlp, upstream, 3, "ticket-43", groups)
    assert app.wait(timeout=60) == 0  # ~3,200 tokens: under its budget, it ends on its own
    original = app.pid
    sleeper = take_pid(original, groups)
    assert sleeper is not None, "could not get the pid again"
    with Store(tmp_path / "data" / "tokentop" / "tokentop.db") as store:  # over, from now on
        store.set_budget(SessionKey("support-bot", "ticket-43"), Budget(tokens=1000), "test")
    runaway = start_app(genai_python, otlp, upstream, 0, "ticket-44", groups)
    assert wait_until(lambda: gone(runaway.pid), timeout=60), f"not killed; {lines.items}"
    time.sleep(2.0)  # several judgements with ticket-43 over its new budget
    assert psutil.Process(sleeper.pid).status() != psutil.STATUS_ZOMBIE
    assert sleeper.poll() is None
    acted = [a for a in lines.of("action") if a["ok"]]
    assert [a["pid"] for a in acted] == [runaway.pid], lines.items
    touched = [a for a in lines.of("action") if a.get("pid") == original and a["ok"]]
    assert not touched
    # ticket-43 maps to (pid, create_time). Either its decision came while the probe still
    # read the process as running, and the kill was refused at the create_time check, or
    # the probe saw the pid's new create_time first: the session has exited, no decision.
    mine = [a for a in lines.of("action") if a["session"] == "support-bot:ticket-43"]
    assert all(not a["ok"] and a["mapping"] == "exporter" for a in mine), mine
    assert all("pid was reused" in a["message"] for a in mine), mine
    decided = [d for d in lines.of("decision") if d["session"] == "support-bot:ticket-43"]
    assert len(mine) == len([d for d in decided if d["action"] == "kill"])
