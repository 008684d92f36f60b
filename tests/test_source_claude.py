"""Claude Code adapter on real sample transcripts and hand-made lines in the same shape.

The ledger (not under test here) counts each `dedupe_key` once, at its largest total.
`ledger_view` below reproduces just that rule so these tests can pin session totals.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokentop.model import Event, SessionInfo, TokenCounts, ToolCall, ToolResult, UsageEvent
from tokentop.sources import claude_code, claude_parser
from tokentop.sources.claude_code import ClaudeCodeSource, ClaudeFileParser

FIXTURES = Path(__file__).parent / "fixtures" / "claude"
DEMO = FIXTURES / "projects/-path-to-Demo/1af7fc5e-8455-4414-9ccd-011d40f70b2a.jsonl"
DEMO_ID = "1af7fc5e-8455-4414-9ccd-011d40f70b2a"
SUBAGENT_PARENT = "0a1b2c3d-4e5f-4061-8071-2a3b4c5d6e7f"
GENERATOR = Path(__file__).with_name("gen_claude_corpus.py")


# -- helpers ----------------------------------------------------------------------------------


def parse(path: Path, data: bytes | None = None) -> tuple[ClaudeFileParser, list[Event]]:
    parser = ClaudeCodeSource(config_dirs=[]).new_parser(path)
    events: list[Event] = []
    parser.feed(path.read_bytes() if data is None else data, events)
    return parser, events


def ledger_view(events: Iterable[Event]) -> dict[str, TokenCounts]:
    """Per session, the sum over dedupe keys of the largest copy of each key (max wins).

    The session of a key is that of its first copy, as in the real ledger.
    """
    best: dict[str, UsageEvent] = {}
    for event in events:
        if isinstance(event, UsageEvent):
            old = best.get(event.dedupe_key)
            if old is None:
                best[event.dedupe_key] = event
            elif event.tokens.total > old.tokens.total:
                best[event.dedupe_key] = msgspec.structs.replace(old, tokens=event.tokens)
    totals: dict[str, TokenCounts] = {}
    for event in best.values():
        sid = event.session.session_id
        totals[sid] = totals.get(sid, TokenCounts()) + event.tokens
    return totals


def of_type(events: Iterable[Event], kind: type[Any]) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


def assistant(
    msg_id: str | None,
    output: int,
    *,
    session: str = "s1",
    input_tokens: int = 3,
    cache_read: int = 100,
    cache_write: int = 10,
    split: tuple[int, int] | None = None,
    model: str = "claude-sonnet-4-5-20250929",
    blocks: Sequence[dict[str, Any]] = ({"type": "text", "text": "hi"},),
    **envelope: Any,
) -> dict[str, Any]:
    """An assistant line in the shape Claude Code writes (one content block per line)."""
    usage: dict[str, Any] = {
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": cache_write,
        "cache_read_input_tokens": cache_read,
        "output_tokens": output,
        "service_tier": "standard",
    }
    if split is not None:
        usage["cache_creation"] = {
            "ephemeral_5m_input_tokens": split[0],
            "ephemeral_1h_input_tokens": split[1],
        }
    message: dict[str, Any] = {"type": "message", "role": "assistant", "model": model}
    if msg_id is not None:
        message["id"] = msg_id
    message.update(content=list(blocks), stop_reason=None, usage=usage)
    record = {
        "parentUuid": None,
        "isSidechain": False,
        "cwd": "/home/dev/proj",
        "sessionId": session,
        "version": "2.0.31",
        "gitBranch": "main",
        "message": message,
        "requestId": "req_1",
        "type": "assistant",
        "uuid": f"u-{msg_id}-{output}",
        "timestamp": "2025-09-03T00:47:21.540Z",
    }
    record.update(envelope)
    return record


def tool_result(call_id: str, *, is_error: bool = False, session: str = "s1") -> dict[str, Any]:
    block = {"type": "tool_result", "tool_use_id": call_id, "content": "done", "is_error": is_error}
    return {
        "type": "user",
        "sessionId": session,
        "cwd": "/home/dev/proj",
        "message": {"role": "user", "content": [block]},
        "uuid": f"r-{call_id}",
        "timestamp": "2025-09-03T00:47:22.000Z",
        "toolUseResult": {"stdout": "done", "stderr": ""},
    }


def jsonl(*records: dict[str, Any] | bytes) -> bytes:
    return b"".join(
        (r if isinstance(r, bytes) else json.dumps(r, separators=(",", ":")).encode()) + b"\n"
        for r in records
    )


# -- real samples -----------------------------------------------------------------------------


def test_demo_session_totals_after_dedupe() -> None:
    """29 lines of a real v1.0.98 session; 17 assistant lines carry 7 distinct message ids.

    Per message id (input, output, cache_read, cache_write_5m), largest copy wins:
      msg_01TqDZ… lines 3-4    3  322   4734 10816  (line 3 says output 8, line 4 says 322)
      msg_018mu4… lines 6-10   6  285  15550   304  (30, 30, 30, 30, then 285)
      msg_01TRqe… lines 16-18  7  146  15854   435  (30, then 146 twice)
      msg_01XP9v… line 22     61   41  16289   243
      msg_01RaR4… lines 24-25  5    1  16532   425  (identical copies)
      msg_01PbR8… line 27      6   86  16957   346
      msg_01EoAx… line 29      5   72  17303   129
    Every line has the `cache_creation` split with 0 one-hour tokens.
    Summing every line instead would give output 8+322+30*4+285+30+146*2+41+1+1+86+72 = 1258.
    """
    parser, events = parse(DEMO)
    assert (parser.lines, parser.bad_lines) == (29, 0)
    totals = ledger_view(events)
    assert totals == {
        DEMO_ID: TokenCounts(
            input=93, output=953, cache_read=103_219, cache_write_5m=12_698, cache_write_1h=0
        )
    }
    usage = of_type(events, UsageEvent)
    # One event per response read in one feed: a growing copy (line 4: 322 after line 3's 8)
    # replaces the earlier event, and copies that don't grow are dropped. 7 distinct ids.
    assert len(usage) == 7
    assert len({u.dedupe_key for u in usage}) == 7
    assert usage[0].tokens.output == 322
    assert usage[0].dedupe_key == "claude:msg_01TqDZoU6FcpxB4u2AmpgWfZ"
    assert all(u.model == "claude-sonnet-4-20250514" and u.cwd == "/path/to/Demo" for u in usage)


def test_demo_tools_and_session_info() -> None:
    """12 tool_use blocks, each answered by one tool_result; only toolu_01LM7v… failed."""
    _, events = parse(DEMO)
    assert isinstance(events[0], SessionInfo)
    assert of_type(events, SessionInfo) == [
        SessionInfo(events[0].session, 1756860439.293, "/path/to/Demo", "", "", "")
    ]
    calls = of_type(events, ToolCall)
    results = of_type(events, ToolResult)
    assert len(calls) == 12
    assert {c.call_id for c in calls} == {r.call_id for r in results}
    assert [r.call_id for r in results if r.is_error] == ["toolu_01LM7vfs6eMdhHJokVajzJA1"]
    first = calls[0]
    assert (first.call_id, first.name, first.file_changing) == (
        "toolu_01FHpVtawG6NqQ943umBMky8",
        "TodoWrite",
        False,
    )
    assert len(first.input_hash) == 16


def test_ccusage_fixture_totals_cost_and_untyped_lines() -> None:
    """ccusage's own fixture: lines without `type` and without the cache split.

    alpha: input 100+200+300, output 50+75+125, cache writes 25+50+0 (all 5-minute, since
    no split is recorded), cache reads 10+20+40; its recorded costUSD passes through.
    beta: input 50+80, output 25+35, writes 5+10, reads 15+25.
    """
    base = FIXTURES / "ccusage-fixture/projects"
    _, alpha = parse(base / "project-alpha/session-alpha/chat.jsonl")
    _, beta = parse(base / "project-beta/session-beta/chat.jsonl")
    assert ledger_view(alpha) == {"session-alpha": TokenCounts(600, 250, 70, 75, 0)}
    assert ledger_view(beta) == {"session-beta": TokenCounts(130, 60, 40, 15, 0)}
    assert [u.cost_usd for u in of_type(alpha, UsageEvent)] == [0.12, 0.34, 0.56]


def test_representative_messages_totals() -> None:
    """claude-code-log's fixture: 5 responses with distinct ids, no cache, a trailing summary.

    input 25+45+78+25+45 = 218, output 120+85+95+35+110 = 445. The file has no final
    newline; the tailer would hold that (summary) line back, so here we complete it.
    """
    path = FIXTURES / "claude-code-log/representative_messages.jsonl"
    parser, events = parse(path, path.read_bytes() + b"\n")
    assert (parser.lines, parser.bad_lines) == (12, 0)
    assert ledger_view(events) == {"test_session": TokenCounts(input=218, output=445)}
    assert [c.name for c in of_type(events, ToolCall)] == ["Edit", "Bash"]
    assert of_type(events, ToolCall)[0].file_changing
    assert len(of_type(events, ToolResult)) == 2


def test_subagent_layout_sample_belongs_to_parent() -> None:
    """The subagent file says sessionId "agent-a0ad…"; the folder names the parent session.

    Neither file carries usage, and their tool blocks have no ids: the ids are made from
    the file path and record uuid so they cannot collide with other calls.
    """
    base = FIXTURES / "subagent-layout"
    parent, parent_events = parse(base / f"{SUBAGENT_PARENT}.jsonl")
    child_path = base / SUBAGENT_PARENT / "subagents/agent-a0ad4f44468bdf20d.jsonl"
    child, child_events = parse(child_path)
    assert (parent.bad_lines, child.bad_lines) == (0, 0)
    sessions = {e.session.session_id for e in [*parent_events, *child_events]}
    assert sessions == {SUBAGENT_PARENT}
    assert ledger_view([*parent_events, *child_events]) == {}
    call = of_type(child_events, ToolCall)[0]
    assert call.name == "bash"
    assert call.call_id == f"claude:{child_path}#ca1/1"
    assert of_type(child_events, ToolResult)[0].call_id == f"claude:{child_path}#cu2/0"


# -- duplicates and keys ----------------------------------------------------------------------


def test_streamed_copies_grow_from_8_to_322(tmp_path: Path) -> None:
    path = tmp_path / "s1.jsonl"
    grow = jsonl(
        assistant("msg_A", 8),
        assistant("msg_A", 322, blocks=[{"type": "tool_use", "id": "t1", "name": "Write"}]),
    )
    _, events = parse(path, grow)
    usage = of_type(events, UsageEvent)
    # Read in one go, the larger copy replaces the first event in place.
    assert [(u.dedupe_key, u.tokens.output) for u in usage] == [("claude:msg_A", 322)]
    assert ledger_view(events)["s1"] == TokenCounts(3, 322, 100, 10, 0)
    # Read as two appends (a live tail), both copies are emitted; the ledger keeps the max.
    parser = ClaudeCodeSource(config_dirs=[]).new_parser(path)
    live: list[Event] = []
    first_line = grow.split(b"\n")[0] + b"\n"
    parser.feed(first_line, live)
    parser.feed(grow[len(first_line) :], live)
    assert [u.tokens.output for u in of_type(live, UsageEvent)] == [8, 322]
    assert ledger_view(live)["s1"] == TokenCounts(3, 322, 100, 10, 0)
    assert of_type(events, ToolCall)[0].file_changing
    # Reversed, the smaller copy adds nothing, so it is not emitted at all.
    _, events = parse(path, jsonl(assistant("msg_A", 322), assistant("msg_A", 8)))
    assert [u.tokens.output for u in of_type(events, UsageEvent)] == [322]


def test_replays_and_resumed_copies_share_the_message_key(tmp_path: Path) -> None:
    """Same message.id under another requestId (sidechain replay) or in another file
    (resumed session): one key, so the ledger counts the response once."""
    _, first = parse(tmp_path / "a.jsonl", jsonl(assistant("msg_R", 40)))
    replay = assistant("msg_R", 40, requestId="req_other", isSidechain=True)
    _, second = parse(tmp_path / "b.jsonl", jsonl(replay, assistant("msg_S", 5)))
    assert of_type(second, UsageEvent)[0].sidechain
    assert ledger_view([*first, *second]) == {"s1": TokenCounts(6, 45, 200, 20, 0)}


def test_records_without_message_id_never_collide(tmp_path: Path) -> None:
    """No message.id: keyed on file + uuid, or file + byte offset when there is no uuid."""
    path = tmp_path / "s1.jsonl"
    no_uuid = assistant(None, 7)
    del no_uuid["uuid"]
    first_line = jsonl(no_uuid)
    _, events = parse(path, first_line + first_line + jsonl(assistant(None, 9, uuid="u9")))
    keys = [u.dedupe_key for u in of_type(events, UsageEvent)]
    assert keys == [
        f"claude:{path}#0",
        f"claude:{path}#{len(first_line)}",
        f"claude:{path}#u9",
    ]
    assert ledger_view(events)["s1"].output == 7 + 7 + 9


def test_synthetic_and_all_zero_usage_are_skipped(tmp_path: Path) -> None:
    zero = assistant("msg_Z", 0, input_tokens=0, cache_read=0, cache_write=0)
    synthetic = assistant("msg_Y", 50, model="<synthetic>")
    parser, events = parse(tmp_path / "s1.jsonl", jsonl(zero, synthetic))
    assert of_type(events, UsageEvent) == []
    assert parser.bad_lines == 0


def test_cache_writes_use_the_ttl_split_when_present(tmp_path: Path) -> None:
    split = assistant("msg_1", 1, cache_write=300, split=(100, 200))
    no_split = assistant("msg_2", 1, cache_write=50)
    _, events = parse(tmp_path / "s1.jsonl", jsonl(split, no_split))
    tokens = [u.tokens for u in of_type(events, UsageEvent)]
    assert [(t.cache_write_5m, t.cache_write_1h) for t in tokens] == [(100, 200), (50, 0)]


# -- sessions ---------------------------------------------------------------------------------


def test_subagent_usage_goes_to_parent_and_flat_agent_files_use_session_id(
    tmp_path: Path,
) -> None:
    nested = tmp_path / "proj/parent-uuid/subagents/agent-x1.jsonl"
    line = assistant("msg_N", 20, session="agent-x1", isSidechain=True, agentId="x1")
    _, events = parse(nested, jsonl(line))
    usage = of_type(events, UsageEvent)[0]
    assert (usage.session.session_id, usage.sidechain) == ("parent-uuid", True)
    assert of_type(events, SessionInfo)[0].session.session_id == "parent-uuid"
    flat = tmp_path / "proj/agent-test-hash.jsonl"
    _, events = parse(flat, jsonl(assistant("msg_F", 20, session="main-uuid", isSidechain=True)))
    assert of_type(events, UsageEvent)[0].session.session_id == "main-uuid"


def test_one_session_info_before_the_first_response(tmp_path: Path) -> None:
    """Housekeeping lines without sessionId come first in resumed files; the SessionInfo
    comes from the first record that has one, and only once per file."""
    snapshot = {"type": "file-history-snapshot", "messageId": "m", "snapshot": {}}
    first_user = {
        "type": "user",
        "sessionId": "s1",
        "cwd": "/w",
        "gitBranch": "dev",
        "timestamp": "2025-09-03T00:00:00Z",
        "message": {"role": "user", "content": "go"},
    }
    _, events = parse(tmp_path / "s1.jsonl", jsonl(snapshot, first_user))
    assert events == [SessionInfo(events[0].session, 1756857600.0, "/w", "dev", "", "")]
    more = jsonl(snapshot, first_user, assistant("msg_1", 5), assistant("msg_2", 5))
    _, events = parse(tmp_path / "s1.jsonl", more)
    assert [type(e).__name__ for e in events] == ["SessionInfo", "UsageEvent", "UsageEvent"]


def test_lines_without_session_id_use_the_file_session(tmp_path: Path) -> None:
    line = assistant("msg_1", 5)
    del line["sessionId"]
    _, events = parse(tmp_path / "stem-id.jsonl", jsonl(line))
    assert of_type(events, UsageEvent)[0].session.session_id == "stem-id"


# -- unknown and bad input --------------------------------------------------------------------


def test_unknown_record_types_are_ignored_silently(tmp_path: Path) -> None:
    """New housekeeping types, including ones shaped unlike user/assistant records and a
    `progress` record nesting a subagent's usage (counted from the subagent's own file)."""
    nested = {"message": assistant("msg_sub", 999)}
    records: list[dict[str, Any]] = [
        {"type": "summary", "summary": "x", "leafUuid": "u"},
        {"type": "queue-operation", "operation": "enqueue", "sessionId": "s1"},
        {"type": "system", "message": "a plain string", "sessionId": "s1"},
        {"type": "progress", "data": nested, "sessionId": "s1", "usage": [1, 2]},
        {"type": "attachment", "message": {"content": 42}},
        {},
    ]
    parser, events = parse(tmp_path / "s1.jsonl", jsonl(*records, assistant("msg_1", 5)))
    assert (parser.lines, parser.bad_lines) == (7, 0)
    assert [e.dedupe_key for e in of_type(events, UsageEvent)] == ["claude:msg_1"]


def test_bad_lines_are_counted_and_good_totals_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = [assistant("msg_1", 10), tool_result("t1", is_error=True), assistant("msg_2", 20)]
    null_usage = assistant("msg_3", 30)
    null_usage["message"]["usage"]["output_tokens"] = None
    negative = assistant("msg_4", 40, input_tokens=-5)
    null_split = assistant("msg_5", 50, split=(1, 1))
    null_split["message"]["usage"]["cache_creation"]["ephemeral_1h_input_tokens"] = None
    bad_blocks = tool_result("t2")
    bad_blocks["message"]["content"] = [17]
    bad: list[dict[str, Any] | bytes] = [
        b'{"type":"assistant","message":{"id":"msg_6","usage":{"input_tok',  # truncated
        b"\x00\xff\xfe binary \x89PNG",
        b"not json at all",
        b'{"type":"assistant"} trailing',
        b"[1, 2]",
        b"   ",
        null_usage,
        negative,
        null_split,
        bad_blocks,
        b"x" * 5000,  # over the (patched) line limit
    ]
    monkeypatch.setattr(claude_parser, "MAX_LINE_BYTES", 4096)
    clean, clean_events = parse(tmp_path / "s1.jsonl", jsonl(*good))
    mixed = jsonl(good[0], *bad[:6], good[1], b"", *bad[6:], good[2])
    parser, events = parse(tmp_path / "s1.jsonl", mixed)
    assert (parser.lines, parser.bad_lines) == (len(good) + len(bad) + 1, len(bad))
    assert parser.last_error == "line 14: over 4096 bytes, skipped"
    assert ledger_view(events) == ledger_view(clean_events) == {"s1": TokenCounts(6, 30, 200, 20)}
    assert of_type(events, ToolResult) == of_type(clean_events, ToolResult)
    assert clean.bad_lines == 0


def test_bad_reasons_name_the_line(tmp_path: Path) -> None:
    null_usage = assistant("msg_3", 30)
    null_usage["message"]["usage"]["input_tokens"] = None
    parser, _ = parse(tmp_path / "s1.jsonl", jsonl(assistant("msg_1", 1), null_usage))
    assert parser.bad_lines == 1
    assert parser.last_error.startswith("line 2: ")
    assert "null" in parser.last_error
    parser, _ = parse(tmp_path / "s1.jsonl", jsonl(b"{oops"))
    assert parser.last_error.startswith("line 1: invalid JSON")


def test_unparseable_timestamp_keeps_the_tokens(tmp_path: Path) -> None:
    parser, events = parse(tmp_path / "s1.jsonl", jsonl(assistant("msg_1", 5, timestamp="soon")))
    usage = of_type(events, UsageEvent)
    assert parser.bad_lines == 0
    assert [(u.timestamp, u.tokens.output) for u in usage] == [(0.0, 5)]


# -- incremental feeding ----------------------------------------------------------------------


def _mixed_transcript() -> bytes:
    demo_copy = assistant(
        "msg_01TqDZoU6FcpxB4u2AmpgWfZ",
        400,
        session=DEMO_ID,
        cache_read=4734,
        cache_write=10816,
        split=(10816, 0),
    )
    no_key = assistant(None, 3)  # keyed on its byte offset, which must not depend on the split
    del no_key["uuid"]
    extra = jsonl(
        b"\xff\xfe junk",
        demo_copy,  # a later copy of the first response, with more output
        assistant("msg_X", 5, session="other", split=(4, 6)),
        no_key,
        b"",
        {"type": "summary", "summary": "s"},
    )
    return DEMO.read_bytes() + extra


MIXED = _mixed_transcript()
BOUNDARIES = [i + 1 for i, byte in enumerate(MIXED) if byte == 0x0A]


def feed_in_chunks(cuts: list[int], persist: bool) -> tuple[list[Event], tuple[int, int, str]]:
    parser = ClaudeCodeSource(config_dirs=[]).new_parser(DEMO)
    events: list[Event] = []
    start = 0
    for cut in [*cuts, len(MIXED)]:
        if persist:  # the cache stores the parser between runs
            blob = msgspec.msgpack.encode(parser)
            parser = msgspec.msgpack.decode(blob, type=ClaudeFileParser)
        parser.feed(MIXED[start:cut], events)
        start = cut
    return events, (parser.lines, parser.bad_lines, parser.last_error)


WHOLE = feed_in_chunks([], persist=False)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    cuts=st.lists(st.sampled_from(BOUNDARIES), max_size=12).map(lambda c: sorted(set(c))),
    persist=st.booleans(),
)
def test_any_split_into_feeds_gives_identical_totals(cuts: list[int], persist: bool) -> None:
    """Same ledger totals, tool events and counters however the bytes arrive. (Usage events
    themselves may differ: a growing copy replaces its predecessor only within one feed.)"""
    events, counters = feed_in_chunks(cuts, persist)
    whole_events, whole_counters = WHOLE
    assert counters == whole_counters
    assert ledger_view(events) == ledger_view(whole_events)
    others = [e for e in events if not isinstance(e, UsageEvent)]
    assert others == [e for e in whole_events if not isinstance(e, UsageEvent)]


def test_whole_mixed_transcript_reference() -> None:
    """Anchor for the property above: the reference itself is what we expect."""
    events, (lines, bad, _) = WHOLE
    assert (lines, bad) == (35, 1)
    totals = ledger_view(events)
    assert totals[DEMO_ID].output == 953 - 322 + 400
    assert totals["s1"].output == 3
    assert totals["other"] == TokenCounts(3, 5, 100, 4, 6)


# -- roots ------------------------------------------------------------------------------------


def test_roots_from_claude_config_dir_list(tmp_path: Path) -> None:
    (tmp_path / "b/projects").mkdir(parents=True)
    env = {
        "HOME": str(tmp_path / "home"),
        "CLAUDE_CONFIG_DIR": f" {tmp_path}/a , {tmp_path}/b/projects,",
    }
    source = ClaudeCodeSource(env=env)
    assert source.roots() == [tmp_path / "a/projects", tmp_path / "b/projects"]
    tilde = ClaudeCodeSource(env={"HOME": str(tmp_path), "CLAUDE_CONFIG_DIR": "~/cfg"})
    assert tilde.roots() == [tmp_path / "cfg/projects"]


def test_roots_default_to_xdg_and_legacy(tmp_path: Path) -> None:
    home = tmp_path / "home"
    plain = ClaudeCodeSource(env={"HOME": str(home)})
    assert plain.roots() == [home / ".config/claude/projects", home / ".claude/projects"]
    xdg = ClaudeCodeSource(env={"HOME": str(home), "XDG_CONFIG_HOME": str(tmp_path / "x")})
    assert xdg.roots() == [tmp_path / "x/claude/projects", home / ".claude/projects"]


def test_explicit_dirs_win_and_files_are_recognised(tmp_path: Path) -> None:
    env = {"HOME": str(tmp_path), "CLAUDE_CONFIG_DIR": str(tmp_path / "ignored")}
    source = ClaudeCodeSource(config_dirs=[tmp_path / "cfg", tmp_path / "cfg"], env=env)
    root = tmp_path / "cfg/projects"
    assert source.roots() == [root]
    nested = root / "-w/p1/subagents/agent-a.jsonl"
    assert source.is_transcript(root / "-w/s.jsonl")
    assert source.is_transcript(nested)
    assert not source.is_transcript(root / "-w/p1/subagents/agent-a.meta.json")
    assert not source.is_transcript(tmp_path / "elsewhere/s.jsonl")
    parser = source.new_parser(nested)
    assert (parser.session_id, parser.session_from_path) == ("p1", True)
    assert source.new_parser(root / "-w/s.jsonl").session_id == "s"


# -- the benchmark corpus generator's totals (small run; no timing here) -----------------------


@pytest.mark.skipif(not GENERATOR.exists(), reason="shared corpus generator not present")
def test_generated_corpus_matches_expected_totals(tmp_path: Path) -> None:
    out = tmp_path / "corpus"
    args = [str(out), "--sessions", "3", "--turns", "40", "--tool-bytes", "300"]
    subprocess.run([sys.executable, str(GENERATOR), *args], check=True, capture_output=True)
    source = ClaudeCodeSource(config_dirs=[out])
    events: list[Event] = []
    for path in sorted(source.roots()[0].rglob("*.jsonl")):
        parser = source.new_parser(path)
        parser.feed(path.read_bytes(), events)
        assert parser.bad_lines == 0
    expected = json.loads((out / "expected.json").read_text())["totals"]
    total = sum(ledger_view(events).values(), TokenCounts())
    assert (total.input, total.output, total.cache_read, total.cache_write) == (
        expected["input"],
        expected["output"],
        expected["cache_read"],
        expected["cache_write"],
    )


def test_the_latest_tool_calls_of_each_session_carry_their_hashes(tmp_path: Path) -> None:
    """Only each session's newest tool calls and results are hashed when a file is read in
    one go; those are all the loop detectors see, so a loop at the end of a long file is
    found and every call the ledger keeps has its input and output hash."""
    import claude_lines
    from tokentop.config import Config
    from tokentop.engine.engine import Engine
    from tokentop.policy.detectors import loop_finding
    from tokentop.pricing import PriceTable

    sid = "5e1f3c2a-7b6d-4e8f-9a0b-1c2d3e4f5a6b"
    cwd = "/home/dev/app"
    varied = [claude_lines.response(sid, cwd, 900, f"step {i}") for i in range(150)]
    stuck = [claude_lines.response(sid, cwd, 900, "pytest -x", error="1 failed") for _ in range(8)]
    path = tmp_path / "projects" / "-home-dev-app" / f"{sid}.jsonl"
    claude_lines.write_transcript(path, sid, cwd, varied + stuck)
    engine = Engine([ClaudeCodeSource([tmp_path])], PriceTable.default().cost, workers=1)
    engine.scan()
    [session] = engine.snapshot().sessions
    assert session.tool_calls == 158 and session.tool_errors == 8
    assert len(session.recent_tools) == 30
    assert all(len(t.input_hash) == 16 and len(t.output_hash) == 16 for t in session.recent_tools)
    assert {t.input_hash for t in session.recent_tools[-8:]} == {
        claude_code.short_hash(json.dumps({"command": "pytest -x"}).encode())
    }
    last = session.recent_tools[-1]
    finding = loop_finding(session, Config(), last.timestamp)
    assert finding is not None and "the same Bash call" in finding.reason


@pytest.mark.parametrize(
    "name",
    [
        "/h/.claude/projects/-w/s.jsonl",
        "/h/.claude/projects/s.jsonl",
        "/h/.claude/projects/-w/sub/agent-1.jsonl",
        "/h/.claude/projects/-w/.jsonl",
        "/h/.claude/projects/-w/s.json",
        "/h/.claude/projects/-w/s.jsonl.bak",
        "/h/.claude/projectsX/-w/s.jsonl",
        "/h/.claude/project/s.jsonl",
        "/h/.claude/projects",
        "/other/s.jsonl",
        "/h/.claude/projects/-w/x.y.jsonl",
    ],
)
def test_a_found_name_is_judged_as_its_path_is(name: str) -> None:
    """The walk's string check agrees with `is_transcript` on the Path, prefix edges too."""
    source = ClaudeCodeSource(config_dirs=[Path("/h/.claude")])
    assert source.is_transcript_name(name) == source.is_transcript(Path(name))
