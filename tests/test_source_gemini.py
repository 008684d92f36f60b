"""Gemini CLI source: sample and hand-written totals, re-appended messages, legacy whole-file
JSON rewritten in place, split invariance.

Token rule (formats.md §3): input = promptTokenCount - cached + toolUsePromptTokenCount,
cache_read = cached, output = candidates, reasoning = thoughts.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from source_helpers import by_id, dedupe_sum, engine_for, feed_split, tiny_tokenizer, usage, write
from tokentop import tokens
from tokentop.model import Event, SessionInfo, TokenCounts, ToolCall, ToolResult
from tokentop.sources.gemini import GeminiFileParser, GeminiLegacyParser, GeminiSource

FIXTURES = Path(__file__).parent / "fixtures" / "gemini"
SAMPLE_HOME = FIXTURES / "samples"
SAMPLE_CHATS = (
    SAMPLE_HOME / "tmp/0b7dfb1274ee51b336813b17f2ddab1f56b6591f723e7314126bbd502c69e9c9/chats"
)
SAMPLE_JSONL = SAMPLE_CHATS / "session-2026-04-29T21-39-gemini_s.jsonl"
SAMPLE_JSON = SAMPLE_CHATS / "session-2026-01-16T18-34-3739ef95.json"
WRITTEN_HOME = FIXTURES / "written"
MAIN_ID = "abcd1234-0000-4000-8000-000000000001"
WRITTEN = WRITTEN_HOME / "tmp/webapp/chats/session-2026-05-01T10-00-abcd1234.jsonl"
SUBAGENT = WRITTEN_HOME / f"tmp/webapp/chats/{MAIN_ID}/sub-0001.jsonl"

G1 = TokenCounts(input=1000 - 400 + 10, output=50, cache_read=400, reasoning=30)
G2 = TokenCounts(input=500, output=80, cache_read=1000)
G3 = TokenCounts(input=500, output=100, cache_read=1500, reasoning=20)


def parse(path: Path, home: Path) -> tuple[GeminiFileParser, list[Event]]:
    parser = GeminiSource(homes=[home]).new_parser(path)
    assert isinstance(parser, GeminiFileParser)
    out: list[Event] = []
    parser.feed(path.read_bytes(), out)
    return parser, out


def test_a_message_still_streaming_is_estimated_until_its_usage_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Gemini appends a message before its usage; tokentop estimates its text (marked
    estimated) until the re-appended copy with `tokens` replaces it, here with less."""
    monkeypatch.setattr(tokens, "_tokenizer", tiny_tokenizer())
    home = tmp_path / "gemini"
    path = home / "tmp/webapp/chats/session-2026-05-01T10-00-abcd1234.jsonl"
    meta = {"sessionId": MAIN_ID, "projectHash": "webapp", "startTime": "2026-05-01T10:00:00Z"}
    msg = {"id": "g1", "timestamp": "2026-05-01T10:00:05Z", "type": "gemini",
           "content": "abab x " * 20, "thoughts": [{"subject": "ab", "description": "x"}],
           "tokens": None, "model": "gemini-2.5-pro"}  # fmt: skip
    write(path, json.dumps(meta) + "\n" + json.dumps(msg) + "\n")
    engine = engine_for(GeminiSource(homes=[home]))
    engine.scan()
    streaming = by_id(engine.snapshot())[MAIN_ID]
    # tiny tokenizer: "abab x " is ab, ab, " ", x, " " = 5 tokens (x20); "ab\nx" is 3
    assert (streaming.tokens, streaming.estimated) == (TokenCounts(output=100, reasoning=3), True)
    recorded = {"input": 30, "output": 12, "cached": 10, "thoughts": 2, "tool": 0, "total": 44}
    with path.open("a") as f:
        f.write(json.dumps({**msg, "tokens": recorded}) + "\n")
    engine.scan()
    done = by_id(engine.snapshot())[MAIN_ID]
    assert done.tokens == TokenCounts(input=20, output=12, cache_read=10, reasoning=2)
    assert done.estimated is False and done.responses == 1


# -- shared samples -------------------------------------------------------------------------


