"""The receiver, its hub and the Prometheus exposition around one engine, as one unit.

Front-ends (the app, `watch`, `serve`) build a Fleet from their options and the config,
start it before the engine and stop it after; a listen address that is refused becomes a
ListenError with a one-line message, before anything else has started.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from tokentop.engine.engine import Engine
from tokentop.history.reconcile import PAIR_SOURCES
from tokentop.telemetry.options import Listen, ListenError, parse_listen, require_token

if TYPE_CHECKING:
    from tokentop.config import Config
    from tokentop.policy.watchdog import Watchdog
    from tokentop.processes.exporters import ExporterMap
    from tokentop.telemetry.exposition import Exposition, MetricsServer
    from tokentop.telemetry.hub import TelemetryHub
    from tokentop.telemetry.outfile import OutfileFollower
    from tokentop.telemetry.receiver import Receiver

DEFAULT_METRICS_PORT = 9469
TOKEN_ENV = "TOKENTOP_OTLP_TOKEN"
"""Overrides `[otlp] token`, so a service can keep the token out of the config file."""


class FleetOptions:
    """Where to listen, from the flags, else the config; None is off."""

    def __init__(
        self,
        otlp: Listen | None,
        prometheus: Listen | None,
        token: str,
        outfile: Path | None = None,
    ) -> None:
        self.otlp = otlp
        self.prometheus = prometheus
        self.token = token
        self.outfile = outfile

    @classmethod
    def from_args(
        cls, args: argparse.Namespace, config: Config | None, otlp_default: str = ""
    ) -> FleetOptions:
        section = config.otlp if config is not None else None
        otlp = getattr(args, "otlp", None) or (section.listen if section else "") or otlp_default
        prom = getattr(args, "prometheus", None) or (section.prometheus if section else "")
        token = os.environ.get(TOKEN_ENV) or (section.token if section else "")
        outfile = getattr(args, "gemini_outfile", None) or (
            section.gemini_outfile if section else ""
        )
        options = cls(
            parse_listen(otlp) if otlp else None,
            parse_listen(prom, DEFAULT_METRICS_PORT) if prom else None,
            token,
            Path(outfile).expanduser() if outfile else None,
        )
        options.check()
        return options

    def check(self) -> None:
        for listen, what in (
            (self.otlp, "OTLP receiver"),
            (self.prometheus, "Prometheus endpoint"),
        ):
            if listen is not None:
                require_token(listen, self.token, what)

    @property
    def wanted(self) -> bool:
        return self.otlp is not None or self.prometheus is not None or self.outfile is not None


class Fleet:
    """Started and stopped together; each part is there only when its address is set."""

    def __init__(
        self,
        engine: Engine,
        options: FleetOptions,
        config: Config | None,
        watchdog: Watchdog | None = None,
        exporters: ExporterMap | None = None,
    ) -> None:
        self.engine = engine
        self.options = options
        self.config = config
        self.watchdog = watchdog
        """The front-end's Watchdog; without one the fleet makes and feeds its own."""
        self.exporters = exporters
        """The front-end mapper's map of local apps' proven exporters (None: none kept)."""
        self.hub: TelemetryHub | None = None
        self.receiver: Receiver | None = None
        self.exposition: Exposition | None = None
        self.metrics: MetricsServer | None = None
        self.outfile: OutfileFollower | None = None

    def start(self) -> None:
        """Bind both listeners (a ListenError leaves nothing running), then serve."""
        try:
            self._start()
        except ImportError as exc:
            self.stop()
            raise ListenError(
                f"--otlp and --prometheus need the fleet extra ({exc.name} is missing): "
                "pip install 'tokentop[fleet]'"
            ) from None
        except ListenError:
            self.stop()
            raise

    def _start(self) -> None:
        opts = self.options
        if opts.otlp is not None or opts.outfile is not None:
            from tokentop.telemetry.hub import TelemetryHub

            self.hub = TelemetryHub(self.engine, exporters=self.exporters)
        if opts.otlp is not None and self.hub is not None:
            from tokentop.telemetry.receiver import Receiver

            self.receiver = Receiver(self.hub, opts.otlp, opts.token)
            self.receiver.start()
        if opts.outfile is not None and self.hub is not None:
            from tokentop.telemetry.outfile import OutfileFollower

            self.outfile = OutfileFollower(opts.outfile, self.hub)
            self.outfile.start()
        if self.hub is not None:
            self.hub.start()
            PAIR_SOURCES.append(self.hub.pairs)
        if opts.prometheus is not None:
            from tokentop.processes.action_log import default_action_log
            from tokentop.telemetry.exposition import Exposition, MetricsServer

            self.exposition = Exposition(self.config, self.hub, default_action_log())
            self.metrics = MetricsServer(self.exposition, opts.prometheus, opts.token)
            self.metrics.start()
            self._judging().subscribe(self.exposition)

    def _judging(self) -> Watchdog:
        if self.watchdog is None:
            from tokentop.config import Config
            from tokentop.policy.watchdog import Watchdog

            self.watchdog = Watchdog(self.config or Config())
            self.engine.add_listener(self.watchdog.observe)
        return self.watchdog

    def stop(self) -> None:
        if self.metrics is not None:
            self.metrics.stop()
        if self.receiver is not None:
            self.receiver.stop()
        if self.outfile is not None:
            self.outfile.stop()
        if self.hub is not None:
            self.hub.stop()
            if self.hub.pairs in PAIR_SOURCES:
                PAIR_SOURCES.remove(self.hub.pairs)

    def describe(self) -> dict[str, object]:
        """Where each part listens (the actual ports, when 0 was asked for)."""
        out: dict[str, object] = {}
        if self.receiver is not None:
            out["otlp"] = f"http://{_url_host(self.receiver.listen)}:{self.receiver.port}"
        if self.metrics is not None:
            out["metrics"] = f"http://{_url_host(self.metrics.listen)}:{self.metrics.port}/metrics"
        return out


def _url_host(listen: Listen) -> str:
    return f"[{listen.host}]" if ":" in listen.host else listen.host


@contextlib.contextmanager
def running_fleet(
    args: argparse.Namespace,
    engine: Engine,
    config: Config | None,
    watchdog: Watchdog | None = None,
    exporters: ExporterMap | None = None,
) -> Iterator[Fleet | None]:
    """The fleet the options ask for, running for the block; None when none is asked for."""
    options = FleetOptions.from_args(args, config)
    if not options.wanted:
        yield None
        return
    fleet = Fleet(engine, options, config, watchdog, exporters)
    fleet.start()
    try:
        yield fleet
    finally:
        fleet.stop()
