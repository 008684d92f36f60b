"""Telemetry is a stranger's word. A real agent (the demo agent appending its transcript)
mapped exactly by a hook record, under a $5 budget that kills, and forged OTLP events on a
real socket: however the sender names its host, the local session is never billed by them,
never acted on because of them, and they are shown apart as unconfirmed."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from flood_helpers import claude_event, post
from proc_helpers import gone, wait_until
from tokentop.commands import guard as guard_mod
from tokentop.commands.common import make_watchdog
from tokentop.config import parse_config
from tokentop.engine.engine import Engine
from tokentop.model import SessionKey, SessionSnapshot
from tokentop.pricing import PriceTable
from tokentop.processes.control import ProcessController
from tokentop.processes.finding import launch
from tokentop.processes.mapper import RecordedMapper, SessionMapper
from tokentop.processes.registry import Registry, SessionRecord, append
from tokentop.sources.claude_code import ClaudeCodeSource
from tokentop.telemetry.hub import TelemetryHub
from tokentop.telemetry.options import Listen
from tokentop.telemetry.receiver import Receiver

LOCAL = "this-box"
SESSION = "7d1c0c3e-aaaa-4222-8333-444455556666"
GHOST = "0b5e55ed-bbbb-4222-8333-444455556666"
"""A session id with a hook record and no transcript here: known from telemetry only."""
KILL_OVER_5 = '[budgets]\nusd = 5.0\n\n[policy.budget]\naction = "kill"\n'


class Served:
    def __init__(self, engine: Engine, hub: TelemetryHub, port: int, out: list[Any]) -> None:
        self.engine, self.hub, self.port, self.out = engine, hub, port, out

    def session(self, sid: str) -> SessionSnapshot | None:
        found = [s for s in self.engine.snapshot().sessions if s.key.session_id == sid]
        return found[0] if found else None

    def forge(self, sid: str, host: str, request_id: str) -> None:
        """One claude_code.api_request at $100, as anyone who reads /metrics could send."""
        status, _ = post(self.port, "/v1/logs", claude_event(sid, host, request_id, 100.0, 1000))
        assert status == 200


@pytest.fixture
def served(tmp_path: Path, groups: list[int]) -> Iterator[tuple[Served, subprocess.Popen[bytes]]]:
    """`serve`'s parts in this process (the hub's wait shortened to 0.5 s): engine, hub and
    receiver, the Watchdog and the Guard acting for real, a hook registry; and the agent."""
    root = tmp_path / "claude"
    argv = [
        sys.executable, "-m", "tokentop.demo.agent", "--kind", "claude", "--behavior",
        "steady", "--root", str(root), "--cwd", "/home/dev/shop", "--interval", "0.5",
        "--session-id", SESSION,
    ]  # fmt: skip
    agent, ref = launch(argv, stdout=subprocess.DEVNULL)
    groups.append(agent.pid)
    registry = tmp_path / "registry.jsonl"
    for sid in (SESSION, GHOST):
        append(
            registry, SessionRecord("claude", sid, ref.pid, ref.create_time, "hook", time.time())
        )
    engine = Engine([ClaudeCodeSource(config_dirs=[root])], PriceTable.default().cost, workers=1)
    hub = TelemetryHub(engine, local_names=[LOCAL], wait_s=0.5)
    receiver = Receiver(hub, Listen("127.0.0.1", 0))
    config = parse_config(KILL_OVER_5)
    controller = ProcessController(log_path=tmp_path / "actions.log")
    mapper = RecordedMapper(Registry(registry), controller, SessionMapper())
    watchdog = make_watchdog(config, mapper, controller)
    out: list[Any] = []
    guard = guard_mod.Guard(config, controller, mapper, out.append, watchdog)
    stop = threading.Event()
    receiver.start()
    hub.start()
    runner = threading.Thread(target=guard_mod.run, args=(engine, watchdog, guard, stop))
    runner.start()
    try:
        yield Served(engine, hub, receiver.port, out), agent
    finally:
        stop.set()
        runner.join(10)
        receiver.stop()
        hub.stop()


def test_forged_events_never_bill_or_kill_a_local_agent(
    served: tuple[Served, subprocess.Popen[bytes]],
) -> None:
    s, agent = served
    assert wait_until(lambda: s.session(SESSION) is not None, timeout=20)
    s.forge(SESSION, LOCAL, "req_forged_1")  # "I am this machine"
    s.forge(SESSION, "", "req_forged_2")  # a loopback sender without a name
    s.forge(SESSION, "box1", "req_forged_3")  # "I am another machine", same session id
    s.forge(GHOST, LOCAL, "req_forged_4")  # a session with a hook record and no transcript
    assert wait_until(lambda: s.hub.stats.usages == 4)
    time.sleep(3.0)  # past the hub's wait, several judgements and settles
    assert agent.poll() is None and not gone(agent.pid), s.out
    local = s.session(SESSION)
    assert local is not None and local.cost_usd < 5.0 and not local.host
    assert not local.from_telemetry
    assert not [d for d in s.out if d.get("session") == f"claude:{SESSION}"], s.out
    ghost = s.session(GHOST)
    assert ghost is not None and ghost.cost_usd == 100.0 and ghost.from_telemetry
    acted = [d for d in s.out if d["type"] == "action"]
    assert acted and all(not d["ok"] for d in acted), acted
    assert "known from telemetry only" in acted[0]["message"]
    (pair,) = [p for p in s.hub.pairs() if p.transcript == SessionKey("claude", SESSION)]
    assert pair.unconfirmed_responses == 3 and pair.unconfirmed_cost_usd == 300.0
