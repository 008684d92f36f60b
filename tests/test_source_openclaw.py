"""OpenClaw source: the real sample's totals, archived copies, recorded cost vs price table,
zero-usage retries, record-id dedupe, split invariance."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from source_helpers import by_id, dedupe_sum, engine_for, feed_split, usage
from tokentop.model import Event, TokenCounts, ToolCall, ToolResult
from tokentop.pricing import PriceTable
from tokentop.sources.openclaw import OpenClawFileParser, OpenClawSource

FIXTURES = Path(__file__).parent / "fixtures" / "openclaw"
SAMPLE_ROOT = FIXTURES / "samples"
SAMPLE = SAMPLE_ROOT / "agents/main/sessions/8555a0a4-0b79-459d-939c-e17cdbbf4fe2.jsonl"
SAMPLE_ID = "8555a0a4-0b79-459d-939c-e17cdbbf4fe2"
WRITTEN_ROOT = FIXTURES / "written"
SESS_A = WRITTEN_ROOT / "agents/main/sessions/sess-a.jsonl"


def parse(path: Path) -> tuple[OpenClawFileParser, list[Event]]:
    parser = OpenClawSource(dirs=[path.parents[3]]).new_parser(path)
    out: list[Event] = []
    parser.feed(path.read_bytes(), out)
    return parser, out


def test_real_sample_totals_and_recorded_costs() -> None:
    """Three billed responses (gpt-5.4 via openai-codex); the ollama error retry with all-zero
    usage is skipped. input excludes cache: 12310+264+22285 in, 191+105+109 out,
    1536+24320+2560 cache reads; cost = the three `cost.total` values OpenClaw recorded."""
    parser, events = parse(SAMPLE)
    billed = usage(events)
    assert dedupe_sum(events) == TokenCounts(input=34859, output=405, cache_read=28416)
    assert [e.model for e in billed] == ["gpt-5.4"] * 3
    assert sum(e.cost_usd or 0 for e in billed) == pytest.approx(0.0244853 + 0.006188 + 0.04097275)
    assert {e.session.session_id for e in events} == {SAMPLE_ID}
    assert len([e for e in events if isinstance(e, ToolCall)]) == 5
    assert (parser.lines, parser.bad_lines) == (9, 0)


def test_written_fixture_through_the_engine() -> None:
    """sess-a: a1 (100/50/1000 read/200 write, recorded $0.012) appears in the live file twice
    and in its `.deleted` archive: counted once. a2 is a zero-usage error retry (skipped). a3
    recorded cost 0 -> priced from the table. a4 names no model -> the last model_change.
    a9 exists only in the archive. sess-b is read from a `.reset` archive."""
    engine = engine_for(OpenClawSource(dirs=[WRITTEN_ROOT]))
    engine.scan()
    sessions = by_id(engine.snapshot())
    a = sessions["sess-a"]
    assert a.tokens == TokenCounts(input=417, output=98, cache_read=1000, cache_write_5m=200)
    assert a.responses == 4
    assert a.cwd == "/srv/bot"
    prices = PriceTable.default()
    a3 = prices.cost("claude-sonnet-4-5", TokenCounts(300, 40))
    a4 = prices.cost("claude-opus-4-1", TokenCounts(10, 5))
    assert a3 is not None and a4 is not None
    assert a.cost_usd == pytest.approx(0.012 + 0.0001 + a3 + a4)
    assert {m.model for m in a.models} == {"claude-sonnet-4-5", "claude-opus-4-1"}
    assert a.bad_lines == 2  # non-numeric usage, truncated line
    assert (a.tool_calls, a.tool_errors) == (1, 1)
    b = sessions["sess-b"]
    assert b.tokens == TokenCounts(20, 2)
    assert b.cost_usd == pytest.approx(0.001)
    assert set(sessions) == {"sess-a", "sess-b"}


def test_tool_call_and_error_result() -> None:
    _, events = parse(SESS_A)
    calls = [e for e in events if isinstance(e, ToolCall)]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [(c.call_id, c.name, c.file_changing) for c in calls] == [("call_1", "edit", True)]
    assert [(r.call_id, r.is_error) for r in results] == [("call_1", True)]


def test_roots_and_names(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path)}
    assert OpenClawSource(env=env).roots() == [
        tmp_path / name / "agents" for name in (".openclaw", ".clawdbot", ".moltbot", ".moldbot")
    ]
    env["OPENCLAW_DIR"] = f"{tmp_path}/x,{tmp_path}/y/agents"
    assert OpenClawSource(env=env).roots() == [tmp_path / "x/agents", tmp_path / "y/agents"]
    source = OpenClawSource(dirs=[tmp_path])
    sessions = tmp_path / "agents/main/sessions"
    assert source.is_transcript(sessions / "s.jsonl")
    assert source.is_transcript(sessions / "s-topic-42.jsonl")
    assert source.is_transcript(sessions / "s.jsonl.deleted.2026-01-01T00-00-00.000Z")
    assert source.is_transcript(sessions / "s.jsonl.reset.2026-01-01T00-00-00Z")
    assert not source.is_transcript(sessions / "sessions.json")
    assert not source.is_transcript(sessions / "s.jsonl.bak-1")
    assert not source.is_transcript(tmp_path / "agents/main/agent/models.jsonl")


DATA = SESS_A.read_bytes()


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(0, len(DATA)), max_size=10), persist=st.booleans())
def test_any_split_gives_the_same_events(cuts: list[int], persist: bool) -> None:
    source = OpenClawSource(dirs=[WRITTEN_ROOT])
    whole, whole_events = feed_split(source.new_parser(SESS_A), DATA, [])
    split, events = feed_split(source.new_parser(SESS_A), DATA, cuts, persist)
    assert events == whole_events
    assert (split.lines, split.bad_lines) == (whole.lines, whole.bad_lines) == (13, 2)
