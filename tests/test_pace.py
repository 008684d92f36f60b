"""Burn and ETA against a writer at a known pace (fake clock): the rule of engine/pace.py.

Each test replays a schedule of responses into a real Ledger and judges its snapshots with
the real Watchdog, sampling between responses as a refreshing screen would. The expected
figures come from the schedule itself (the writer's true pace and the instant it crosses
its budget), never from the code under test.
"""

from __future__ import annotations

from collections.abc import Iterable
from itertools import pairwise

import pytest

from tokentop.clock import FakeClock
from tokentop.config import parse_config
from tokentop.engine import pace
from tokentop.engine.ledger import Ledger
from tokentop.model import SessionKey, TokenCounts, UsageEvent
from tokentop.policy.watchdog import Judged, Watchdog

KEY = SessionKey("claude", "pace")
T0 = 1_763_640_000.0
PER_TOKEN = 1e-6
"""$1 per million tokens: a response's cost is its tokens / 1e6."""


def price(model: str, tokens: TokenCounts) -> float | None:
    return tokens.total * PER_TOKEN


class Writer:
    """Feeds a ledger the responses of a schedule up to the clock's now."""

    def __init__(self, times: Iterable[float], tokens: int, budget_usd: float = 0.0) -> None:
        self.times = sorted(times)
        self.tokens = tokens
        self.clock = FakeClock(T0)
        self.ledger = Ledger(price)
        self.fed = 0
        budget = f"[budgets]\nusd = {budget_usd}\n" if budget_usd else ""
        self.dog = Watchdog(parse_config(budget), self.clock)

    def at(self, t: float) -> Judged:
        """The session as judged at T0 + t, every response due by then written."""
        self.clock.t = T0 + t
        due = [ts for ts in self.times[self.fed :] if ts <= t]
        events = [
            UsageEvent(KEY, f"r{self.fed + i}", T0 + ts, "m", TokenCounts(output=self.tokens))
            for i, ts in enumerate(due)
        ]
        self.fed += len(due)
        self.ledger.apply(events)
        judged = self.dog.judge(self.ledger.snapshot(self.clock.now())).of(KEY)
        assert judged is not None
        return judged


def samples(start: float, end: float, step: float = 0.1) -> list[float]:
    return [start + i * step for i in range(int((end - start) / step) + 1)]


def test_a_fresh_runaway_shows_its_real_pace_within_ten_seconds() -> None:
    """The issue's runaway: 5,010 tokens every 0.5 s is 601,200 tok/min and $36.07/h at
    $1/Mtok. Sampled every 0.1 s (between responses too) from 10 s to 60 s."""
    writer = Writer((0.5 * i for i in range(1, 200)), 5010)
    true_rate = 5010 / 0.5 * 60
    for t in samples(0.5, 60.0):
        judged = writer.at(t)
        if t >= 10.0:
            assert judged.session.tokens_per_min == pytest.approx(true_rate, rel=0.15), t
            assert judged.session.usd_per_hour == pytest.approx(
                true_rate * 60 * PER_TOKEN, rel=0.15
            )
    assert writer.at(60.0).session.tokens_per_min == pytest.approx(true_rate, rel=0.01)


@pytest.mark.parametrize("gap", [0.5, 2.0, 7.0])
def test_a_steady_pace_is_exact_between_responses_not_only_at_them(gap: float) -> None:
    writer = Writer((gap * i for i in range(1, int(120 / gap))), 1000)
    true_rate = 1000 / gap * 60
    for t in samples(max(10.0, 3 * gap), 110.0, 0.25):
        assert writer.at(t).session.tokens_per_min == pytest.approx(true_rate, rel=0.05), t


def claude_turns() -> list[float]:
    """Three turns: in each, four replies 2 s apart, a 20 s tool run, four more replies;
    a user takes 10 minutes between turns."""
    times: list[float] = []
    for turn in range(3):
        start = turn * 600.0
        burst = [start + 2 * i for i in range(1, 5)]
        after_tool = [burst[-1] + 20 + 2 * i for i in range(4)]
        times += burst + after_tool
    return times


