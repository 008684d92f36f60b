"""The command line: the argument parser and a dispatch table to `commands/`.

Each subcommand's module is imported only when it runs, so `sessions` starts fast and the
headless commands never load textual.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tokentop import __version__
from tokentop.commands.hook_wire import import_msgspec

import_msgspec()  # before the rest: without typing_extensions, ~5 ms of every start
from tokentop.commands.common import AGENT_SOURCES, EXIT_USAGE, CliError  # noqa: E402
from tokentop.quantities import usd_arg  # noqa: E402
from tokentop.render.text import safe  # noqa: E402
from tokentop.telemetry.options import ListenError, add_fleet_args  # noqa: E402


def add_source_args(p: argparse.ArgumentParser, top: bool = False) -> None:
    """Source options, accepted before or after the subcommand.

    Subparsers get SUPPRESS defaults; otherwise their defaults would overwrite values given
    before the subcommand.
    """

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    for key, agent in AGENT_SOURCES.items():
        p.add_argument(
            f"--{key}-dir", action="append", type=Path, metavar="DIR", default=default([]),
            help=agent.help,
        )  # fmt: skip
    p.add_argument(
        "--proxy-log",
        action="append",
        type=Path,
        metavar="FILE",
        default=default([]),
        help="LiteLLM proxy log (JSONL from tokentop.integrations.litellm_callback); repeatable, "
        "read in addition to the agents' dirs",
    )
    p.add_argument(
        "--jsonl",
        action="append",
        type=Path,
        metavar="FILE",
        default=default([]),
        help="generic usage JSONL (schema in docs/proxy.md); repeatable",
    )
    p.add_argument(
        "--no-cache", action="store_true", default=default(False), help="cold scan, no cache"
    )
    p.add_argument(
        "--cache-dir", type=Path, default=default(None), metavar="DIR", help="cache location"
    )
    p.add_argument(
        "--config", type=Path, default=default(None), metavar="FILE", help="config TOML file"
    )


def _wanted(argv: Sequence[str] | None, name: str) -> bool:
    """Whether `name` may be the subcommand; its heavy argument module is imported only then,
    so `sessions` and `watch` start fast (the warm-restart target is 0.2 s in all)."""
    return argv is None or name in argv or "-h" in argv or "--help" in argv


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tokentop",
        description="top for token spend: watch AI coding agents burn tokens",
        allow_abbrev=False,  # `--json` must never be taken for `--jsonl`
    )
    add_source_args(parser, top=True)
    parser.add_argument("--version", action="version", version=f"tokentop {__version__}")
    parser.add_argument("--read-only", action="store_true", help="hide pause/kill actions")
    add_fleet_args(parser, top=True)
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)
    # Every subcommand is listed, but only the one being run gets its arguments: building
    # them all costs more than the rest of a warm `sessions` run's argument handling.
    p = sub.add_parser(
        "sessions",
        help="print per-session totals",
        description="Read the agents' files once (from the cache, then what changed) and print "
        "each session's tokens, cost, state and budget, judged as the app judges them: a table, "
        "or with --json a JSON array.",
    )
    if _wanted(argv, "sessions"):
        add_source_args(p)
        p.add_argument("--json", action="store_true", help="a JSON array, one object per session")
    p = sub.add_parser(
        "demo",
        help="the app over simulated agents (real child processes)",
        description="The app over simulated agents: real child processes writing Claude Code "
        "and Codex transcripts in a temporary folder, removed on exit. Pause and kill act on "
        "them; none of your transcripts, store or action log is read or written.",
    )
    if _wanted(argv, "demo"):
        add_source_args(p)
        p.add_argument(
            "--budget", type=usd_arg, default=2.0,
            help="$ budget per demo session, unless the config sets one (default: 2)",
        )  # fmt: skip
        p.add_argument(
            "--interval",
            type=interval_arg,
            default=0.5,
            help=f"demo agents' pace in seconds ({MIN_INTERVAL:g} to {MAX_INTERVAL:g}; "
            "default: 0.5)",
        )
    p = sub.add_parser(
        "watch",
        help="stream changes as NDJSON",
        description="Print a JSON line per session change (counters, state, budget), per "
        "detector decision and per action taken by any tokentop process; never acts.",
    )
    if _wanted(argv, "watch"):
        add_source_args(p)
        p.add_argument(
            "--ndjson", "--json", action="store_true", help="one JSON object per line (default)"
        )
        add_fleet_args(p)
    p = sub.add_parser(
        "guard",
        help="enforce the policy headless; NDJSON decisions and actions",
        description="Judge every session as the app does and carry out the policy's pause and "
        "kill decisions on exactly mapped processes, without a screen; one JSON line per "
        "decision and action.",
    )
    if _wanted(argv, "guard"):
        add_source_args(p)
        p.add_argument("--dry-run", action="store_true", help="decide and print, never signal")
        p.add_argument(
            "--ndjson", "--json", action="store_true", help="one JSON object per line (default)"
        )
        p.add_argument("--registry", type=Path, metavar="FILE", help="session→process records file")
        add_fleet_args(p)
    p = sub.add_parser(
        "hook",
        help="Claude Code hook (SessionStart, PreToolUse); hook install",
        description="Run by Claude Code with its hook JSON on stdin: maps the session to its "
        "agent process, and blocks tool calls of a session over budget or looping. "
        "`tokentop hook install` adds it to Claude Code's settings.",
    )
    if _wanted(argv, "hook"):
        from tokentop.commands.hook_answer import add_hook_args

        add_hook_args(p)
        p.add_argument(
            "--config", type=Path, metavar="FILE", default=argparse.SUPPRESS,
            help="config TOML file",
        )  # fmt: skip
    p = sub.add_parser(
        "statusline",
        help="Claude Code status line: one line, and its windows",
        description="Run by Claude Code with its status JSON on stdin: prints one line (tokens, "
        "cost, burn, budget, the 5-hour and 7-day windows) and records the windows for the "
        "app's header. `tokentop hook install` offers to set it up.",
    )
    p.add_argument(
        "--config", type=Path, default=argparse.SUPPRESS, metavar="FILE", help="config TOML file"
    )
    p = sub.add_parser(
        "report",
        help="recorded sessions: spend, commits, $/commit, by group",
        description="Scan, record the sessions in the store, and report them by session, day, "
        "week, month, project, agent, model, job or 5-hour block.",
    )
    q = sub.add_parser(
        "summary",
        help="one recorded session as Markdown",
        description="One recorded session (by id or a unique prefix) as Markdown: totals, "
        "models, tools, how it ended, and the commits made in its folder meanwhile.",
    )
    if _wanted(argv, "report") or _wanted(argv, "summary"):
        from tokentop.commands.report import report_args, summary_args

        add_source_args(p)
        add_source_args(q)
        report_args(p)
        summary_args(q)
    p = sub.add_parser(
        "serve",
        help="headless team tokentop: OTLP in, Prometheus out (fleet)",
        description="Receive the agents' OpenTelemetry (OTLP/HTTP) from many machines and serve "
        "every session's counters as Prometheus metrics, without a screen (docs/fleet.md).",
    )
    if _wanted(argv, "serve"):
        from tokentop.commands.serve import add_serve_args

        add_source_args(p)
        add_fleet_args(p)
        add_serve_args(p)
    p = sub.add_parser("run", help="launch an agent and enforce its budget (see run --help)")
    if _wanted(argv, "run"):
        from tokentop.commands.run import add_run_args

        add_source_args(p)
        add_run_args(p)
    return parser


class _Parser(argparse.ArgumentParser):
    """Subcommand parsers: no prefix matching either (argparse's default allows it)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False
        super().__init__(*args, **kwargs)


EXIT_INTERRUPTED = 130
"""128 + SIGINT, as shells report a command ended by Ctrl+C (cold-scan workers end with us)."""
MIN_INTERVAL = 0.05
MAX_INTERVAL = 60.0


def interval_arg(text: str) -> float:
    """The demo's pace: below 0.05 s its agents would write hundreds of MB a minute."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not MIN_INTERVAL <= value <= MAX_INTERVAL:  # also refuses nan
        raise argparse.ArgumentTypeError(
            f"must be between {MIN_INTERVAL:g} and {MAX_INTERVAL:g} seconds: {text!r}"
        )
    return value


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser(sys.argv[1:] if argv is None else argv).parse_args(argv)
    try:
        if args.command == "sessions":
            from tokentop.commands.sessions import cmd_sessions

            return cmd_sessions(args, sys.stdout)
        if args.command == "watch":
            from tokentop.commands.watch import cmd_watch

            return cmd_watch(args, sys.stdout)
        if args.command == "demo":
            from tokentop.commands.demo import cmd_demo

            return cmd_demo(args)
        if args.command == "guard":
            from tokentop.commands.guard import cmd_guard

            return cmd_guard(args)
        if args.command == "hook":
            from tokentop.commands.hook_answer import cmd_hook

            return cmd_hook(args)
        if args.command in ("report", "summary"):
            from tokentop.commands.report import cmd_report, cmd_summary

            return cmd_report(args) if args.command == "report" else cmd_summary(args)
        if args.command == "statusline":
            from tokentop.commands.statusline import cmd_statusline

            return cmd_statusline(args.config)
        if args.command == "serve":
            from tokentop.commands.serve import cmd_serve

            return cmd_serve(args)
        if args.command == "run":
            from tokentop.commands.run import cmd_run

            return cmd_run(args)
        from tokentop.commands.app import cmd_app

        return cmd_app(args)
    except (CliError, ListenError) as exc:
        print(f"tokentop: {safe(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:  # Ctrl+C: the shell's status for SIGINT, and no traceback
        print(file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
