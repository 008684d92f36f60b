"""LiteLLM proxy log source: LiteLLM's own payload fixture, and a written log covering the
session fallbacks, cache splits, failures, duplicates and usage-less (estimated) calls."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from source_helpers import by_id, dedupe_sum, engine_for, feed_split, tiny_tokenizer, usage
from tokentop import tokens
from tokentop.model import Event, SessionInfo, TokenCounts
from tokentop.pricing import PriceTable
from tokentop.sources.litellm import LiteLLMFileParser, LiteLLMSource, epoch

FIXTURES = Path(__file__).parent / "fixtures" / "litellm"
SAMPLE = FIXTURES / "standard_logging_payload.ndjson"
WRITTEN = FIXTURES / "written.jsonl"


@pytest.fixture(autouse=True)
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    """Estimates count with a small encoding built here (never downloaded)."""
    monkeypatch.setattr(tokens, "_tokenizer", tiny_tokenizer())


def parse(path: Path) -> tuple[LiteLLMFileParser, list[Event]]:
    parser = LiteLLMSource([path]).new_parser(path)
    out: list[Event] = []
    parser.feed(path.read_bytes(), out)
    return parser, out


def test_litellm_fixture_payload() -> None:
    """LiteLLM's test payload: gpt-4o, 10 prompt + 20 completion, $0.000225; no session id and
    every key field null, so it lands in the `no-key` session; times are naive local strings."""
    parser, events = parse(SAMPLE)
    (event,) = usage(events)
    assert event.tokens == TokenCounts(input=10, output=20)
    assert event.cost_usd == pytest.approx(0.000225)
    assert (event.model, event.session.session_id) == ("gpt-4o", "no-key")
    assert event.dedupe_key == "litellm:chatcmpl-2299b6a2-82a3-465a-b47c-04e685a2227f"
    assert event.timestamp == datetime(2025, 1, 24, 9, 20, 46, 851954).timestamp()
    assert not event.estimated
    assert (parser.lines, parser.bad_lines) == (1, 0)


def test_written_log_sessions_and_totals() -> None:
    """s1: call-1 (Anthropic via LiteLLM: prompt 1300 = 100 + 1000 read + 200 write; 50 out;
    written twice, counted once), call-3 failed (no tokens), call-4 had no usage (estimated
    from "abab" -> 2 in, "ab x" -> 3 out), call-10 (OpenAI: prompt 1000 with 600 cached;
    completion 60 with 10 reasoning). s2 from spend_logs_metadata, trace-9 from a foreign
    writer's trace_id, team-bot/alice from the key alias and end user."""
    engine = engine_for(LiteLLMSource([WRITTEN]))
    engine.scan()
    sessions = by_id(engine.snapshot())
    s1 = sessions["s1"]
    assert s1.tokens == TokenCounts(502, 103, 1600, 200, 0, 10)
    assert s1.responses == 3 and s1.estimated
    assert s1.cost_usd == pytest.approx(0.01 + 0.003)  # the estimated call is unpriced
    assert s1.unpriced_models == ("mystery",)
    assert {m.model for m in s1.models} == {"claude-sonnet-4-5", "mystery", "gpt-4o"}
    assert s1.bad_lines == 2  # the log's bad lines show on the sessions read from it
    s2 = sessions["s2"]
    assert s2.tokens == TokenCounts(100, 10)
    priced = PriceTable.default().cost("claude-sonnet-4-5", TokenCounts(100, 10))
    assert s2.cost_usd == pytest.approx(priced)
    assert s2.last_ts == datetime(2026, 5, 1, 10, 0, 2, 500000).timestamp()
    assert sessions["trace-9"].tokens == TokenCounts(40, 4)
    assert sessions["team-bot/alice"].tokens == TokenCounts(7, 3)
    assert set(sessions) == {"s1", "s2", "trace-9", "team-bot/alice"}
    (health,) = engine.snapshot().files
    assert (health.lines, health.bad_lines) == (10, 2)


def test_failures_list_the_session_without_tokens() -> None:
    _, events = parse(WRITTEN)
    infos = [e for e in events if isinstance(e, SessionInfo)]
    assert "s1" in {i.session.session_id for i in infos}
    assert "litellm:call-3" not in {e.dedupe_key for e in usage(events)}
    assert dedupe_sum(events).total == 2415 + 110 + 44 + 10


def test_epoch_accepts_floats_iso_and_naive_strings() -> None:
    assert epoch(1700000000.5) == 1700000000.5
    assert epoch("2026-01-01T00:00:00Z") == 1767225600.0
    assert epoch("2026-01-01 00:00:00.000001") == datetime(2026, 1, 1, 0, 0, 0, 1).timestamp()
    assert epoch("yesterday") == 0.0
    assert epoch(None) == 0.0


def test_only_named_files_are_read(tmp_path: Path) -> None:
    source = LiteLLMSource([WRITTEN])
    assert source.roots() == [WRITTEN]
    assert source.is_transcript(WRITTEN)
    assert not source.is_transcript(SAMPLE)


DATA = WRITTEN.read_bytes()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.lists(st.integers(0, len(DATA)), max_size=8), persist=st.booleans())
def test_any_split_gives_the_same_events(cuts: list[int], persist: bool) -> None:
    source = LiteLLMSource([WRITTEN])
    _, whole = feed_split(source.new_parser(WRITTEN), DATA, [])
    parser, events = feed_split(source.new_parser(WRITTEN), DATA, cuts, persist)
    assert events == whole
    assert (parser.lines, parser.bad_lines) == (10, 2)


@pytest.mark.parametrize("order", ["cheap first", "dear first"])
def test_a_call_logged_twice_with_two_costs_counts_the_same_whatever_the_order(
    tmp_path: Path, order: str
) -> None:
    """Two lines with one call id and the same tokens, at $0.50 and $50: the larger recorded
    cost wins (then the larger counts), so the total never depends on the line order."""
    import json

    line = json.loads(WRITTEN.read_bytes().splitlines()[0])
    cheap, dear = ({**line, "response_cost": cost} for cost in (0.5, 50.0))
    lines = [cheap, dear] if order == "cheap first" else [dear, cheap]
    log = tmp_path / "proxy.jsonl"
    log.write_text("".join(json.dumps(doc) + "\n" for doc in lines))
    engine = engine_for(LiteLLMSource([log]))
    engine.scan()
    [session] = engine.snapshot().sessions
    assert session.cost_usd == 50.0 and session.responses == 1
