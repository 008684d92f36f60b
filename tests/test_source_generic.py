"""Generic JSONL source: the documented schema, ids, estimates from text, bad lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from source_helpers import dedupe_sum, engine_for, feed_split, tiny_tokenizer, usage
from tokentop import tokens
from tokentop.model import Event, SessionKey, TokenCounts, UsageEvent
from tokentop.sources.generic import GenericFileParser, GenericJsonlSource

FIXTURE = Path(__file__).parent / "fixtures" / "generic" / "usage.jsonl"


@pytest.fixture(autouse=True)
def tiny(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "_tokenizer", tiny_tokenizer())


def parse(path: Path = FIXTURE) -> tuple[GenericFileParser, list[Event]]:
    parser = GenericJsonlSource([path]).new_parser(path)
    out: list[Event] = []
    parser.feed(path.read_bytes(), out)
    return parser, out


def test_fixture_totals() -> None:
    """run-1: c1 twice (output 20 then 25: largest wins) + a text-only line estimated with the
    tiny encoding ("abab ab" -> 4 output, "ab" -> 1 input). run-2 is labelled agent `aider`,
    its timestamp in ms. Four bad lines: bad time, no session, negative count, not JSON."""
    parser, events = parse()
    by_session: dict[SessionKey, list[UsageEvent]] = {}
    for e in usage(events):
        by_session.setdefault(e.session, []).append(e)
    run1 = by_session[SessionKey("jsonl", "run-1")]
    assert dedupe_sum(run1) == TokenCounts(input=101, output=29, cache_read=50)
    assert [e.estimated for e in run1] == [False, False, True]
    (run2,) = by_session[SessionKey("aider", "run-2")]
    assert (run2.tokens, run2.cost_usd, run2.cwd) == (TokenCounts(5, 5), 0.5, "/r")
    assert run2.timestamp == 1777629660.0
    assert (parser.lines, parser.bad_lines) == (9, 4)
    assert "required" in parser.last_error or "JSON" in parser.last_error


def test_through_the_engine_estimated_flag_reaches_the_session() -> None:
    engine = engine_for(GenericJsonlSource([FIXTURE]))
    engine.scan()
    sessions = {str(s.key): s for s in engine.snapshot().sessions}
    assert sessions["jsonl:run-1"].estimated
    assert sessions["jsonl:run-1"].tokens.total == 180
    assert not sessions["aider:run-2"].estimated
    assert sessions["aider:run-2"].cost_usd == pytest.approx(0.5)


def test_lines_without_id_are_keyed_by_offset_so_a_reread_adds_nothing(tmp_path: Path) -> None:
    log = tmp_path / "u.jsonl"
    line = '{"session":"s","timestamp":1700000000,"input_tokens":3}\n'
    log.write_text(line * 2)
    engine = engine_for(GenericJsonlSource([log]))
    engine.scan()
    assert engine.snapshot().sessions[0].tokens == TokenCounts(6)
    log.write_text(line)  # truncated and rewritten: read again from 0
    engine.scan()
    assert engine.snapshot().sessions[0].tokens == TokenCounts(6)


DATA = FIXTURE.read_bytes()


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(cuts=st.lists(st.integers(0, len(DATA)), max_size=8), persist=st.booleans())
def test_any_split_gives_the_same_events(cuts: list[int], persist: bool) -> None:
    source = GenericJsonlSource([FIXTURE])
    _, whole = feed_split(source.new_parser(FIXTURE), DATA, [])
    _, events = feed_split(source.new_parser(FIXTURE), DATA, cuts, persist)
    assert events == whole
