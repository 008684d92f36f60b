"""Ledger: global max-wins dedupe, totals by kind and model, burn windows with a fake clock."""

from __future__ import annotations

import msgspec
import pytest

from tokentop.clock import FakeClock
from tokentop.engine.ledger import Ledger
from tokentop.engine.ledger_state import LedgerState
from tokentop.model import SessionInfo, SessionKey, TokenCounts, ToolCall, ToolResult, UsageEvent

KEY = SessionKey("claude", "s1")
T0 = 1_763_640_000.0


def price(model: str, tokens: TokenCounts) -> float | None:
    """$1 per 1000 tokens of any kind for 'm', unknown otherwise: easy to check by hand."""
    return tokens.total / 1000 if model == "m" else None


def usage(key: str, out: int, ts: float = T0, model: str = "m", session: SessionKey = KEY):
    return UsageEvent(session, key, ts, model, TokenCounts(input=10, output=out), cwd="/p")


def test_streamed_copies_count_once_at_largest_usage() -> None:
    ledger = Ledger(price)
    ledger.apply([usage("a", 8), usage("a", 322), usage("a", 100)], "f1")
    snap = ledger.snapshot(T0).sessions[0]
    assert snap.tokens == TokenCounts(input=10, output=322)
    assert snap.responses == 1
    assert snap.cost_usd == pytest.approx(0.332)


def test_dedupe_spans_files_and_keeps_first_session() -> None:
    other = SessionKey("claude", "resumed")
    ledger = Ledger(price)
    ledger.apply([usage("a", 50)], "f1")
    ledger.apply([usage("a", 50, session=other), usage("b", 5, session=other)], "f2")
    by_id = {s.key.session_id: s for s in ledger.snapshot(T0).sessions}
    assert by_id["s1"].tokens.total == 60
    assert by_id["resumed"].tokens.total == 15


def test_unknown_model_cost_is_listed_not_zeroed() -> None:
    ledger = Ledger(price)
    ledger.apply([usage("a", 90, model="mystery"), usage("b", 90)])
    snap = ledger.snapshot(T0).sessions[0]
    assert snap.unpriced_models == ("mystery",)
    assert snap.cost_usd == pytest.approx(0.1)
    models = {m.model: m for m in snap.models}
    assert models["mystery"].cost_usd is None


def test_burn_is_the_pace_of_recent_replies_and_the_sparkline_stays_per_minute() -> None:
    clock = FakeClock(T0)
    ledger = Ledger(price)
    ledger.apply([usage(str(i), 490, ts=T0 - 30 * i) for i in range(5)])
    snap = ledger.snapshot(clock.now()).sessions[0]
    # Replies every 30 s: the four after the first, over the two minutes they span.
    assert snap.tokens_per_min == pytest.approx(4 * 500 / 2)
    assert snap.usd_per_hour == pytest.approx(2.0 * 30)
    assert snap.burn_series[-1] + snap.burn_series[-2] + snap.burn_series[-3] == 2500
    clock.advance(61)  # silent for two gaps (60 s) and more: stopped
    assert ledger.snapshot(clock.now()).sessions[0].tokens_per_min == 0
    clock.advance(3600)
    idle = ledger.snapshot(clock.now()).sessions[0]
    assert idle.tokens_per_min == 0
    assert idle.tokens.total == 2500


def test_tool_calls_results_and_timeline() -> None:
    ledger = Ledger(price)
    ledger.apply(
        [
            SessionInfo(KEY, T0, cwd="/p", model="m"),
            ToolCall(KEY, "c1", T0 + 1, "Bash", "h1"),
            ToolCall(KEY, "c1", T0 + 1, "Bash", "h1"),
            ToolResult(KEY, "c1", T0 + 2, is_error=True),
            usage("a", 1, ts=T0 + 3, model="other"),
        ]
    )
    snap = ledger.snapshot(T0).sessions[0]
    assert (snap.tool_calls, snap.tool_errors) == (1, 1)
    assert snap.recent_tools[0].is_error is True
    assert [m for _, m in snap.model_timeline] == ["m", "other"]
    assert snap.cwd == "/p"


def test_tool_result_before_its_call_and_copies_count_once() -> None:
    """A result can be read before its call (files read in any order); every copy of
    either, in this file or a resumed one, counts once, also after an export/restore."""
    ledger = Ledger(price)
    ledger.apply([ToolResult(KEY, "c1", T0 + 2, is_error=True)], "f1")
    snap = ledger.snapshot(T0).sessions[0]
    assert (snap.tool_calls, snap.tool_errors) == (0, 1)
    assert [(t.name, t.errors) for t in snap.tools] == [("?", 1)]
    ledger.apply([ToolCall(KEY, "c1", T0 + 1, "Bash", "h1"), ToolCall(KEY, "c2", T0, "Read", "h")])
    ledger.apply([ToolResult(KEY, "c1", T0 + 2, is_error=True)], "f2")
    blob = msgspec.msgpack.encode(ledger.export())
    again = Ledger.restore(msgspec.msgpack.decode(blob, type=LedgerState), price)
    again.apply(
        [
            ToolCall(KEY, "c1", T0 + 1, "Bash", "h1"),
            ToolCall(KEY, "c2", T0, "Read", "h"),
            ToolResult(KEY, "c1", T0 + 2, is_error=True),
            ToolResult(KEY, "c2", T0 + 3, is_error=True),
            ToolResult(KEY, "c2", T0 + 3, is_error=True),
        ],
        "f3",
    )
    snap = again.snapshot(T0).sessions[0]
    assert (snap.tool_calls, snap.tool_errors) == (2, 2)
    assert {t.name: (t.calls, t.errors) for t in snap.tools} == {"Bash": (1, 1), "Read": (1, 1)}


