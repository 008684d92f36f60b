"""`tokentop demo`: the app over simulated agents that are real child processes."""

from __future__ import annotations

import argparse
import signal

import msgspec

from tokentop.commands.app import build_app
from tokentop.commands.common import load_config, make_engine, need_terminal
from tokentop.sources.base import Source


def cmd_demo(args: argparse.Namespace) -> int:
    """The app over simulated agents that are real child processes; they die with it."""
    from tokentop.demo.fleet import DemoFleet
    from tokentop.processes.mapper import SessionMapper
    from tokentop.sources.claude_code import ClaudeCodeSource
    from tokentop.sources.codex import CodexSource

    need_terminal()
    config = load_config(args)
    if not config.budgets.default.is_set:
        config = msgspec.structs.replace(
            config, budgets=msgspec.structs.replace(config.budgets, usd=args.budget)
        )
    fleet = DemoFleet(interval=args.interval)
    signal.signal(signal.SIGTERM, _exit_on_signal)
    signal.signal(signal.SIGHUP, _exit_on_signal)
    try:
        fleet.start()
        sources: list[Source] = [
            ClaudeCodeSource(config_dirs=[fleet.claude_root]),
            CodexSource(homes=[fleet.codex_root]),
        ]
        args.no_cache = True
        engine = make_engine(args, config, sources)
        store = fleet.root / "history.db"  # never the user's store, log or status-line
        log = fleet.root / "actions.jsonl"  # windows: removed with the root
        official = fleet.root / "statusline.json"
        build_app(args, engine, config, SessionMapper(fleet.refs), store, log, official).run()
        return 0
    finally:
        fleet.stop()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)
