"""Fleet command-line options; imports nothing heavy, so every command can offer them."""

from __future__ import annotations

import argparse


class ListenError(Exception):
    """A listen address that can't or mustn't be used; printed as one line."""


def add_fleet_args(p: argparse.ArgumentParser, top: bool = False) -> None:
    """`--otlp` and `--prometheus`, accepted before or after the subcommand (see cli)."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    p.add_argument(
        "--otlp",
        metavar="[HOST:]PORT",
        default=default(None),
        help="receive the agents' OpenTelemetry (OTLP/HTTP) here, e.g. 4318 (loopback); "
        "beyond loopback only with [otlp] token (docs/fleet.md)",
    )
    p.add_argument(
        "--prometheus",
        metavar="[HOST:]PORT",
        default=default(None),
        help="serve Prometheus /metrics here, e.g. 9469 (never 9464, Claude Code's)",
    )
    p.add_argument(
        "--gemini-outfile",
        metavar="FILE",
        default=default(None),
        help="follow Gemini CLI's telemetry outfile (its `telemetry.outfile` setting)",
    )