def test_sample_jsonl_totals() -> None:
    """Two responses: 11855 in + 81 out; then 12069 in of which 11502 cached, 147 out.
    Sum 24152 = the two `total` fields (11936 + 12216)."""
    parser, events = parse(SAMPLE_JSONL, SAMPLE_HOME)
    assert dedupe_sum(events) == TokenCounts(input=11855 + 567, output=228, cache_read=11502)
    assert dedupe_sum(events).total == 11936 + 12216
    assert {e.session.session_id for e in events} == {"gemini_stage0_jsonl"}
    assert {e.model for e in usage(events)} == {"gemini-3-flash-preview"}
    calls = [e for e in events if isinstance(e, ToolCall)]
    results = [e for e in events if isinstance(e, ToolResult)]
    assert [c.name for c in calls] == ["run_shell_command"]
    assert [r.is_error for r in results] == [False]
    assert (parser.lines, parser.bad_lines) == (5, 0)


def test_sample_legacy_json_through_the_engine() -> None:
    """The legacy document's one gemini message: 10 in, 5 out."""
    engine = engine_for(GeminiSource(homes=[SAMPLE_HOME]))
    engine.scan()
    sessions = by_id(engine.snapshot())
    assert sessions["session-2026-01-16T18-34-3739ef95"].tokens == TokenCounts(10, 5)
    assert sessions["gemini_stage0_jsonl"].tokens.total == 24152


# -- written fixture ------------------------------------------------------------------------


def test_written_fixture_max_wins_and_rewinds_kept() -> None:
    """g1 appears three times (no tokens, with tokens, inside $set.messages) and counts once;
    g2 was rewound but billed, so it stays; g4's tokens are not numbers (bad line)."""
    parser, events = parse(WRITTEN, WRITTEN_HOME)
    assert dedupe_sum(events) == G1 + G2 + G3
    assert dedupe_sum(events).total == 1090 + 1580 + 2120
    assert (parser.lines, parser.bad_lines) == (13, 2)  # "not json at all", g4
    assert parser.session_id == MAIN_ID
    info = [e for e in events if isinstance(e, SessionInfo)]
    assert [(i.session.session_id, i.cwd) for i in info] == [(MAIN_ID, "/home/dev/webapp")]
    calls = {e.call_id: e for e in events if isinstance(e, ToolCall)}
    assert calls[f"gemini:{MAIN_ID}:replace-1"].file_changing
    errors = {e.call_id: e.is_error for e in events if isinstance(e, ToolResult)}
    assert errors == {f"gemini:{MAIN_ID}:replace-1": False, f"gemini:{MAIN_ID}:shell-1": True}


def test_subagent_file_is_its_own_session_with_parent() -> None:
    engine = engine_for(GeminiSource(homes=[WRITTEN_HOME]))
    engine.scan()
    sessions = by_id(engine.snapshot())
    assert sessions["sub-0001"].parent == MAIN_ID
    assert sessions["sub-0001"].tokens == TokenCounts(input=300, output=20)
    assert sessions[MAIN_ID].tokens == G1 + G2 + G3
    assert sessions[MAIN_ID].cwd == "/home/dev/webapp"
    assert sessions[MAIN_ID].bad_lines == 2


def test_roots_and_transcript_names(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "GEMINI_CLI_HOME": str(tmp_path / "alt")}
    assert GeminiSource(env=env).roots() == [tmp_path / "alt/.gemini/tmp"]
    env["GEMINI_DATA_DIR"] = f"{tmp_path}/a, {tmp_path}/b/tmp"
    assert GeminiSource(env=env).roots() == [tmp_path / "a/tmp", tmp_path / "b/tmp"]
    source = GeminiSource(homes=[tmp_path])
    chats = tmp_path / "tmp/p/chats"
    assert source.is_transcript(chats / "session-x.jsonl")
    assert source.is_transcript(chats / "session-x.json")
    assert source.is_transcript(chats / "parent/child.jsonl")
    assert not source.is_transcript(chats / "notes.json")
    assert not source.is_transcript(tmp_path / "tmp/p/logs.json")


# -- the legacy whole-file JSON, rewritten in place ----------------------------------------


