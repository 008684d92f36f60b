"""Prometheus exposition of the ledger: /metrics through prometheus_client.

Counters are sums over every session (they only grow, as the ledger never forgets one);
gauges exist per session only for sessions active within the last hour. Aggregates are
always there. Every label but the fixed ones (token kind, session state) can come from a
sender, so: values are cut to `MAX_LABEL` characters, and a family keeps at most
`MAX_SERIES` label sets; past that, a new set is summed (a ratio: its largest) under
"_other" in every such label, and `tokentop_series_folded` says how many were.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from tokentop.model import SessionSnapshot, base_name
from tokentop.policy.watchdog import Judged, Judgement
from tokentop.processes.action_log import ActionLogFollower
from tokentop.telemetry.http import HttpServer, Limits, Reply, Request
from tokentop.telemetry.options import Listen, ListenError, require_token, token_ok

if TYPE_CHECKING:
    from tokentop.config import Config
    from tokentop.telemetry.hub import TelemetryHub

MAX_LABEL = 128
MAX_SERIES = 2000
OTHER = "_other"
ACTIVE_S = 3600.0
KINDS = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h", "reasoning")
CLAUDE_EXPORTER_PORT = 9464


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
        self._actions = (
            ActionLogFollower(action_log, from_end=True) if action_log is not None else None
        )  # counts the actions taken from now on

    def __call__(self, judgement: Judgement) -> None:
        """Watchdog subscriber: keep the judgement, count its new decisions."""
        remote = {j.session.key for j in judgement.sessions if j.session.from_telemetry}
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
        folded: dict[tuple[str, ...], float] = {}
        yield from self._totals(tuple(j.session for j in judged), folded)
        yield from self._live(judged, folded)
        yield _gauge(
            "tokentop_series_folded", "Label sets summed under _other at this scrape",
            ("family",), folded,
        )  # fmt: skip
        yield _counter("tokentop_decisions", "Policy decisions", ("detector", "action"), decisions)
        yield _counter("tokentop_actions", "Actions on processes", ("action", "ok"), actions)
        if self.hub is not None:
            yield from _receiver_metrics(self.hub)

    def labels(self, s: SessionSnapshot) -> tuple[str, str, str, str]:
        """(host, agent, project, user) of a session, bounded."""
        user = self.hub.user_of(s.key) if self.hub is not None else ""
        project = base_name(s.cwd)
        return _cut(s.host or self.local_host), _cut(s.key.agent), _cut(project), _cut(user)

    def _totals(
        self, sessions: tuple[SessionSnapshot, ...], folded: dict[tuple[str, ...], float]
    ) -> Iterator[Metric]:
        tokens, cost = Bounded(keep=(4,)), Bounded()
        for s in sessions:
            host, agent, project, user = self.labels(s)
            for m in s.models:
                base = (host, agent, project, _cut(m.model))
                cost.add((*base, user), m.cost_usd or 0.0)
                for kind in KINDS:
                    n = getattr(m.tokens, kind)
                    if n:
                        tokens.add((*base, kind, user), n)
        labels = ("host", "agent", "project", "model", "kind", "user")
        yield _counter("tokentop_tokens", "Tokens counted", labels, tokens.values)
        yield _counter(
            "tokentop_cost_usd", "Cost in USD of the priced models",
            ("host", "agent", "project", "model", "user"), cost.values,
        )  # fmt: skip
        folded[("tokentop_tokens_total",)] = tokens.folded
        folded[("tokentop_cost_usd_total",)] = cost.folded

    def _live(
        self, judged: tuple[Judged, ...], folded: dict[tuple[str, ...], float]
    ) -> Iterator[Metric]:
        """Per-session gauges (sessions active within the hour): the app's figures."""
        now = self.clock()
        gauges = _SessionGauges()
        status = Bounded(keep=(2,))
        for j in judged:
            s = j.session
            host, agent, project, user = self.labels(s)
            status.add((host, agent, j.state), 1)
            if now - s.last_ts <= ACTIVE_S:
                gauges.add(j, (host, agent, _cut(s.key.session_id), project, user))
        yield from gauges.families(folded)
        yield _gauge(
            "tokentop_sessions", "Sessions by state", ("host", "agent", "status"), status.values
        )
        folded[("tokentop_sessions",)] = status.folded

    def _read_actions(self) -> None:
        if self._actions is None:
            return
        for action in self._actions():
            pair: tuple[str, ...] = (action.action, "true" if action.ok else "false")
            with self.lock:
                self.actions[pair] = self.actions.get(pair, 0) + 1


