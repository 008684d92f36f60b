"""Prometheus exposition: exact aggregates always, per-session gauges only for sessions
active within the hour, bounded label sets, and a remote session's decisions as alerts."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request

import msgspec
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tokentop.clock import FakeClock
from tokentop.config import Budgets, Config
from tokentop.model import LedgerSnapshot, TokenCounts
from tokentop.policy.watchdog import Judgement, Watchdog
from tokentop.telemetry import exposition
from tokentop.telemetry.exposition import Exposition, MetricsServer
from tokentop.telemetry.options import Listen
from ui_fakes import NOW, ledger, make_session


def _samples(exp: Exposition) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in exp.collect():
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def _snap(*sessions: object, config: Config | None = None) -> Judgement:
    """The Watchdog's judgement of these sessions, as the exposition receives it."""
    snap: LedgerSnapshot = msgspec.structs.replace(ledger(sessions), taken_at=NOW)  # type: ignore[arg-type]
    return Watchdog(config or Config(), FakeClock(NOW)).judge(snap)


def test_aggregates_always_gauges_only_for_the_last_hour() -> None:
    live = make_session("live", tokens=TokenCounts(input=10, output=5), cost=0.5, tpm=120.0)
    old = make_session("old", cwd="/src/notes", tokens=TokenCounts(input=7), cost=0.25, ago=7200)
    remote = msgspec.structs.replace(make_session("far", ago=10), host="ci-7")
    config = Config(budgets=Budgets(usd=1.0))
    exp = Exposition(config, clock=lambda: NOW)
    exp(_snap(live, old, remote, config=config))
    got = _samples(exp)
    tokens = {(m["host"], m["project"], m["kind"]): v for m, v in got["tokentop_tokens_total"]}
    here = socket.gethostname()
    assert tokens[(here, "webshop", "input")] == 10 and tokens[(here, "notes", "input")] == 7
    assert tokens[("ci-7", "webshop", "cache_read")] == 400_000
    cost = sum(v for _, v in got["tokentop_cost_usd_total"])
    assert abs(cost - 1.75) < 1e-12
    burning = {m["session"]: v for m, v in got["tokentop_burn_tokens_per_minute"]}
    assert burning == {"live": 120.0, "far": 0.0}  # "old" is past the hour: no series
    ratios = {m["session"]: v for m, v in got["tokentop_budget_used_ratio"]}
    assert ratios == {"live": 0.5, "far": 1.0}
    decisions = {(m["detector"], m["action"]): v for m, v in got["tokentop_decisions_total"]}
    assert decisions[("budget", "alert")] == 1  # the remote session's is an alert
    states = {(m["host"], m["status"]): v for m, v in got["tokentop_sessions"]}
    assert states[(here, "ended")] == 1 and states[("ci-7", "live")] == 1


def test_label_sets_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(exposition, "MAX_SERIES", 3)
    sessions = [
        make_session(f"s{i}", cwd=f"/src/p{i}", tokens=TokenCounts(input=1), cost=0.0)
        for i in range(10)
    ]
    exp = Exposition(clock=lambda: NOW)
    exp(_snap(*sessions))
    costs = _samples(exp)["tokentop_cost_usd_total"]
    assert len(costs) == 4 and {m["project"] for m, _ in costs} >= {"_other"}
    assert sum(v for m, v in _samples(exp)["tokentop_tokens_total"]) == 10


def test_metrics_server_with_a_token() -> None:
    exp = Exposition(clock=lambda: NOW)
    exp(_snap(make_session("a")))
    server = MetricsServer(exp, Listen("127.0.0.1", 0), token="t0k")
    server.start()
    try:
        url = f"http://127.0.0.1:{server.port}/metrics"
        try:
            urllib.request.urlopen(url, timeout=5)
            raise AssertionError("served without the token")
        except urllib.error.HTTPError as exc:
            assert exc.code == 401
        req = urllib.request.Request(url, headers={"Authorization": "Bearer t0k"})
        with urllib.request.urlopen(req, timeout=5) as resp:
            text = resp.read().decode()
        names = {f.name for f in text_string_to_metric_families(text)}
        assert {"tokentop_tokens", "tokentop_cost_usd", "tokentop_sessions"} <= names
    finally:
        server.stop()


def test_every_label_is_bounded_per_session_gauges_included() -> None:
    """Distinct session, host, user and model in every record (what a sender controls):
    each family keeps at most MAX_SERIES label sets plus its _other ones, the sums stay
    exact, and tokentop_series_folded says how many were folded."""
    sessions = [
        msgspec.structs.replace(
            make_session(f"s{i}", cwd="/src/shop", tokens=TokenCounts(input=1), cost=0.0,
                         tpm=1.0, model=f"m{i}"),
            host=f"h{i}",
        )
        for i in range(exposition.MAX_SERIES + 500)
    ]  # fmt: skip
    exp = Exposition(clock=lambda: NOW)
    exp(_snap(*sessions))
    got = _samples(exp)
    for name in (
        "tokentop_tokens_total", "tokentop_cost_usd_total", "tokentop_burn_tokens_per_minute",
        "tokentop_sessions",
    ):  # fmt: skip
        assert len(got[name]) <= exposition.MAX_SERIES + 10, name
        assert any(m.get("host") == "_other" for m, _ in got[name]), name
    assert sum(v for _, v in got["tokentop_tokens_total"]) == len(sessions)
    assert sum(v for _, v in got["tokentop_burn_tokens_per_minute"]) == len(sessions)
    folded = {m["family"]: v for m, v in got["tokentop_series_folded"]}
    assert folded["tokentop_burn_tokens_per_minute"] == 500
