"""Prometheus exposition of the ledger: /metrics through prometheus_client.

Counters are sums over every session (they only grow, as the ledger never forgets one);
gauges exist per session only for sessions active within the last hour, so the series
count stays bounded however long tokentop runs. Aggregates are always there. Label values
are cut to `MAX_LABEL` characters and at most `MAX_SERIES` label sets are kept per family
(the rest are summed under project "_other"), because the values come from telemetry.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

import msgspec
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app
from prometheus_client.registry import Collector, CollectorRegistry

from tokentop.engine.tail import Tailer, TailState
from tokentop.model import SessionSnapshot, base_name
from tokentop.policy.watchdog import Judged, Judgement
from tokentop.processes.control import ActionResult
from tokentop.telemetry.options import Listen, ListenError, require_token, token_ok
from tokentop.telemetry.receiver import Served

if TYPE_CHECKING:
    from tokentop.config import Config
    from tokentop.telemetry.hub import TelemetryHub

MAX_LABEL = 128
MAX_SERIES = 2000
ACTIVE_S = 3600.0
KINDS = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h", "reasoning")
CLAUDE_EXPORTER_PORT = 9464
_ACTION = msgspec.json.Decoder(ActionResult)


class Exposition(Collector):
    """Subscribes to the Watchdog's judgements and yields metric families on each scrape."""

    def __init__(
        self,
        config: Config | None = None,
        hub: TelemetryHub | None = None,
        action_log: Path | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.config = config
        self.hub = hub
        self.clock = clock or time.time
        self.local_host = socket.gethostname()
        self.judgement: Judgement | None = None
        self.decisions: dict[tuple[str, ...], int] = {}
        self.actions: dict[tuple[str, ...], int] = {}
        self.lock = threading.Lock()
        self._actions = _follower(action_log) if action_log is not None else None

    def __call__(self, judgement: Judgement) -> None:
        """Watchdog subscriber: keep the judgement, count its new decisions."""
        remote = {j.session.key for j in judgement.sessions if j.session.remote}
        found = [
            (d.detector, "alert" if d.session in remote else d.action) for d in judgement.decisions
        ]
        with self.lock:
            self.judgement = judgement
            for pair in found:
                self.decisions[pair] = self.decisions.get(pair, 0) + 1

    def collect(self) -> Iterator[Metric]:
        self._read_actions()
        with self.lock:
            judgement = self.judgement
            decisions, actions = dict(self.decisions), dict(self.actions)
        judged = judgement.sessions if judgement is not None else ()
        yield from self._totals(tuple(j.session for j in judged))
        yield from self._live(judged)
        yield _counter("tokentop_decisions", "Policy decisions", ("detector", "action"), decisions)
        yield _counter("tokentop_actions", "Actions on processes", ("action", "ok"), actions)
        if self.hub is not None:
            yield from _receiver_metrics(self.hub)

    def labels(self, s: SessionSnapshot) -> tuple[str, str, str, str]:
        """(host, agent, project, user) of a session, bounded."""
        user = self.hub.user_of(s.key) if self.hub is not None else ""
        project = base_name(s.cwd)
        return _cut(s.host or self.local_host), _cut(s.key.agent), _cut(project), _cut(user)

    def _totals(self, sessions: tuple[SessionSnapshot, ...]) -> Iterator[Metric]:
        tokens: dict[tuple[str, ...], float] = {}
        cost: dict[tuple[str, ...], float] = {}
        for s in sessions:
            host, agent, project, user = self.labels(s)
            for m in s.models:
                base = _bounded(cost, (host, agent, project, _cut(m.model), user))
                cost[base] = cost.get(base, 0.0) + (m.cost_usd or 0.0)
                for kind in KINDS:
                    n = getattr(m.tokens, kind)
                    if n:
                        key = _bounded(tokens, (*base[:4], kind, user))
                        tokens[key] = tokens.get(key, 0.0) + n
        labels = ("host", "agent", "project", "model", "kind", "user")
        yield _counter("tokentop_tokens", "Tokens counted", labels, tokens)
        yield _counter(
            "tokentop_cost_usd", "Cost in USD of the priced models",
            ("host", "agent", "project", "model", "user"), cost,
        )  # fmt: skip

    def _live(self, judged: tuple[Judged, ...]) -> Iterator[Metric]:
        """Per-session gauges (sessions active within the hour): the app's figures."""
        now = self.clock()
        gauges = _SessionGauges()
        status: dict[tuple[str, ...], float] = {}
        for j in judged:
            s = j.session
            host, agent, project, user = self.labels(s)
            status[(host, agent, j.state)] = status.get((host, agent, j.state), 0) + 1
            if now - s.last_ts <= ACTIVE_S:
                gauges.add(j, [host, agent, _cut(s.key.session_id), project, user])
        yield from gauges.families
        sessions_gauge = GaugeMetricFamily(
            "tokentop_sessions", "Sessions by state", labels=("host", "agent", "status")
        )
        for key, n in status.items():
            sessions_gauge.add_metric(list(key), n)
        yield sessions_gauge

    def _read_actions(self) -> None:
        if self._actions is None:
            return
        result = self._actions.read_new()
        for line in result.data.splitlines():
            try:
                action = _ACTION.decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                continue
            pair: tuple[str, ...] = (action.action, "true" if action.ok else "false")
            with self.lock:
                self.actions[pair] = self.actions.get(pair, 0) + 1


class _SessionGauges:
    """The per-session families: burn, budget, share used, ETA and state, as the app and
    `sessions --json` show them (zero burn and no ETA unless live)."""

    NAMES = ("host", "agent", "session", "project", "user")

    def __init__(self) -> None:
        names = self.NAMES
        self.burn = GaugeMetricFamily("tokentop_burn_tokens_per_minute", "Burn rate", labels=names)
        self.burn_usd = GaugeMetricFamily(
            "tokentop_burn_usd_per_hour", "Burn rate in USD per hour", labels=names
        )
        self.ratio = GaugeMetricFamily(
            "tokentop_budget_used_ratio", "Share of the session's budget used", labels=names
        )
        self.eta = GaugeMetricFamily(
            "tokentop_budget_eta_seconds",
            "Seconds until the session's budget is used at its pace (live sessions only)",
            labels=names,
        )
        self.limit_usd = GaugeMetricFamily(
            "tokentop_budget_usd", "The session's budget in USD", labels=(*names, "origin")
        )
        self.limit_tokens = GaugeMetricFamily(
            "tokentop_budget_tokens", "The session's budget in tokens", labels=(*names, "origin")
        )
        self.state = GaugeMetricFamily(
            "tokentop_session_state", "1 for the session's state", labels=(*names, "state")
        )
        self.families = (
            self.burn, self.burn_usd, self.ratio, self.eta, self.limit_usd, self.limit_tokens,
            self.state,
        )  # fmt: skip

    def add(self, j: Judged, labels: list[str]) -> None:
        s, use = j.session, j.use
        self.burn.add_metric(labels, s.tokens_per_min)
        self.burn_usd.add_metric(labels, s.usd_per_hour)
        self.state.add_metric([*labels, j.state], 1)
        if use.fraction is not None:
            self.ratio.add_metric(labels, use.fraction)
        if use.eta_s is not None:
            self.eta.add_metric(labels, use.eta_s)
        origin = _cut(use.origin)
        if use.budget.usd is not None:
            self.limit_usd.add_metric([*labels, origin], use.budget.usd)
        if use.budget.tokens is not None:
            self.limit_tokens.add_metric([*labels, origin], use.budget.tokens)


def _follower(path: Path) -> Tailer:
    """A tailer from the log's current end: actions taken from now on are counted."""
    size = path.stat().st_size if path.exists() else 0
    tailer = Tailer(TailState(path=str(path), offset=size))
    tailer.read_new()
    tailer.state.offset = size
    return tailer


def _receiver_metrics(hub: TelemetryHub) -> Iterator[Metric]:
    st = hub.stats
    for name, value, what in (
        ("tokentop_otlp_requests", st.requests, "OTLP requests received"),
        ("tokentop_otlp_refused", st.refused, "OTLP requests answered with an error"),
        ("tokentop_otlp_bad_records", st.bad_records, "Unusable OTLP records"),
        ("tokentop_otlp_ignored", st.ignored, "Usage of the kind a session does not count"),
    ):
        family = CounterMetricFamily(name, what)
        family.add_metric([], value)
        yield family


def _counter(
    name: str, doc: str, labels: tuple[str, ...], values: Mapping[tuple[str, ...], Any]
) -> Metric:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def _cut(value: str) -> str:
    return value[:MAX_LABEL]


def _bounded(table: dict[tuple[str, ...], float], key: tuple[str, ...]) -> tuple[str, ...]:
    """`key`, or its "_other" project bucket once the family holds MAX_SERIES label sets."""
    if key in table or len(table) < MAX_SERIES:
        return key
    return (key[0], key[1], "_other", *key[3:])


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """The app owns the terminal."""


class MetricsServer(Served):
    """/metrics on its own thread; beyond loopback only with a bearer token."""

    thread_name = "tokentop-metrics"

    def __init__(self, exposition: Exposition, listen: Listen, token: str = "") -> None:
        if listen.port == CLAUDE_EXPORTER_PORT:
            raise ListenError(
                f"port {CLAUDE_EXPORTER_PORT} is Claude Code's own Prometheus exporter port; "
                "choose another (e.g. 9469)"
            )
        require_token(listen, token, "Prometheus endpoint")
        self.listen = listen
        registry = CollectorRegistry(auto_describe=False)
        registry.register(exposition)
        self.app = _with_token(make_wsgi_app(registry), token)
        super().__init__(self._bound)

    def _bound(self) -> Any:
        return make_server(
            self.listen.host, self.listen.port, self.app, ThreadingWSGIServer, _Quiet
        )


def _with_token(app: Any, token: str) -> Any:
    if not token:
        return app

    def guarded(environ: dict[str, Any], start_response: Any) -> Any:
        if not token_ok(str(environ.get("HTTP_AUTHORIZATION", "")), token):
            start_response("401 Unauthorized", [("Content-Type", "text/plain")])
            return [b"missing or wrong bearer token\n"]
        return app(environ, start_response)

    return guarded
