"""`tokentop guard`: enforce the policy without a screen, printing decisions and actions as NDJSON.

The engine follows the transcripts; every new snapshot, and a 1 s tick (so rates decay and
stalls show), is judged by `policy.evaluate`. A decision whose configured action is pause or
kill is carried out on the session's process only when it is mapped exactly: a hook or launch
record, or a known agent install holding the session's file open (Codex). A process guessed
from the cwd is reported as what would have been done, never acted on. Lines printed:

    {"type": "ready", "sessions": N}                        after the first full scan
    {"type": "decision", "session": "claude:…", "detector": "loop", "action": "kill", …}
    {"type": "action", "action": "kill", "ok": true, "pid": 123, "message": "…", …}
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

import msgspec

from tokentop.clock import Clock, SystemClock
from tokentop.config import Config
from tokentop.engine.engine import Engine
from tokentop.history.store import Store, StoreError
from tokentop.model import LedgerSnapshot, SessionKey, SessionSnapshot
from tokentop.policy.detectors import Decision, PolicyState, evaluate
from tokentop.processes.control import Action, ActionResult, ProcessController, default_action_log
from tokentop.processes.finding import ProcessRef
from tokentop.processes.mapper import RecordedMapper, SessionMapper, automatic_refusal
from tokentop.processes.registry import Registry, default_path
from tokentop.render.records import iso
from tokentop.render.text import json_for_terminal, safe

Emit = Callable[[dict[str, Any]], None]
TICK_S = 1.0
STATUS_TTL_S = 10.0
"""How long a process's running/stopped state is reused for the stall detector."""
STALL_HORIZON_S = 24 * 3600.0
"""Sessions quiet for longer are not checked for a stall (their record is history)."""


class Guard:
    """Judges snapshots and carries out the decisions the config allows."""

    def __init__(
        self,
        config: Config,
        controller: ProcessController,
        mapper: RecordedMapper,
        emit: Emit,
        clock: Clock | None = None,
        *,
        act: bool = True,
        store: Store | None = None,
    ) -> None:
        self.config = config
        self.store = store
        """Where findings are kept for the sessions' summaries; None keeps them nowhere."""
        self.controller = controller
        self.mapper = mapper
        self.emit = emit
        self.clock: Clock = clock or SystemClock()
        self.act = act
        self.state = PolicyState()
        self._alive_at: dict[SessionKey, tuple[float, bool]] = {}

    def check(self, snapshot: LedgerSnapshot) -> list[Decision]:
        """Evaluate every session once; emit and enforce what is new."""
        now = self.clock.now()
        decided: list[Decision] = []
        recorded = self.mapper.registry.sessions()  # one stat per check, not per session
        live = self.config.activity
        self.mapper.observe(s for s in snapshot.sessions if live(s.last_ts, now) == "live")
        for session in snapshot.sessions:
            alive = self._alive(session, now) if session.key in recorded else None
            for decision in evaluate(session, self.config, now, self.state, process_alive=alive):
                decided.append(decision)
                self.emit(decision_dict(decision, session))
                if decision.action in ("pause", "kill"):
                    self.enforce(decision, session)
        if decided:
            self._keep(decided)
        return decided

    def _keep(self, decisions: list[Decision]) -> None:
        """Record findings in the store; a store that fails is reported once and dropped."""
        if self.store is None:
            return
        try:
            for decision in decisions:
                self.store.record_event(decision)
        except (sqlite3.Error, OSError) as exc:
            print(f"tokentop: findings not recorded: {safe(str(exc))}", file=sys.stderr)
            self.store = None

    def _alive(self, session: SessionSnapshot, now: float) -> bool | None:
        """Whether the session's recorded process still runs it. Asked only of sessions quiet
        long enough to be stalled, and at most every STATUS_TTL_S, so a tick stays cheap."""
        stall = self.config.policy.stall
        quiet = now - session.last_ts
        if stall.action == "none" or not stall.minutes * 60 <= quiet < STALL_HORIZON_S:
            return None
        checked = self._alive_at.get(session.key)
        if checked is not None and now - checked[0] < STATUS_TTL_S:
            return checked[1]
        registry = self.mapper.registry
        record = registry.sessions().get(session.key)
        ref = record.ref() if record is not None and registry.is_current(record) else None
        alive = ref is not None and self.controller.status(ref) == "running"
        self._alive_at[session.key] = (now, alive)
        return alive

    def enforce(self, decision: Decision, session: SessionSnapshot) -> None:
        if session.remote:  # known from its telemetry: its processes are on another machine
            note = f"the session runs on {session.host}; tokentop can't signal another "
            self._not_acted(decision, 0, note + "machine (an alert only; run guard there)")
            return
        ref = self.mapper.processes_for(session)  # mapping only reads: a dry run does it too
        origin = f"policy:{decision.detector}"
        dry = "" if self.act else "dry run: "
        if ref is None:
            self._not_acted(decision, 0, dry + "no process is mapped to this session; not acted")
        elif refusal := automatic_refusal(decision.action, ref):
            self._not_acted(decision, ref.pid, dry + refusal, ref)
        elif not self.act:
            would = f"dry run: would {decision.action} pid {ref.pid}; nothing was signalled"
            self._not_acted(decision, ref.pid, would, ref)
        else:
            act = self.controller.pause if decision.action == "pause" else self.controller.kill
            result = act(ref, decision.reason, origin, session=str(session.key))
            self.emit(action_dict(result, decision, ref))

    def _not_acted(
        self, decision: Decision, pid: int, message: str, ref: ProcessRef | None = None
    ) -> None:
        verb: Action = "pause" if decision.action == "pause" else "kill"
        result = ActionResult(
            verb,
            False,
            (),
            message,
            decision.reason,
            f"policy:{decision.detector}",
            self.clock.now(),
            pid,
            str(decision.session),
        )
        self.emit(action_dict(result, decision, ref))


