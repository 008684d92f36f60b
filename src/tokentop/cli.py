"""Command line entry point. The Textual app is imported only when it is about to run."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import msgspec

from tokentop import output
from tokentop.cache import default_cache_dir
from tokentop.cli_args import build_parser
from tokentop.engine import Engine
from tokentop.model import LedgerSnapshot
from tokentop.safetext import json_for_terminal, safe
from tokentop.sources.base import DirSource, Source
from tokentop.telemetry.options import ListenError

if TYPE_CHECKING:
    from tokentop.config import Config
    from tokentop.guard import RecordedMapper
    from tokentop.mapping import SessionMapper
    from tokentop.pricing import PriceTable

EXIT_USAGE = 2


class CliError(Exception):
    """A problem the user can fix; printed as one line, never as a traceback."""


def make_sources(args: argparse.Namespace, config: Config | None = None) -> list[Source]:
    """Agent dirs: the defaults plus the config's `[roots]`, or only the dirs given on the
    command line. Log files, from flags and from `[roots]`, are always added.

    Each source module is imported only when used: startup time is part of a warm restart.
    """
    roots = config.roots if config else {}
    given: dict[str, list[Path]] = {k: getattr(args, f"{k}_dir", None) or [] for k in AGENT_SOURCES}
    for d in (d for dirs in given.values() for d in dirs):
        if not d.is_dir():
            raise CliError(f"not a directory: {d}")
    any_given = any(given.values())
    sources: list[Source] = [
        _agent_source(key, dirs or None, [] if any_given else _paths(roots.get(key, [])))
        for key in AGENT_SOURCES
        if (dirs := given[key]) or not any_given
    ]
    for flag, kind in (("proxy_log", _litellm), ("jsonl", _generic)):
        named: list[Path] = getattr(args, flag, None) or []
        for f in named:  # a typo on the command line is an error, as for a dir
            if not f.is_file():
                raise CliError(f"no such file: {f} (--{flag.replace('_', '-')})")
        files = named + _paths(roots.get(flag, []))
        for f in files:  # one in [roots] may not be written yet: it is read when it appears
            if f.is_dir() or not f.parent.is_dir():
                raise CliError(f"not a file in an existing directory: {f}")
        if files:
            sources.append(kind(list(dict.fromkeys(f.resolve() for f in files))))
    return sources


def _paths(entries: list[str]) -> list[Path]:
    return [Path(e).expanduser() for e in entries]


AGENT_SOURCES: dict[str, tuple[str, str]] = {
    "claude": ("tokentop.sources.claude_code", "ClaudeCodeSource"),
    "codex": ("tokentop.sources.codex", "CodexSource"),
    "gemini": ("tokentop.sources.gemini", "GeminiSource"),
    "openclaw": ("tokentop.sources.openclaw", "OpenClawSource"),
    "opencode": ("tokentop.sources.opencode", "OpencodeSource"),
}
"""Agent key (as in `--KEY-dir` and `[roots]`) -> the module and class of its source."""


def _agent_source(key: str, dirs: list[Path] | None, extra: list[Path]) -> Source:
    """The agent's source over `dirs`, else its default folders plus `extra`."""
    from importlib import import_module

    module, name = AGENT_SOURCES[key]
    cls: type[DirSource] = getattr(import_module(module), name)
    if dirs is None and extra:
        dirs = cls.default_dirs(os.environ) + extra
    return cls(dirs)


def _litellm(files: list[Path]) -> Source:
    from tokentop.sources.litellm import LiteLLMSource

    return LiteLLMSource(files)


def _generic(files: list[Path]) -> Source:
    from tokentop.sources.generic import GenericJsonlSource

    return GenericJsonlSource(files)


def load_config(args: argparse.Namespace) -> Config:
    from tokentop.config import ConfigError
    from tokentop.config import load_config as load

    try:
        config = load(args.config)
    except ConfigError as exc:
        raise CliError(str(exc)) from None
    if getattr(args, "command", None) not in ("guard", "run"):
        return config
    from tokentop.session_budgets import LiveBudgets  # the budgets set with `b` in the app

    return msgspec.structs.replace(config, session_budgets=LiveBudgets(getattr(args, "db", None)))


def make_prices(config: Config) -> PriceTable:
    """The bundled table with `[prices."MODEL"]` overrides (USD per million tokens)."""
    from tokentop.lazyprices import build_table

    return build_table(config.prices)


def config_if_any(args: argparse.Namespace) -> Config | None:
    """The config when one is given or exists; None (defaults) without importing it."""
    from tokentop.dirs import user_dir

    default = user_dir("config") / "config.toml"
    return load_config(args) if args.config or default.exists() else None


def make_engine(
    args: argparse.Namespace, config: Config | None = None, sources: list[Source] | None = None
) -> Engine:
    from tokentop.lazyprices import LazyPrices

    config = config or config_if_any(args)
    prices = LazyPrices(config.prices if config else None)
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    return Engine(sources or make_sources(args, config), prices.cost, cache_dir=cache_dir)