def estimate(key: str, out: int) -> UsageEvent:
    return UsageEvent(KEY, key, T0, "m", TokenCounts(output=out), cwd="/p", estimated=True)


def test_recorded_usage_replaces_an_estimate_larger_or_smaller() -> None:
    """A message estimated while it streams is replaced by its recorded usage, even a smaller
    one; an estimate never overrides recorded usage; estimates of one message grow."""
    ledger = Ledger(price)
    ledger.apply([estimate("a", 500), estimate("a", 800), estimate("b", 40)], "f1")
    snap = ledger.snapshot(T0).sessions[0]
    assert (snap.tokens.total, snap.estimated) == (840, True)
    ledger.apply([usage("a", 90)], "f1")  # 10 in + 90 out recorded: below the estimate
    snap = ledger.snapshot(T0).sessions[0]
    assert (snap.tokens, snap.estimated) == (TokenCounts(input=10, output=130), True)
    assert snap.cost_usd == pytest.approx(0.140)
    blob = msgspec.msgpack.encode(ledger.export())
    again = Ledger.restore(msgspec.msgpack.decode(blob, type=LedgerState), price)
    again.apply([usage("b", 60), estimate("a", 5000), estimate("b", 5000)], "f2")
    snap = again.snapshot(T0).sessions[0]
    assert (snap.tokens, snap.estimated) == (TokenCounts(input=20, output=150), False)
    assert snap.responses == 2


def test_export_restore_roundtrip_keeps_dedupe() -> None:
    ledger = Ledger(price)
    ledger.apply([usage("a", 8)], "f1")
    blob = msgspec.msgpack.encode(ledger.export())
    again = Ledger.restore(msgspec.msgpack.decode(blob, type=LedgerState), price)
    again.apply([usage("a", 20), usage("a", 8)], "f1")
    assert again.snapshot(T0).sessions[0].tokens.total == 30


def test_rate_card_matches_price_table_below_and_above_tier() -> None:
    """The ledger's dot-product fast path must agree with PriceTable.cost on both sides of a
    long-context tier."""
    from tokentop.pricing import PriceTable

    prices = PriceTable.default()
    model = "gemini-2.5-pro"
    assert prices.linear_limit(model) == 200_000
    small = TokenCounts(input=10, output=500, cache_read=150_000, cache_write_5m=2000)
    large = TokenCounts(input=10, output=500, cache_read=250_000, cache_write_1h=2000)
    ledger = Ledger(prices.cost)
    ledger.apply([UsageEvent(KEY, "a", T0, model, small), UsageEvent(KEY, "b", T0, model, large)])
    expected = (prices.cost(model, small) or 0) + (prices.cost(model, large) or 0)
    assert ledger.snapshot(T0).sessions[0].cost_usd == pytest.approx(expected, rel=1e-12)


def test_today_counts_only_buckets_since_local_midnight() -> None:
    from datetime import datetime, timedelta

    midnight = datetime(2026, 11, 20).timestamp()  # local midnight, as the ledger uses
    ledger = Ledger(price)
    ledger.apply([usage("a", 90, ts=midnight - 120), usage("b", 190, ts=midnight + 60)])
    now = (datetime(2026, 11, 20) + timedelta(hours=2)).timestamp()
    snap = ledger.snapshot(now).sessions[0]
    assert (snap.tokens.total, snap.tokens_today) == (300, 200)
    assert snap.cost_today == pytest.approx(0.2)
    again = ledger.snapshot(now + 60).sessions[0]  # cached counters, time fields refreshed
    assert again.tokens_today == 200 and again.tokens_per_min == 0


def test_minute_buckets_in_and_out_of_order_survive_the_cache() -> None:
    """Per-minute buckets are packed arrays: in-order minutes append, an earlier one (a
    subagent file read after its parent's) is inserted or added in its place."""
    from tokentop.engine.ledger_state import SessionState

    state = SessionState("claude", "s1")
    for minute, tokens in [(100, 1), (102, 2), (102, 3), (101, 4), (99, 5), (103, 6), (101, 1)]:
        state.add_minute(minute, tokens, tokens / 8)
    expected = [(99, 5, 0.625), (100, 1, 0.125), (101, 5, 0.625), (102, 5, 0.625), (103, 6, 0.75)]
    assert state.minute_items() == expected
    assert state.minute_items(100, 102) == expected[1:4]
    assert state.minute_items(104, 200) == []
    again = msgspec.msgpack.decode(msgspec.msgpack.encode(state), type=SessionState)
    assert again.minute_items() == expected
    again.add_minute(98, 1, 0.0)
    again.add_minute(103, 1, 0.0)
    assert [m for m, _, _ in again.minute_items()] == [98, 99, 100, 101, 102, 103]
    assert again.minute_items(103, 103) == [(103, 7, 0.75)]
