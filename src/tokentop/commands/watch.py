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

from tokentop.policy.watchdog import Judged, Judgement
from tokentop.processes.action_log import ActionLogFollower
from tokentop.processes.control import ProcessController, default_action_log
from tokentop.render import records as output


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


class ActionLines:
    """Each action appended to the shared log from now on becomes an NDJSON line."""

    def __init__(self, path: Path, writer: NdjsonWriter) -> None:
        self.writer = writer
        self.follow = ActionLogFollower(path, from_end=True)

    def poll(self) -> None:
        from tokentop.commands.guard import action_line

        for action in self.follow():
            self.writer.emit(action_line(action))


def cmd_watch(args: argparse.Namespace, out: TextIO) -> int:
    from tokentop.commands.common import (
        empty_dir_warnings,
        load_config,
        make_engine,
        make_watchdog,
    )
    from tokentop.telemetry.fleet import running_fleet

    config = load_config(args)
    engine = make_engine(args, config)
    engine.spawn_scan_workers()  # forked while this process has one thread
    controller = ProcessController()
    watchdog = make_watchdog(config, controller=controller)
    writer = NdjsonWriter(out)
    follower = ActionLines(default_action_log(), writer)
    done = threading.Event()
    engine.add_listener(watchdog.observe)
    watchdog.subscribe(writer)
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with running_fleet(args, engine, config, watchdog):
        engine.start()
        warned = False
        try:
            while not done.wait(0.5):
                if engine.failure is not None:
                    sys.stderr.write(engine.failure.line() + "\n")
                    return 1
                follower.poll()
                if not warned and engine.scanned.is_set():
                    warned = True
                    for line in empty_dir_warnings(args, engine):
                        sys.stderr.write(line + "\n")
        except KeyboardInterrupt:
            return 130  # as shells report Ctrl+C; SIGTERM ends it with 0
        finally:
            engine.stop()
    return 0