def test_a_burst_and_wait_agent_never_reads_zero_mid_turn_and_stops_after_its_turn() -> None:
    times = claude_turns()
    writer = Writer(times, 40_000)
    for turn in range(3):
        turn_times = times[turn * 8 : turn * 8 + 8]
        first, last = turn_times[0], turn_times[-1]
        for t in samples(first + 2.0, last, 0.25):  # a pace needs its second reply
            judged = writer.at(t)
            assert judged.session.tokens_per_min > 0, f"zero mid-turn at {t}"
            assert judged.state == "live"
        gaps = [b - a for a, b in pairwise(turn_times)]
        typical = sum(g * g for g in gaps) / sum(gaps)
        bound = max(30.0, 4 * typical)
        after = [writer.at(t).session.tokens_per_min for t in samples(last, last + bound + 1)]
        assert after[-1] == 0.0
        stopped_at = next(i for i, rate in enumerate(after) if rate == 0.0) * 0.1
        assert stopped_at <= bound + 0.1  # to the sampling step
        assert all(rate == 0.0 for rate in after[int(stopped_at / 0.1) :])  # no flicker back


def test_a_stopped_writer_reads_zero_within_the_bound_then_has_no_eta() -> None:
    writer = Writer((2.0 * i for i in range(1, 31)), 10_000, budget_usd=5.0)
    assert writer.at(60.0).use.eta_s is not None
    bound = max(30.0, 4 * 2.0)
    stopped = next(t for t in samples(60.0, 200.0) if writer.at(t).session.tokens_per_min == 0)
    assert stopped - 60.0 <= bound + 0.1  # to the sampling step
    judged = writer.at(stopped + 1)
    assert judged.use.eta_s is None and judged.session.usd_per_hour == 0.0
    idle = writer.at(60.0 + 121)  # idle (live_timeout_s = 120): still no burn, no ETA
    assert idle.state == "idle"
    assert (idle.session.tokens_per_min, idle.use.eta_s) == (0.0, None)


@pytest.mark.parametrize("gap", [0.5, 3.0])
def test_the_eta_is_within_a_fifth_of_the_real_crossing_from_a_fifth_of_the_budget(
    gap: float,
) -> None:
    """$2 at $0.005 a reply is crossed by the 400th reply: at 400 × gap exactly."""
    writer = Writer((gap * i for i in range(1, 500)), 5000, budget_usd=2.0)
    crossing = 400 * gap
    checked = 0
    for t in samples(gap, crossing - gap, gap / 3):
        judged = writer.at(t)
        if judged.use.fraction is None or judged.use.fraction < 0.2:
            continue
        eta = judged.use.eta_s
        assert eta is not None
        assert eta == pytest.approx(crossing - t, rel=0.2), t
        checked += 1
    assert checked > 300


def test_the_header_now_is_the_sum_of_the_rows() -> None:
    writer = Writer((0.5 * i for i in range(1, 100)), 1000)
    other = SessionKey("codex", "idle-one")
    writer.ledger.apply([UsageEvent(other, "x", T0 - 900, "m", TokenCounts(output=5))])
    writer.at(20.0)
    judgement = writer.dog.judge(writer.ledger.snapshot(T0 + 20))
    rows = sum(j.session.tokens_per_min for j in judgement.sessions)
    assert judgement.burn_tokens_per_min == rows > 0
    assert judgement.burn_usd_per_hour == sum(j.session.usd_per_hour for j in judgement.sessions)


def test_one_reply_alone_shows_no_pace_and_two_do() -> None:
    writer = Writer([1.0, 3.0], 6000)
    assert writer.at(2.0).session.tokens_per_min == 0.0
    # The second reply: 6000 tokens over 2 s, measured over at least MIN_SPAN_S.
    assert writer.at(3.0).session.tokens_per_min == pytest.approx(6000 / pace.MIN_SPAN_S * 60)


