"""What every subcommand shares: config loading, sources from flags, the engine."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from tokentop.agents import BY_KEY, Agent
from tokentop.engine.engine import Engine
from tokentop.engine.state_cache import default_cache_dir
from tokentop.render.text import safe
from tokentop.sources.base import DirSource, Source, prefixes, under

if TYPE_CHECKING:
    from collections.abc import Callable

    from tokentop.config import Config
    from tokentop.model import SessionKey
    from tokentop.policy.watchdog import ProcessState, Watchdog
    from tokentop.pricing import PriceTable
    from tokentop.processes.control import ProcessController
    from tokentop.processes.mapper import RecordedMapper

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


AGENT_SOURCES: dict[str, Agent] = BY_KEY
"""Agent key (as in `--KEY-dir` and `[roots]`) -> its row in `tokentop.agents`: the one
table behind the flags, `[roots]` and `make_sources`."""


def _agent_source(key: str, dirs: list[Path] | None, extra: list[Path]) -> Source:
    """The agent's source over `dirs`, else its default folders plus `extra`."""
    from importlib import import_module

    entry = AGENT_SOURCES[key]
    cls: type[DirSource] = getattr(import_module(entry.module), entry.cls)
    if dirs is None and extra:
        dirs = cls.default_dirs(os.environ) + extra
    return cls(dirs)


def empty_dir_warnings(args: argparse.Namespace, engine: Engine) -> list[str]:
    """A line for each `--KEY-dir` given that yielded no transcript, with the layout its
    source expected (a typo or a wrong level reads as an empty history otherwise)."""
    known = list(engine.files)
    lines = []
    for source in engine.sources:
        given: list[Path] = getattr(args, f"{source.name}_dir", None) or []
        if not isinstance(source, DirSource):
            continue
        for folder in given:
            where = prefixes(source.roots_in(folder))
            if not any(under(name, where) for name in known):
                layout = getattr(source, "layout", "DIR/**/*.jsonl")
                lines.append(
                    f"tokentop: --{source.name}-dir {safe(str(folder))}: no transcripts found "
                    f"(expected {layout})"
                )
    return lines


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
    if getattr(args, "command", None) not in ("guard", "run", "sessions", "watch", "serve"):
        return config
    from tokentop.history.session_budgets import LiveBudgets  # the budgets set with `b` in the app

    return msgspec.structs.replace(config, session_budgets=LiveBudgets(getattr(args, "db", None)))


def make_prices(config: Config) -> PriceTable:
    """The bundled table with `[prices."MODEL"]` overrides (USD per million tokens)."""
    from tokentop.pricing import build_table

    return build_table(config.prices)


def config_if_any(args: argparse.Namespace) -> Config | None:
    """The config when one is given or exists; None (defaults) without importing it."""
    from tokentop.dirs import user_dir

    default = user_dir("config") / "config.toml"
    return load_config(args) if args.config or default.exists() else None


def make_engine(
    args: argparse.Namespace, config: Config | None = None, sources: list[Source] | None = None
) -> Engine:
    from tokentop.pricing import LazyPrices

    config = config or config_if_any(args)
    prices = LazyPrices(config.prices if config else None)
    cache_dir = None if args.no_cache else (args.cache_dir or default_cache_dir())
    return Engine(sources or make_sources(args, config), prices.cost, cache_dir=cache_dir)


def need_terminal() -> None:
    """The app draws on a terminal; without one Textual fails with a traceback."""
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise CliError(
            "the app needs a terminal (stdin and stdout are not both a TTY); "
            "`tokentop sessions` and `tokentop watch` print without one"
        )


def make_watchdog(
    config: Config,
    mapper: RecordedMapper | None = None,
    controller: ProcessController | None = None,
) -> Watchdog:
    """The one Watchdog of a front-end: it knows processes only through exact mappings
    (the registry of `run` and the hook, and agents writing their files), and what every
    tokentop process did to them through the shared action log."""
    from tokentop.policy.watchdog import Watchdog
    from tokentop.processes.action_log import ActionLogFollower

    actions = ActionLogFollower()  # what every tokentop process did, its history first
    if mapper is None and controller is None:
        return Watchdog(config, probe=LazyProbe(), actions=actions)
    return Watchdog(config, probe=default_probe(mapper, controller), actions=actions)


def default_probe(
    mapper: RecordedMapper | None = None, controller: ProcessController | None = None
) -> Callable[[SessionKey], ProcessState | None] | None:
    """The exact probe over the registry (`mapper`) and `controller`, made as needed."""
    from tokentop.processes.control import ProcessController
    from tokentop.processes.mapper import RecordedMapper, SessionMapper, exact_probe
    from tokentop.processes.registry import Registry, default_path

    controller = controller or ProcessController()
    if mapper is None:
        mapper = RecordedMapper(Registry(default_path()), controller, SessionMapper())
    return exact_probe(mapper, controller)


class LazyProbe:
    """`default_probe`, made the first time a session is asked about: the Watchdog asks only
    about sessions of the last day, so `sessions` over an old history never imports psutil
    nor reads the registry (~10 ms of its start)."""

    def __init__(self) -> None:
        self._probe: Callable[[SessionKey], ProcessState | None] | None = None
        self._made = False

    def __call__(self, key: SessionKey) -> ProcessState | None:
        if not self._made:
            self._probe, self._made = default_probe(), True
        return self._probe(key) if self._probe is not None else None

    def forget(self, key: SessionKey) -> None:
        forget = getattr(self._probe, "forget", None)
        if forget is not None:
            forget(key)

    def refresh(self) -> None:
        refresh = getattr(self._probe, "refresh", None)
        if refresh is not None:
            refresh()
