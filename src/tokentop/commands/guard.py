"""`tokentop guard`: enforce the policy without a screen, printing decisions and actions as NDJSON.

The engine follows the transcripts, and the Watchdog judges every snapshot (and one a second,
so rates decay and stalls show); the guard acts on its decisions, and the history keeper
records them and how each session ended. A decision whose configured action is pause or
kill is carried out on the session's process only when it is mapped exactly: a hook or launch
record, or a known agent install holding the session's file open (Codex), or, for a session
known only from a local app's traces (`--otlp`), the process proven to export them
(processes/exporters.py). A process guessed from the cwd, and any other session known from
telemetry, is reported as what would have been done, never acted on. Lines printed:

    {"type": "listening", "otlp": "http://127.0.0.1:4318"}  with --otlp, first
    {"type": "ready", "sessions": N}                        after the first full scan
    {"type": "decision", "session": "claude:…", "detector": "loop", "action": "kill", …}
    {"type": "action", "action": "kill", "ok": true, "pid": 123, "message": "…", …}
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any, TextIO

import msgspec
import psutil

from tokentop.clock import Clock, SystemClock
from tokentop.config import Config
from tokentop.engine.engine import Engine
from tokentop.history.keeper import HistoryKeeper
from tokentop.history.store import Store, StoreError
from tokentop.model import SessionSnapshot
from tokentop.policy.detectors import Decision
from tokentop.policy.watchdog import Judgement, Watchdog
from tokentop.processes.control import ActionResult, ProcessController, default_action_log
from tokentop.processes.finding import ProcessRef
from tokentop.processes.mapper import RecordedMapper, SessionMapper, automatic_refusal
from tokentop.processes.registry import Registry, default_path
from tokentop.render.records import iso
from tokentop.render.text import json_for_terminal, safe

ACTOR = "guard"
"""How this command signs the actions it logs."""

Emit = Callable[[dict[str, Any]], None]


class Guard:
    """Carries out the Watchdog's decisions that the config allows, on exact mappings only."""

    def __init__(
        self,
        config: Config,
        controller: ProcessController,
        mapper: RecordedMapper,
        emit: Emit,
        watchdog: Watchdog,
        clock: Clock | None = None,
        *,
        act: bool = True,
    ) -> None:
        self.config = config
        self.controller = controller
        self.mapper = mapper
        self.emit = emit
        self.watchdog = watchdog
        self.clock: Clock = clock or SystemClock()
        self.act = act

    def check(self, judgement: Judgement) -> list[Decision]:
        """Emit each new decision and enforce the ones that pause or kill."""
        self.mapper.observe(j.session for j in judgement.sessions if j.state == "live")
        if not judgement.decisions:
            return []
        sessions = {j.session.key: j.session for j in judgement.sessions}
        for decision in judgement.decisions:
            session = sessions[decision.session]
            self.emit(decision_dict(decision, session))
            if decision.action in ("pause", "kill"):
                self.enforce(decision, session)
        return list(judgement.decisions)

    def enforce(self, decision: Decision, session: SessionSnapshot) -> None:
        if session.from_telemetry and self.mapper.exporter_of(session) is None:
            self._not_acted(decision, 0, telemetry_note(session))  # a sender's word: an alert
            return
        ref = self.mapper.processes_for(session)  # mapping only reads: a dry run does it too
        origin = f"policy:{decision.detector}"
        dry = "" if self.act else "dry run: "
        if ref is None:
            self._not_acted(decision, 0, dry + "no process is mapped to this session; not acted")
        elif runner := launched_by_run(ref):
            note = f"its `tokentop run` (pid {runner}) enforces it; not acted"
            self._not_acted(decision, ref.pid, dry + note, ref)
        elif refusal := automatic_refusal(decision.action, ref):
            self._not_acted(decision, ref.pid, dry + refusal, ref)
        elif not self.act:
            would = f"dry run: would {decision.action} pid {ref.pid}; nothing was signalled"
            self._not_acted(decision, ref.pid, would, ref)
        else:
            verb = decision.verb
            result = self.controller.carry_out(
                verb, ref, decision.reason, origin, session=str(session.key)
            )
            self.watchdog.note_action(session.key, verb, result.ok, result.timestamp, result.origin)
            self.emit(action_dict(result, decision, ref))

    def _not_acted(
        self, decision: Decision, pid: int, message: str, ref: ProcessRef | None = None
    ) -> None:
        verb = decision.verb
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


def launched_by_run(ref: ProcessRef) -> int:
    """The pid of the live `tokentop run` that launched `ref`'s process (0: none). That run
    judges the same budget (the store's) and acts itself; two enforcers would race to act
    on one agent. Read from the command line, which only ever makes the guard hold back."""
    if ref.how != "launched":
        return 0
    try:
        parent = psutil.Process(ref.pid).parent()
        argv = parent.cmdline() if parent is not None else []
    except psutil.Error:
        return 0
    words = [os.path.basename(a) for a in argv[:4]]
    is_run = "run" in words and any(w.startswith("tokentop") for w in (*words, *argv[:4]))
    return parent.pid if parent is not None and is_run else 0


