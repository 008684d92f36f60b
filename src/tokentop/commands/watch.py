"""`tokentop watch --ndjson`: session changes, detector decisions and actions, one per line.

Session states and decisions come from the same Watchdog as the app and `guard` (nothing is
acted on here);
actions are read from the shared action log, so what the app or `guard` did shows up too.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any, TextIO

import msgspec

from tokentop.engine.tail import Tailer, TailState
from tokentop.policy.watchdog import Judged, Judgement
from tokentop.processes.control import ActionResult, ProcessController, default_action_log
from tokentop.render import records as output

_ACTION = msgspec.json.Decoder(ActionResult)


class NdjsonWriter:
    """A Watchdog subscriber: a line per session whose counters or state changed, and one per
    new decision (nothing is acted on here)."""

    def __init__(self, out: TextIO) -> None:
        from tokentop.commands.guard import NdjsonOut

        self.emit = NdjsonOut(out)
        """Thread-safe: the action follower writes through it too."""
        self.seen: dict[str, tuple[Any, ...]] = {}

    @staticmethod
    def _mark(j: Judged) -> tuple[Any, ...]:
        """What a new line is printed for: counters, and the state, including a session that
        stops burning (its pace fell to zero) or whose budget or flags changed."""
        s, use = j.session, j.use
        burning = bool(s.tokens_per_min or s.usd_per_hour)
        return (
            s.tokens, s.responses, s.tool_calls, s.tool_errors, s.bad_lines, s.cwd,
            j.state, burning, use.budget, use.origin, j.flags,
        )  # fmt: skip

    def __call__(self, judgement: Judgement) -> None:
        """Engine thread: most ticks change nothing, so the indexes are built only on need."""
        from tokentop.commands.guard import decision_dict

        changed: list[Judged] = []
        for j in judgement.sessions:
            sid, mark = str(j.session.key), self._mark(j)
            if self.seen.get(sid) != mark:
                self.seen[sid] = mark
                changed.append(j)
        if changed:
            files = {f.path: f for f in judgement.snapshot.files}
            for j in changed:
                self.emit({"type": "session", **output.judged_dict(j, files)})
        if judgement.decisions:
            sessions = {j.session.key: j.session for j in judgement.sessions}
            for decision in judgement.decisions:
                self.emit(decision_dict(decision, sessions[decision.session]))


class ActionFollower:
    """Tails the action log from its current end; each new action becomes an NDJSON line."""

    def __init__(self, path: Path, writer: NdjsonWriter) -> None:
        self.writer = writer
        size = path.stat().st_size if path.exists() else 0
        self.tailer = Tailer(TailState(path=str(path), offset=size))
        self.tailer.read_new()  # records the file's identity, so a later rotation resets
        self.tailer.state.offset = size

    def poll(self) -> None:
        from tokentop.commands.guard import action_line

        result = self.tailer.read_new()
        for line in result.data.splitlines():
            try:
                action = _ACTION.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            self.writer.emit(action_line(action))


def cmd_watch(args: argparse.Namespace, out: TextIO) -> int:
    from tokentop.commands.common import load_config, make_engine, make_watchdog
    from tokentop.telemetry.fleet import running_fleet

    config = load_config(args)
    engine = make_engine(args, config)
    engine.spawn_scan_workers()  # forked while this process has one thread
    controller = ProcessController()
    watchdog = make_watchdog(config, controller=controller)
    writer = NdjsonWriter(out)
    follower = ActionFollower(default_action_log(), writer)
    done = threading.Event()
    engine.add_listener(watchdog.observe)
    watchdog.subscribe(writer)
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with running_fleet(args, engine, config, watchdog):
        engine.start()
        try:
            while not done.wait(0.5):
                if engine.failure is not None:
                    sys.stderr.write(engine.failure.line() + "\n")
                    return 1
                follower.poll()
        except KeyboardInterrupt:
            pass
        finally:
            engine.stop()
    return 0