def test_grown_copies_add_to_their_reply_and_late_replies_take_their_place() -> None:
    buf = bytearray()
    for i in range(1, 11):
        pace.add(buf, T0 + i, 100, 0.1)
    pace.add(buf, T0 + 10.5, 50, 0.05, grown=True)  # the 10th reply streamed more
    pace.add(buf, T0 + 4.5, 100, 0.1)  # a subagent's reply, read after its parent's
    kept = pace.entries(buf)
    assert [e[0] - T0 for e in kept] == [*range(1, 5), 4.5, *range(5, 11)]
    assert kept[-1][1:] == (150, pytest.approx(0.15))
    assert pace.pace_at(buf, T0 + 10).tokens_per_min == pytest.approx(1050 / 9 * 60)


def test_the_buffer_is_bounded_and_a_merge_keeps_the_newest() -> None:
    a, b = bytearray(), bytearray()
    for i in range(500):
        pace.add(a, T0 + 2 * i, 10, 0.0)
        pace.add(b, T0 + 2 * i + 1, 10, 0.0)
    assert len(pace.entries(a)) <= pace.KEEP + pace.SLACK
    both = pace.merged(a, b)
    times = [e[0] - T0 for e in pace.entries(both)]
    assert len(times) == pace.KEEP and times[-1] == 999 and times == sorted(times)


def test_a_reply_with_no_timestamp_is_placed_at_its_arrival() -> None:
    ledger = Ledger(price)
    for i in range(1, 11):
        event = UsageEvent(KEY, f"r{i}", 0.0, "m", TokenCounts(output=100))
        ledger.apply([event], arrival=T0 + i)
    snap = ledger.snapshot(T0 + 10).sessions[0]
    assert snap.tokens_per_min == pytest.approx(900 / 9 * 60)
    history = Ledger(price)
    history.apply([UsageEvent(KEY, "old", 0.0, "m", TokenCounts(output=100))])  # no arrival
    assert history.snapshot(T0).sessions[0].tokens_per_min == 0.0


def test_a_live_source_without_timestamps_burns_at_the_pace_lines_arrive(tmp_path) -> None:
    """Gemini messages written without a timestamp: once the first scan is done, the engine
    places each at its arrival (its own clock), so the session burns at the writer's pace;
    the same lines read as history burn nothing."""
    import json

    from tokentop.engine.engine import Engine
    from tokentop.sources.gemini import GeminiSource

    chat = tmp_path / "tmp" / "p" / "chats" / "session-2026-05-01T10-00-abcd.jsonl"
    chat.parent.mkdir(parents=True)
    chat.write_text(json.dumps({"sessionId": "abcd", "projectHash": "p", "kind": "main"}) + "\n")
    clock = FakeClock(T0)
    engine = Engine([GeminiSource([tmp_path])], price, clock=clock)
    engine.scan()
    engine.scanned.set()  # the live loop's state once its first scan is done
    for i in range(1, 21):
        clock.t = T0 + i * 0.5
        tokens = {"input": 0, "output": 3000, "cached": 0, "thoughts": 0, "tool": 0, "total": 3000}
        line = {"id": f"g{i}", "type": "gemini", "content": "x", "tokens": tokens, "model": "m"}
        with chat.open("a") as out:
            out.write(json.dumps(line) + "\n")
        engine.process([chat])
    [session] = engine.snapshot().sessions
    assert session.tokens_per_min == pytest.approx(3000 / 0.5 * 60)
    history = Engine([GeminiSource([tmp_path])], price, clock=clock)
    history.scan()
    assert history.snapshot().sessions[0].tokens_per_min == 0.0


def test_after_a_stop_the_eta_counts_down_and_never_rises_while_burn_decays() -> None:
    """The burn of a stopped writer decays for a while before it reads zero; its ETA, taken
    at the pace of its last response, keeps counting down until then."""
    writer = Writer((1.0 * i for i in range(1, 31)), 10_000, budget_usd=5.0)
    etas, rates = [], []
    for t in samples(30.0, 70.0, 0.5):
        judged = writer.at(t)
        if judged.use.eta_s is None:
            break
        etas.append(judged.use.eta_s)
        rates.append(judged.session.tokens_per_min)
    assert rates[-1] < rates[0]  # the burn decayed…
    assert all(b <= a for a, b in pairwise(etas))  # …the ETA only counted down
    assert etas[0] - etas[-1] == pytest.approx(0.5 * (len(etas) - 1))