def decision_dict(decision: Decision, session: SessionSnapshot) -> dict[str, Any]:
    return {
        "type": "decision",
        "session": str(decision.session),
        "agent": decision.session.agent,
        "session_id": decision.session.session_id,
        "cwd": session.cwd,
        "detector": decision.detector,
        "action": decision.action,
        "level": decision.level,
        "reason": decision.reason,
        "time": iso(decision.timestamp),
    }


def action_dict(result: ActionResult, decision: Decision, ref: ProcessRef | None) -> dict[str, Any]:
    data: dict[str, Any] = {"type": "action", **msgspec.to_builtins(result)}
    data["time"] = iso(result.timestamp)
    data["detector"] = decision.detector
    if ref is not None:
        data["mapping"] = ref.how
        data["command"] = ref.command
    return data


class NdjsonOut:
    """One compact JSON object per line, flushed, safe to call from any thread."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.lock = threading.Lock()

    def __call__(self, obj: dict[str, Any]) -> None:
        with self.lock:
            self.out.write(json_for_terminal(msgspec.json.encode(obj)).decode() + "\n")
            self.out.flush()


def run(engine: Engine, guard: Guard, stop: threading.Event, tick: float = TICK_S) -> bool:
    """Follow the engine until `stop` is set; judge each new snapshot, or a fresh one per tick.
    False if the engine failed (its reason is then printed on stderr)."""
    latest: list[LedgerSnapshot] = []
    wake = threading.Event()

    def on_snapshot(snap: LedgerSnapshot) -> None:
        latest[:] = [snap]  # only the newest matters; an older one queued is dropped
        wake.set()

    engine.add_listener(on_snapshot)
    engine.start()
    ready = False
    try:
        while not stop.is_set():
            wake.wait(tick)
            wake.clear()
            if engine.failure is not None:
                print(engine.failure.line(), file=sys.stderr)
                return False
            snap = latest.pop() if latest else (engine.snapshot() if ready else None)
            if snap is None:
                continue
            if not ready:
                ready = True
                guard.emit({"type": "ready", "sessions": len(snap.sessions)})
            guard.check(snap)
    finally:
        engine.stop()
    return True


def cmd_guard(args: argparse.Namespace) -> int:
    from tokentop.commands.common import load_config, make_engine

    config = load_config(args)
    controller = ProcessController(log_path=default_action_log())
    registry = Registry(args.registry or default_path())
    mapper = RecordedMapper(registry, controller, SessionMapper())
    try:
        store: Store | None = Store()
    except StoreError as exc:
        print(f"tokentop: findings not recorded: {safe(str(exc))}", file=sys.stderr)
        store = None
    out = NdjsonOut(sys.stdout)
    guard = Guard(config, controller, mapper, out, act=not args.dry_run, store=store)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with contextlib.suppress(KeyboardInterrupt):
        if not run(make_engine(args, config), guard, stop):
            return 1
    return 0
