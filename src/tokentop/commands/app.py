"""`tokentop`: the live app over the user's agents (textual is imported only here, late)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from tokentop.commands.common import load_config, make_engine, need_terminal
from tokentop.engine.engine import Engine
from tokentop.render.text import safe

if TYPE_CHECKING:
    from tokentop.config import Config
    from tokentop.processes.mapper import RecordedMapper, SessionMapper
    from tokentop.ui.app import TokentopApp


def build_app(
    args: argparse.Namespace,
    engine: Engine,
    config: Config,
    mapper: SessionMapper | RecordedMapper,
    store_path: Path | None = None,
    action_log: Path | None = None,
    official: Path | None = None,
) -> TokentopApp:
    """The app as `tokentop` runs it (call `.run()`; textual is imported only here, so
    headless commands never load it), with its engine started. The watchdog, its keeper and
    the app's inbox listen before the engine starts, so the cold scan runs while Textual
    loads (~0.5 s) and nothing it judges is lost. The watchdog reads the budgets every
    tokentop process keeps in the store, and the actions each logs. `official`: the status
    line's state file whose windows the header shows (the user's unless given)."""
    from tokentop.clock import SystemClock
    from tokentop.history.store import Store, StoreError
    from tokentop.processes.action_log import ActionLogFollower
    from tokentop.processes.control import ProcessController, default_action_log
    from tokentop.processes.mapper import exact_probe
    from tokentop.ui.core import app_core

    try:  # the store is left open at exit: a worker may still be finishing a write
        store: Store | None = Store(store_path)
    except StoreError as exc:
        print(f"tokentop: history is off: {safe(str(exc))}", file=sys.stderr)
        store = None
    clock = SystemClock()
    log = action_log or default_action_log()
    controller = ProcessController(log_path=log, actor="app")
    probe = exact_probe(mapper, controller)
    from tokentop.history.official import state_path

    actions = ActionLogFollower(log)
    official = official or state_path()
    core = app_core(
        engine, config, clock, store=store, probe=probe, actions=actions, official=official
    )
    engine.start()
    from tokentop.ui.app import make_app

    return make_app(
        engine,
        config=config,
        clock=clock,
        controller=controller,
        mapper=mapper,
        read_only=args.read_only or config.read_only,
        store=store,
        core=core,
    )


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
    engine.spawn_scan_workers()  # while this process has one thread: forked, ready at once
    with running_fleet(args, engine, config, exporters=mapper.exporters):
        build_app(args, engine, config, mapper).run()
        return 0