def telemetry_note(session: SessionSnapshot) -> str:
    if session.remote:
        return (
            f"the session runs on {session.host}; tokentop can't signal another machine "
            "(an alert only; run guard there)"
        )
    return (
        "the session is known from telemetry only (its host name is a sender's claim, "
        "not evidence read here): an alert only"
    )


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


def action_line(result: ActionResult) -> dict[str, Any]:
    """An action as an NDJSON object (guard's own, or one read back from the action log)."""
    data: dict[str, Any] = {"type": "action", **msgspec.to_builtins(result)}
    data["time"] = iso(result.timestamp)
    return data


def action_dict(result: ActionResult, decision: Decision, ref: ProcessRef | None) -> dict[str, Any]:
    data = action_line(result)
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


def run(
    engine: Engine,
    watchdog: Watchdog,
    guard: Guard,
    stop: threading.Event,
    warnings: Callable[[], list[str]] = list,
) -> bool:
    """Follow the engine until `stop` is set, acting on each judgement's decisions in order.
    False if the engine failed (its reason is then printed on stderr). `warnings` are said
    on stderr once the first scan is done (a `--*-dir` that held no transcript)."""
    queue: deque[Judgement] = deque()
    wake = threading.Event()

    def on_judgement(judgement: Judgement) -> None:  # the engine thread: hand over only
        if judgement.decisions or not queue:
            queue.append(judgement)  # decisions are never dropped; a quiet one is enough
        wake.set()

    engine.add_listener(watchdog.observe)
    watchdog.subscribe(on_judgement)
    engine.start()
    ready = False
    try:
        while not stop.is_set():
            wake.wait(1.0)
            wake.clear()
            if engine.failure is not None:
                print(engine.failure.line(), file=sys.stderr)
                return False
            while queue:
                judgement = queue.popleft()
                if not ready and engine.scanned.is_set():
                    ready = True
                    guard.emit({"type": "ready", "sessions": len(judgement.sessions)})
                    for line in warnings():
                        print(line, file=sys.stderr)
                guard.check(judgement)
    finally:
        engine.stop()
    return True


def cmd_guard(args: argparse.Namespace) -> int:
    from tokentop.commands.common import (
        empty_dir_warnings,
        load_config,
        make_engine,
        make_watchdog,
    )
    from tokentop.telemetry.fleet import running_fleet

    config = load_config(args)
    controller = ProcessController(log_path=default_action_log(), actor=ACTOR)
    registry = Registry(args.registry or default_path())
    mapper = RecordedMapper(registry, controller, SessionMapper())
    engine = make_engine(args, config)
    engine.spawn_scan_workers()  # forked while this process has one thread
    watchdog = make_watchdog(config, mapper, controller)
    keeper = open_keeper(config, engine, watchdog, "findings not recorded")
    out = NdjsonOut(sys.stdout)
    guard = Guard(config, controller, mapper, out, watchdog, act=not args.dry_run)
    warnings = partial(empty_dir_warnings, args, engine)
    with running_fleet(args, engine, config, watchdog, mapper.exporters) as fleet:
        if fleet is not None:  # --otlp: local apps' traces, enforced on proven exporters
            out({"type": "listening", **fleet.describe()})
        return until_signalled(engine, watchdog, guard, *closers(keeper), warnings=warnings)


def until_signalled(
    engine: Engine,
    watchdog: Watchdog,
    guard: Guard,
    *closing: Callable[[], None],
    warnings: Callable[[], list[str]] = list,
) -> int:
    """Run the guard until SIGTERM or Ctrl+C, then close `closing` in order; 1 if the engine
    failed."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    try:
        return 0 if run(engine, watchdog, guard, stop, warnings) else 1
    except KeyboardInterrupt:
        return 130  # as shells report Ctrl+C; SIGTERM ends it with 0
    finally:
        for close in closing:
            close()


def closers(keeper: HistoryKeeper | None) -> list[Callable[[], None]]:
    return [] if keeper is None else [lambda: keeper.close(timeout=10)]


def open_keeper(
    config: Config, engine: Engine, watchdog: Watchdog, what: str
) -> HistoryKeeper | None:
    """The history keeper over the user's store, subscribed; None (said once) without one."""
    try:
        store = Store()
    except StoreError as exc:
        print(f"tokentop: {what}: {safe(str(exc))}", file=sys.stderr)
        return None

    def failed(exc: Exception) -> None:
        print(f"tokentop: {what}: {safe(str(exc))}", file=sys.stderr)

    keeper = HistoryKeeper(
        store,
        config,
        SystemClock(),
        minutes_for=engine.minutes,
        on_error=failed,
        after=engine.scanned,
    )
    watchdog.subscribe(keeper.take)
    return keeper