class _SessionGauges:
    """The per-session families: burn, budget, share used, ETA and state, as the app and
    `sessions --json` show them (zero burn and no ETA unless live). Each is bounded: the
    session, project and user labels come from senders."""

    NAMES = ("host", "agent", "session", "project", "user")
    FAMILIES = (
        ("tokentop_burn_tokens_per_minute", "Burn rate", ()),
        ("tokentop_burn_usd_per_hour", "Burn rate in USD per hour", ()),
        ("tokentop_budget_used_ratio", "Share of the session's budget used", ()),
        ("tokentop_budget_eta_seconds", "Seconds to the budget at the session's pace", ()),
        ("tokentop_budget_usd", "The session's budget in USD", ("origin",)),
        ("tokentop_budget_tokens", "The session's budget in tokens", ("origin",)),
        ("tokentop_session_state", "1 for the session's state", ("state",)),
    )
    """(name, help, extra labels); a ratio or a limit folds to its largest, the rest sum."""

    def __init__(self) -> None:
        most, kept = max, (5,)  # the extra label (origin, state) is fixed, never folded
        burn, usd, ratio, eta = Bounded(), Bounded(), Bounded(combine=most), Bounded(combine=min)
        limits = Bounded(combine=most, keep=kept), Bounded(combine=most, keep=kept)
        self.values = (burn, usd, ratio, eta, *limits, Bounded(keep=kept))

    def add(self, j: Judged, labels: tuple[str, ...]) -> None:
        s, use = j.session, j.use
        burn, usd, ratio, eta, limit_usd, limit_tokens, state = self.values
        burn.add(labels, s.tokens_per_min)
        usd.add(labels, s.usd_per_hour)
        state.add((*labels, j.state), 1)
        if use.fraction is not None:
            ratio.add(labels, use.fraction)
        if use.eta_s is not None:
            eta.add(labels, use.eta_s)
        origin = _cut(use.origin)
        if use.budget.usd is not None:
            limit_usd.add((*labels, origin), use.budget.usd)
        if use.budget.tokens is not None:
            limit_tokens.add((*labels, origin), use.budget.tokens)

    def families(self, folded: dict[tuple[str, ...], float]) -> Iterator[Metric]:
        for (name, doc, extra), bounded in zip(self.FAMILIES, self.values, strict=True):
            folded[(name,)] = bounded.folded
            yield _gauge(name, doc, (*self.NAMES, *extra), bounded.values)


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


def _gauge(
    name: str, doc: str, labels: tuple[str, ...], values: Mapping[tuple[str, ...], float]
) -> Metric:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in values.items():
        family.add_metric(list(key), value)
    return family


def _cut(value: str) -> str:
    return value[:MAX_LABEL]


class Bounded:
    """One family's label sets, at most MAX_SERIES of them (a few more for the "_other" sets):
    past that, a new set is summed (or `combine`d) under "_other" in every label but the
    fixed ones (`keep`: their indexes), and counted in `folded`."""

    def __init__(
        self, keep: tuple[int, ...] = (), combine: Callable[[float, float], float] | None = None
    ) -> None:
        self.values: dict[tuple[str, ...], float] = {}
        self.keep = keep
        self.combine = combine or (lambda a, b: a + b)
        self.folded = 0

    def add(self, key: tuple[str, ...], value: float) -> None:
        values = self.values
        if key not in values and len(values) >= MAX_SERIES:
            key = tuple(v if i in self.keep else OTHER for i, v in enumerate(key))
            self.folded += 1
        old = values.get(key)
        values[key] = value if old is None else self.combine(old, value)


class MetricsServer:
    """/metrics on its own thread; beyond loopback only with a bearer token. The same
    bounded server as the OTLP receiver: idle scrapers can't use up its connections."""

    def __init__(self, exposition: Exposition, listen: Listen, token: str = "") -> None:
        if listen.port == CLAUDE_EXPORTER_PORT:
            raise ListenError(
                f"port {CLAUDE_EXPORTER_PORT} is Claude Code's own Prometheus exporter port; "
                "choose another (e.g. 9469)"
            )
        require_token(listen, token, "Prometheus endpoint")
        self.listen = listen
        self.token = token
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(exposition)
        limits = Limits(max_body=0, workers=1, queued=4, max_connections=64)
        self.server = HttpServer(listen, self.answer, self.check, limits, "tokentop-metrics")

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def check(self, request: Request) -> Reply | None:
        if request.method not in ("GET", "HEAD"):
            return 405, b"GET /metrics", "text/plain"
        if not token_ok(request.headers.get("authorization", ""), self.token):
            return 401, b"missing or wrong bearer token", "text/plain"
        return None

    def answer(self, request: Request) -> Reply:
        encoder, ctype = choose_encoder(request.headers.get("accept", ""))
        body = encoder(self.registry)
        return 200, b"" if request.method == "HEAD" else body, ctype
