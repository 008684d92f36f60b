"""`tokentop serve`: a headless team tokentop: OTLP in, Prometheus out, policy as NDJSON.

Decisions about sessions on other machines are alerts (tokentop can't signal another
machine's processes); local sessions are enforced as by `guard` unless --dry-run.
"""

from __future__ import annotations

import argparse
import sys

ACTOR = "serve"
"""How this command signs the actions it logs."""

DEFAULT_LISTEN = "127.0.0.1:4318"


def add_serve_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dry-run", action="store_true", help="decide and print, never signal")


def cmd_serve(args: argparse.Namespace) -> int:
    from tokentop.commands.common import load_config, make_engine, make_watchdog
    from tokentop.commands.guard import Guard, NdjsonOut, closers, open_keeper, until_signalled
    from tokentop.processes.control import ProcessController, default_action_log
    from tokentop.processes.mapper import RecordedMapper, SessionMapper
    from tokentop.processes.registry import Registry, default_path
    from tokentop.telemetry.fleet import Fleet, FleetOptions

    config = load_config(args)
    engine = make_engine(args, config)
    controller = ProcessController(log_path=default_action_log(), actor=ACTOR)
    mapper = RecordedMapper(Registry(default_path()), controller, SessionMapper())
    watchdog = make_watchdog(config, mapper, controller)
    options = FleetOptions.from_args(args, config, DEFAULT_LISTEN)
    fleet = Fleet(engine, options, config, watchdog, mapper.exporters)
    fleet.start()
    keeper = open_keeper(config, engine, watchdog, "history not recorded")
    out = NdjsonOut(sys.stdout)
    out({"type": "listening", **fleet.describe()})
    guard = Guard(config, controller, mapper, out, watchdog, act=not args.dry_run)
    return until_signalled(engine, watchdog, guard, fleet.stop, *closers(keeper))
