"""`tokentop`: the live app over the user's agents (textual is imported only here, late)."""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokentop.commands.common import load_config, make_engine, need_terminal
from tokentop.engine.engine import Engine
from tokentop.render.text import safe

if TYPE_CHECKING:
    from tokentop.config import Config
    from tokentop.model import SessionKey
    from tokentop.policy.watchdog import ProcessState
    from tokentop.processes.mapper import RecordedMapper, SessionMapper

PROBE_TTL_S = 3.0
"""How long a session's process state is reused: the probe runs on the engine thread."""
EXACT_TTL_S = 30.0
"""How long a session's exact mapping (or its absence) is reused: finding one reads the
registry file."""


class ExactProbe:
    """The Watchdog's probe: the state of the process exactly mapped to a session (launched
    by `tokentop run` or reported by the hook), or None. Never scans /proc; cached per
    session, so a judgement of 500 sessions costs dict lookups."""

    def __init__(
        self,
        exact_ref: Callable[[SessionKey], Any],
        status: Callable[[Any], str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.exact_ref, self.status, self.clock = exact_ref, status, clock
        self._lock = threading.Lock()
        self._refs: dict[SessionKey, tuple[Any, float]] = {}
        self._states: dict[SessionKey, tuple[ProcessState | None, float]] = {}

    def __call__(self, key: SessionKey) -> ProcessState | None:
        now = self.clock()
        with self._lock:
            hit = self._states.get(key)
            if hit is not None and now - hit[1] < PROBE_TTL_S:
                return hit[0]
            ref = self._ref(key, now)
            found = self.status(ref) if ref is not None else None
            state: ProcessState | None = (
                found if found in ("running", "stopped", "gone") else None  # type: ignore[assignment]
            )
            self._states[key] = (state, now)
            return state

    def _ref(self, key: SessionKey, now: float) -> Any:
        hit = self._refs.get(key)
        if hit is not None and now - hit[1] < EXACT_TTL_S:
            return hit[0]  # a mapping may appear, or move (`claude --resume` in a new process)
        ref = self.exact_ref(key)
        self._refs[key] = (ref, now)
        return ref


def exact_probe(mapper: object, controller: object) -> ExactProbe | None:
    """A probe from the mapper's `exact_ref` and the controller's `status`, when both exist."""
    exact_ref = getattr(mapper, "exact_ref", None)
    status = getattr(controller, "status", None)
    if exact_ref is None or status is None:
        return None
    return ExactProbe(exact_ref, status)


def run_app(
    args: argparse.Namespace,
    engine: Engine,
    config: Config,
    mapper: SessionMapper | RecordedMapper,
    store_path: Path | None = None,
    action_log: Path | None = None,
) -> int:
    """Run the Textual app; imported here so headless commands never load textual. The
    watchdog, its keeper and the app's inbox listen before the engine starts, so the cold
    scan runs while Textual loads (~0.5 s) and nothing it judges is lost."""
    from tokentop.clock import SystemClock
    from tokentop.history.store import Store, StoreError
    from tokentop.processes.control import ProcessController, default_action_log
    from tokentop.ui.core import app_core

    try:  # the store is left open at exit: a worker may still be finishing a write
        store: Store | None = Store(store_path)
    except StoreError as exc:
        print(f"tokentop: history is off: {safe(str(exc))}", file=sys.stderr)
        store = None
    clock = SystemClock()
    controller = ProcessController(log_path=action_log or default_action_log())
    probe = exact_probe(mapper, controller)
    core = app_core(engine, config, clock, store=store, probe=probe)
    engine.start()
    from tokentop.ui.app import make_app

    app = make_app(
        engine,
        config=config,
        clock=clock,
        controller=controller,
        mapper=mapper,
        read_only=args.read_only or config.read_only,
        store=store,
        core=core,
    )
    app.run()
    return 0


def cmd_app(args: argparse.Namespace) -> int:
    """The app over the user's agents. Sessions recorded by the hook or `tokentop run` map to
    their process exactly; the rest by open file, then by a labelled guess."""
    from tokentop.processes.control import ProcessController
    from tokentop.processes.mapper import RecordedMapper, SessionMapper
    from tokentop.processes.registry import Registry, default_path
    from tokentop.telemetry.fleet import running_fleet

    need_terminal()
    config = load_config(args)
    mapper = RecordedMapper(Registry(default_path()), ProcessController(), SessionMapper())
    engine = make_engine(args, config)
    with running_fleet(args, engine, config):
        return run_app(args, engine, config, mapper)