def test_legacy_json_rewritten_in_place_same_size(tmp_path: Path) -> None:
    """Gemini rewrites the whole document; a same-size in-place rewrite (same inode) must be
    seen, and re-reading unchanged content must add nothing."""
    chats = tmp_path / "tmp/p/chats"
    chats.mkdir(parents=True)
    doc = chats / SAMPLE_JSON.name
    shutil.copy(SAMPLE_JSON, doc)
    engine = engine_for(GeminiSource(homes=[tmp_path]))
    engine.scan()
    sid = "session-2026-01-16T18-34-3739ef95"
    assert by_id(engine.snapshot())[sid].tokens == TokenCounts(10, 5)
    inode = doc.stat().st_ino
    text = doc.read_bytes().replace(b'"output": 5,', b'"output": 7,')
    with open(doc, "r+b") as handle:  # same size, same inode: the tailer would see nothing
        handle.write(text)
    os.utime(doc, ns=(doc.stat().st_atime_ns, doc.stat().st_mtime_ns + 1_000_000))
    assert doc.stat().st_ino == inode and len(text) == SAMPLE_JSON.stat().st_size
    assert engine.process([doc])
    assert by_id(engine.snapshot())[sid].tokens == TokenCounts(10, 7)
    assert not engine.process([doc])  # unchanged content: nothing new
    assert by_id(engine.snapshot())[sid].tokens == TokenCounts(10, 7)


def test_legacy_json_and_its_jsonl_conversion_count_once(tmp_path: Path) -> None:
    """Resuming converts `x.json` into `x.jsonl` re-appending every message (same ids)."""
    chats = tmp_path / "tmp/p/chats"
    chats.mkdir(parents=True)
    shutil.copy(SAMPLE_JSON, chats / SAMPLE_JSON.name)
    sid = "session-2026-01-16T18-34-3739ef95"
    meta = f'{{"sessionId":"{sid}","projectHash":"p","startTime":"2026-01-16T18:34:00.000Z"}}'
    message = (
        '{"id":"m2","timestamp":"2026-01-16T18:34:02.000Z","type":"gemini","model":'
        '"gemini-3-flash-preview","tokens":{"input":10,"output":5,"cached":0,"total":15}}'
    )
    (chats / (SAMPLE_JSON.name + "l")).write_text(f"{meta}\n{message}\n")
    engine = engine_for(GeminiSource(homes=[tmp_path]))
    engine.scan()
    session = by_id(engine.snapshot())[sid]
    assert session.tokens == TokenCounts(10, 5)
    assert session.responses == 1
    assert len(session.files) == 2


def test_legacy_half_written_file_is_bad_until_complete(tmp_path: Path) -> None:
    doc = tmp_path / "session-x.json"
    doc.write_bytes(SAMPLE_JSON.read_bytes()[:200])
    parser = GeminiLegacyParser(path=str(doc), session_id="session-x")
    out: list[Event] = []
    assert not parser.refresh(out)
    assert parser.bad_lines == 1 and "not a Gemini session document" in parser.last_error
    doc.write_bytes(SAMPLE_JSON.read_bytes())
    assert parser.refresh(out)
    assert (parser.bad_lines, parser.last_error) == (0, "")
    assert dedupe_sum(out) == TokenCounts(10, 5)


# -- split invariance ---------------------------------------------------------------------

DATA = WRITTEN.read_bytes()


@settings(max_examples=50, deadline=None)
@given(cuts=st.lists(st.integers(0, len(DATA)), max_size=10), persist=st.booleans())
def test_any_split_gives_the_same_events(cuts: list[int], persist: bool) -> None:
    def fresh() -> GeminiFileParser:
        parser = GeminiSource(homes=[WRITTEN_HOME]).new_parser(WRITTEN)
        assert isinstance(parser, GeminiFileParser)
        return parser

    whole, whole_events = feed_split(fresh(), DATA, [])
    split, events = feed_split(fresh(), DATA, cuts, persist)
    assert events == whole_events
    assert (split.lines, split.bad_lines) == (whole.lines, whole.bad_lines)


@pytest.mark.parametrize("path", [SAMPLE_JSONL, WRITTEN, SUBAGENT])
def test_parser_state_survives_the_cache(path: Path, tmp_path: Path) -> None:
    import msgspec

    parser, _ = parse(path, WRITTEN_HOME)
    again = msgspec.msgpack.decode(msgspec.msgpack.encode(parser), type=GeminiFileParser)
    assert again == parser


def test_a_found_name_is_judged_by_geminis_own_rule() -> None:
    """Gemini has its own `is_transcript`; the walk's string check must not bypass it."""
    source = GeminiSource([Path("/h/.gemini")])
    for name in ("/h/.gemini/tmp/p/chats/session-1.json", "/h/.gemini/tmp/p/chats/other.json"):
        assert source.is_transcript_name(name) == source.is_transcript(Path(name))
    assert not source.is_transcript_name("/h/.gemini/tmp/p/chats/other.json")