def cmd_sessions(args: argparse.Namespace, out: TextIO) -> int:
    from tokentop import sessions_cache

    engine = make_engine(args)
    if args.json:
        remembered = sessions_cache.recall(engine)
        if remembered is not None:  # nothing changed since: see sessions_cache
            out.write(remembered.out)
            sys.stderr.write(remembered.err)
            return 0
    engine.load_cache()
    if engine.cache_note.startswith(("cache ignored", "cache unreadable")):  # said once
        sys.stderr.write(f"tokentop: {engine.cache_note}; reading everything again\n")
    engine.scan()
    engine.save_cache()
    snap = engine.snapshot()
    err = bad_files_text(snap)
    if args.json:
        blob = msgspec.json.format(msgspec.json.encode(output.sessions_list(snap)), indent=1)
        text = json_for_terminal(blob).decode() + "\n"
        sessions_cache.remember(engine, snap, text, err)
    else:
        text = output.text_table(snap) + "\n"
    out.write(text)
    sys.stderr.write(err)
    return 0


def bad_files_text(snap: LedgerSnapshot) -> str:
    """Unparseable lines in files that belong to no session (the others show in the JSON)."""
    return "".join(
        f"tokentop: {f.bad_lines} unparseable line(s) in {safe(f.path)}: {safe(f.last_error)}\n"
        for f in output.orphan_bad_files(snap)
    )


def run_app(
    args: argparse.Namespace,
    engine: Engine,
    config: Config,
    mapper: SessionMapper | RecordedMapper,
    store_path: Path | None = None,
    action_log: Path | None = None,
) -> int:
    """Run the Textual app; imported here so headless commands never load textual."""
    engine.start()  # the cold scan runs while Textual loads (~0.5 s): a first view sooner
    from tokentop.clock import SystemClock
    from tokentop.procs import ProcessController, default_action_log
    from tokentop.store import Store, StoreError
    from tokentop.ui.app import make_app

    try:  # the store is left open at exit: a worker may still be finishing a write
        store: Store | None = Store(store_path)
    except StoreError as exc:
        print(f"tokentop: history is off: {safe(str(exc))}", file=sys.stderr)
        store = None
    app = make_app(
        engine,
        config=config,
        clock=SystemClock(),
        controller=ProcessController(log_path=action_log or default_action_log()),
        mapper=mapper,
        read_only=args.read_only or config.read_only,
        store=store,
    )
    app.run()
    return 0


def need_terminal() -> None:
    """The app draws on a terminal; without one Textual fails with a traceback."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CliError(
            "the app needs a terminal (stdin and stdout are not both a TTY); "
            "`tokentop sessions` and `tokentop watch` print without one"
        )


def cmd_app(args: argparse.Namespace) -> int:
    """The app over the user's agents. Sessions recorded by the hook or `tokentop run` map to
    their process exactly; the rest by open file, then by a labelled guess."""
    from tokentop.guard import RecordedMapper
    from tokentop.mapping import SessionMapper
    from tokentop.procs import ProcessController
    from tokentop.registry import Registry, default_path
    from tokentop.telemetry.fleet import running_fleet

    need_terminal()
    config = load_config(args)
    mapper = RecordedMapper(Registry(default_path()), ProcessController(), SessionMapper())
    engine = make_engine(args, config)
    with running_fleet(args, engine, config):
        return run_app(args, engine, config, mapper)


def cmd_demo(args: argparse.Namespace) -> int:
    """The app over simulated agents that are real child processes; they die with it."""
    from tokentop.demo import DemoFleet
    from tokentop.mapping import SessionMapper
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
        store = fleet.root / "history.db"  # never the user's store or log: removed with the root
        log = fleet.root / "actions.jsonl"
        return run_app(args, engine, config, SessionMapper(fleet.refs), store, log)
    finally:
        fleet.stop()


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
    try:
        if args.command == "sessions":
            return cmd_sessions(args, sys.stdout)
        if args.command == "watch":
            from tokentop.stream import cmd_watch

            return cmd_watch(args, sys.stdout)
        if args.command == "demo":
            return cmd_demo(args)
        if args.command == "guard":
            from tokentop.guard import cmd_guard

            return cmd_guard(args)
        if args.command == "hook":
            from tokentop.hook import cmd_hook

            return cmd_hook(args)
        if args.command in ("report", "summary"):
            from tokentop.report import cmd_report, cmd_summary

            return cmd_report(args) if args.command == "report" else cmd_summary(args)
        if args.command == "serve":
            from tokentop.telemetry.serve import cmd_serve

            return cmd_serve(args)
        if args.command == "run":
            from tokentop.runner import cmd_run

            return cmd_run(args)
        return cmd_app(args)
    except (CliError, ListenError) as exc:
        print(f"tokentop: {safe(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
