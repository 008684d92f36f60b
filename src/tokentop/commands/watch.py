"""`tokentop watch --ndjson`: session changes, detector decisions and actions, one per line.

Decisions come from the same policy as the app and `guard` (nothing is acted on here);
actions are read from the shared action log, so what the app or `guard` did shows up too.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

import msgspec

from tokentop.engine.tail import Tailer, TailState
from tokentop.model import LedgerSnapshot, SessionSnapshot
from tokentop.policy.detectors import PolicyState, evaluate
from tokentop.processes.control import ActionResult, default_action_log
from tokentop.render import records as output
from tokentop.render.text import json_for_terminal

if TYPE_CHECKING:
    from tokentop.clock import Clock
    from tokentop.config import Config

_ACTION = msgspec.json.Decoder(ActionResult)


class NdjsonWriter:
    """Prints a line per session whose counters changed, and per new policy decision."""

    def __init__(self, out: TextIO, config: Config | None = None, clock: Clock | None = None):
        self.out = out
        self.config = config
        self.clock = clock
        self.policy = PolicyState()
        self.seen: dict[str, tuple[Any, ...]] = {}
        self.lock = threading.Lock()

    @staticmethod
    def _mark(s: SessionSnapshot) -> tuple[Any, ...]:
        return (s.tokens, s.responses, s.tool_calls, s.tool_errors, s.bad_lines, s.cwd)

    def __call__(self, snap: LedgerSnapshot) -> None:
        files = {f.path: f for f in snap.files}
        with self.lock:
            for s in snap.sessions:
                sid, mark = str(s.key), self._mark(s)
                if self.seen.get(sid) != mark:
                    self.seen[sid] = mark
                    self.emit({"type": "session", **output.session_dict(s, files)})
                self._decide(s, snap.taken_at)

    def _decide(self, s: SessionSnapshot, now: float) -> None:
        if self.config is None:
            return
        from tokentop.commands.guard import decision_dict

        for decision in evaluate(s, self.config, now, self.policy):
            self.emit(decision_dict(decision, s))

    def emit(self, obj: dict[str, Any]) -> None:
        self.out.write(json_for_terminal(msgspec.json.encode(obj)).decode() + "\n")
        self.out.flush()


class ActionFollower:
    """Tails the action log from its current end; each new action becomes an NDJSON line."""

    def __init__(self, path: Path, writer: NdjsonWriter) -> None:
        self.writer = writer
        size = path.stat().st_size if path.exists() else 0
        self.tailer = Tailer(TailState(path=str(path), offset=size))
        self.tailer.read_new()  # records the file's identity, so a later rotation resets
        self.tailer.state.offset = size

    def poll(self) -> None:
        result = self.tailer.read_new()
        for line in result.data.splitlines():
            try:
                action = _ACTION.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            data = {"type": "action", **msgspec.to_builtins(action)}
            data["time"] = output.iso(action.timestamp)
            with self.writer.lock:
                self.writer.emit(data)


def cmd_watch(args: argparse.Namespace, out: TextIO) -> int:
    from tokentop.commands.common import load_config, make_engine
    from tokentop.telemetry.fleet import running_fleet

    config = load_config(args)
    engine = make_engine(args, config)
    writer = NdjsonWriter(out, config)
    follower = ActionFollower(default_action_log(), writer)
    done = threading.Event()
    engine.add_listener(writer)
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with running_fleet(args, engine, config):
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
