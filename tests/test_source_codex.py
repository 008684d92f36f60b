"""Codex rollout adapter: sample totals, counter traps, bad input, split invariance.

Totals are summed with `dedupe_sum`, a tiny stand-in for the real ledger (written elsewhere):
it keeps each `dedupe_key` once, at its largest total (max-wins), and adds the survivors.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Iterable
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tokentop.model import (
    Event,
    SessionInfo,
    SessionKey,
    TokenCounts,
    ToolCall,
    ToolResult,
    UsageEvent,
)
from tokentop.sources import codex, codex_scan
from tokentop.sources.codex import CodexFileParser, CodexSource

FIXTURES = Path(__file__).parent / "fixtures" / "codex"
SAMPLES = (
    Path(__file__).parent / "fixtures" / "codex_samples"
)  # copies of ../shared/samples/codex (see its SOURCES.md)
RATE_LIMIT_SAMPLE = SAMPLES / "agent-sessions" / "codex_053_rate_limit.jsonl"
ROLLOUT_SAMPLE = (
    SAMPLES
    / "sessions/2025/12/18/rollout-2025-12-18T10-00-00-019b2ea4-aaaa-bbbb-cccc-58208e1f0000.jsonl"
)
CCUSAGE_SAMPLE = SAMPLES / "ccusage-fixture" / "sessions" / "project-alpha" / "session-alpha.jsonl"
NO_META = (
    FIXTURES
    / "sessions/2026/01/09/rollout-2026-01-09T10-00-00-0194b5c6-d7e8-7f90-a1b2-c3d4e5f60789.jsonl"
)
OLD_FORMAT = (
    FIXTURES
    / "sessions/2025/05/01/rollout-2025-05-01T10-00-00-0196a0b0-9999-7999-8999-999999999999.jsonl"
)
ALL_FILES = sorted(FIXTURES.rglob("*.jsonl")) + sorted(SAMPLES.rglob("*.jsonl"))
SCANS = (0, 10**9, codex_scan.HEAD_SCAN_MIN_LINE)
"""Line-selection thresholds: always line heads, always marker search, the default."""
JUNK = (
    b'{"id":"old-1","timestamp":"2025-05-01T10:00:00.000Z","instructions":null}\n'
    b"\n\x00\xff binary\n"
    b'{"timestamp":"2026-01-01T00:00:00Z","type":"event_msg","payload":{"type":"token_count"'
    + b"x"
    * 700
    + b'}}\n{"type": "response_item", "payload": {"type": "function_call", "call_id": "c"}}\n'
    b'{"timestamp":"2026-01-01T00:00:00Z","type":"response_item","payload":{"type":"message",'
    b'"role":"assistant","phase_call":"final"}}\n{"record_type":"state"}\n'
)
"""Old header, blank, binary, an over-long marked line, a spaced-out layout, a false marker."""


def parse(path: Path, data: bytes | None = None) -> tuple[CodexFileParser, list[Event]]:
    parser = CodexSource(homes=[path.parent]).new_parser(path)
    out: list[Event] = []
    parser.feed(path.read_bytes() if data is None else data, out)
    return parser, out


def usage(events: Iterable[Event]) -> list[UsageEvent]:
    return [e for e in events if isinstance(e, UsageEvent)]


def dedupe_sum(events: Iterable[Event]) -> TokenCounts:
    """Max-wins by dedupe key, then the sum: what the ledger would count."""
    best: dict[str, TokenCounts] = {}
    for event in usage(events):
        kept = best.get(event.dedupe_key)
        if kept is None or event.tokens.total > kept.total:
            best[event.dedupe_key] = event.tokens
    return sum(best.values(), TokenCounts())


def tc(input: int, cache_read: int, output: int, reasoning: int) -> TokenCounts:
    return TokenCounts(input=input, output=output, cache_read=cache_read, reasoning=reasoning)


# -- shared samples -------------------------------------------------------------------------


def test_rate_limit_sample_counts_its_one_call_with_fallback_model() -> None:
    # One token_count: input 12091 of which 10880 cached -> 1211 uncached; output 182 of which
    # 128 reasoning -> 54. The sum 12273 is the file's total_tokens (= input + output). The
    # `info: null`, `error` and `account/rateLimits/updated` lines carry no tokens. No
    # turn_context, so the model is ccusage's fallback "gpt-5".
    parser, events = parse(RATE_LIMIT_SAMPLE)
    assert dedupe_sum(events) == tc(1211, 10880, 54, 128)
    assert dedupe_sum(events).total == 12273
    assert [e.model for e in usage(events)] == ["gpt-5"]
    assert parser.session_id == "test-ratelimit-session"
    assert (parser.lines, parser.bad_lines) == (5, 0)


def test_rollout_sample_uses_turn_context_model() -> None:
    # Same single call as above, priced under the turn_context model gpt-5.2. The catalog's
    # `tool_call`/`tool_result` payloads are not shapes Codex writes (it writes
    # function_call/function_call_output), so they give no tool events.
    parser, events = parse(ROLLOUT_SAMPLE)
    assert dedupe_sum(events) == tc(1211, 10880, 54, 128)
    assert [e.model for e in usage(events)] == ["gpt-5.2"]
    assert not [e for e in events if isinstance(e, ToolCall | ToolResult)]
    assert parser.session_id == "019b2ea4-aaaa-bbbb-cccc-58208e1f0000"
    info = [e for e in events if isinstance(e, SessionInfo)]
    assert info[0].cwd == "/tmp/large"
    assert info[-1].model == "gpt-5.2"


def test_ccusage_sample_differences_totals_and_takes_info_model() -> None:
    # Call 1 (total == last): 1000 in / 250 cached / 125 out / 75 reasoning -> 750+250+50+75.
    # Call 2: totals 3500/750/425/275 minus 1000/250/125/75 = 2500/500/300/200, which is also
    # its last_token_usage -> 2000+500+100+200. Sum 3925. The fixture's total_tokens (1200,
    # 3000) add reasoning on top of output; real Codex files have total = input + output
    # (output includes reasoning, see the rate-limit sample), so tokentop does not trust them.
    parser, events = parse(CCUSAGE_SAMPLE)
    calls = usage(events)
    assert [e.tokens for e in calls] == [tc(750, 250, 50, 75), tc(2000, 500, 100, 200)]
    assert dedupe_sum(events).total == 3925
    assert [e.model for e in calls] == ["gpt-5.2-codex", "gpt-5.3-codex"]
    assert parser.session_id == "session-alpha"  # no session_meta, not a rollout-<uuid> name


# -- counter traps --------------------------------------------------------------------------


def test_reemitted_identical_token_counts_count_once() -> None:
    # Totals 1000/800/50/20 twice, then 2500/1800/170/60 three times. Only the two changes
    # count; together they are the final total: 700 uncached + 1800 cached + 110 + 60.
    parser, events = parse(FIXTURES / "reemit.jsonl")
    assert len(usage(events)) == 2
    assert dedupe_sum(events) == tc(700, 1800, 110, 60)
    assert parser.bad_lines == 0


def test_resume_in_the_same_file_continues_the_totals() -> None:
    # Day 1 ends at 1200/400/90/10; the resume re-writes the header and re-emits that total
    # (zero difference), then reaches 2000/1000/150/30. Sum = final total; the part after the
    # resume is priced under the new model.
    _, events = parse(FIXTURES / "resume.jsonl")
    assert dedupe_sum(events) == tc(1000, 1000, 120, 30)
    by_model: dict[str, TokenCounts] = {}
    for e in usage(events):
        by_model[e.model] = by_model.get(e.model, TokenCounts()) + e.tokens
    assert by_model == {
        "gpt-5.1-codex": tc(800, 400, 80, 10),
        "gpt-5.2-codex": tc(200, 600, 40, 20),
    }
    assert len({e.session for e in events}) == 1


def test_fork_replays_parent_totals_as_baseline() -> None:
    # The parent's header, turn, tool call and two token_counts are copied within 6 ms of the
    # fork's header: that is the replay (baseline 3000/2000/250/50). The child's turn start
    # re-emits the baseline; its own call reaches 4200/2900/330/70 -> 1200/900/80/20.
    _, events = parse(FIXTURES / "fork.jsonl")
    assert dedupe_sum(events) == tc(300, 900, 60, 20)
    assert [e.model for e in usage(events)] == ["gpt-5.2-codex"]
    assert [e.call_id for e in events if isinstance(e, ToolCall)] == ["call_c1"]
    assert [e.call_id for e in events if isinstance(e, ToolResult)] == ["call_c1"]
    info = [e for e in events if isinstance(e, SessionInfo)]
    assert {e.session.session_id for e in events} == {"33333333-3333-7333-8333-333333333333"}
    assert info[0].parent == "30303030-3030-7030-8030-303030303030"


def test_subagent_skips_replay_and_late_parent_rows() -> None:
    # thread_spawn source: the two token_counts in the first 4 ms are the parent's (baseline
    # 90000/75000/3000/800). At +1.5 s a lower parent row and then the baseline again arrive
    # (the parent's unfinished turn); neither counts. The child's call: 1500/1000/200/50.
    _, events = parse(FIXTURES / "subagent.jsonl")
    assert dedupe_sum(events) == tc(500, 1000, 150, 50)
    assert [e.model for e in usage(events)] == ["gpt-5.1-codex-mini"]
    info = [e for e in events if isinstance(e, SessionInfo)]
    assert info[0].parent == "40404040-4040-7040-8040-404040404040"


def test_compact_fork_takes_seeded_totals_as_baseline() -> None:
    # A fork that only references its parent replays nothing; its first turn re-emits the
    # parent's totals (4400/3500/260/90, last != total), which only set the baseline. The
    # child's call: 5000/4000/300/100 minus that = 600/500/40/10 -> 100 + 500 + 30 + 10.
    _, events = parse(FIXTURES / "compact_fork.jsonl")
    assert dedupe_sum(events) == tc(100, 500, 30, 10)


def test_a_copied_parent_header_starts_a_replay_even_without_fork_fields() -> None:
    own = b'{"timestamp":"2026-02-01T00:00:00.000Z","type":"session_meta","payload":{"id":"c"}}\n'
    parent = own.replace(b'"id":"c"', b'"id":"p"').replace(b"00.000Z", b"00.001Z")
    lines = own + parent + _token("00:00.002", 900, 900) + _token("00:09.000", 1000, 100)
    _, events = parse(Path("c.jsonl"), lines)
    assert dedupe_sum(events).total == 100


def test_backwards_total_falls_back_to_last_usage() -> None:
    # 1000/0/100 (1100), then +2000/1000/200 (2200). The total drops to 1200/200/50 with
    # last == total: a restart, counted as its last (1250). A re-emit, then +800/300/70 from
    # the new baseline (870). A last drop without last_token_usage counts nothing. 5420.
    _, events = parse(FIXTURES / "backwards.jsonl")
    assert [e.tokens.total for e in usage(events)] == [1100, 2200, 1250, 870]
    assert dedupe_sum(events).total == 5420
    keys = [e.dedupe_key for e in usage(events)]
    assert len(set(keys)) == len(keys)
    assert keys[2].endswith(":~1:1200/200/50/0/0")


def test_file_without_session_meta_uses_uuid_from_file_name() -> None:
    parser, events = parse(NO_META)
    assert parser.session_id == "0194b5c6-d7e8-7f90-a1b2-c3d4e5f60789"
    assert dedupe_sum(events) == tc(200, 600, 20, 10)
    assert usage(events)[0].cwd == "/work/nometa"


def test_old_format_without_envelope() -> None:
    # The bare first line names the session (not the file name); response items have no
    # envelope; `record_type: state` lines are skipped; a shell apply_patch changes files.
    parser, events = parse(OLD_FORMAT)
    assert parser.session_id == "0196a0b0-1111-7222-8333-444455556666"
    assert not usage(events)
    (call,) = [e for e in events if isinstance(e, ToolCall)]
    (result,) = [e for e in events if isinstance(e, ToolResult)]
    assert (call.name, call.call_id, call.file_changing) == ("shell", "call_old1", True)
    assert (result.call_id, result.is_error) == ("call_old1", False)
    assert (parser.lines, parser.bad_lines) == (6, 0)


def test_tool_calls_and_error_outcomes() -> None:
    _, events = parse(FIXTURES / "tools.jsonl")
    calls = {e.call_id: e for e in events if isinstance(e, ToolCall)}
    results = {e.call_id: e.is_error for e in events if isinstance(e, ToolResult)}
    assert results == {
        "call_t1": True,  # "Process exited with code 2"
        "call_t2": False,  # "Exit code: 0"
        "call_t3": True,  # metadata exit_code 1 wins over "Exit code: 0" inside the output
        "call_t4": True,  # {"success": false}
        "call_t5": False,  # "exit code: 1" in prose is neither header nor metadata
    }
    assert calls["call_t2"].name == "apply_patch" and calls["call_t2"].file_changing
    assert not calls["call_t1"].file_changing
    assert calls["call_t4"].input_hash == calls["call_t5"].input_hash  # same arguments
    assert calls["call_t1"].input_hash != calls["call_t4"].input_hash
    assert len(calls) == 5  # the call without call_id is dropped


# -- bad input ------------------------------------------------------------------------------


def test_malformed_lines_are_counted_and_good_totals_kept() -> None:
    # Bad: a truncated token_count, binary junk, plain text, a negative and a null count (5).
    # Ignored without complaint: an unknown record type and an agent message quoting
    # "token_count". The good totals end at 4000/3000/200/50.
    parser, events = parse(FIXTURES / "malformed.jsonl")
    assert (parser.lines, parser.bad_lines) == (11, 5)
    assert "null" in parser.last_error
    assert dedupe_sum(events) == tc(1000, 3000, 150, 50)


def test_overlong_lines_are_bad_and_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codex, "MAX_LINE_BYTES", 1000)
    good = (FIXTURES / "reemit.jsonl").read_bytes()
    big_token = _token("00:00.500", 10**6, 10**6).rstrip(b"\n") + b" " * 1000 + b"\n"
    big_text = b'{"type":"response_item","payload":{"text":"' + b"x" * 2000 + b'"}}\n'
    parser, events = parse(Path("r.jsonl"), big_token + good + big_text)
    assert parser.bad_lines == 2
    assert "over 1000 bytes" in parser.last_error
    assert dedupe_sum(events) == tc(700, 1800, 110, 60)


# -- keys, persistence, split invariance ------------------------------------------------------


def test_reread_and_archived_copy_give_the_same_keys(tmp_path: Path) -> None:
    home = tmp_path / "home"
    live = home / "sessions/2026/01/08" / "rollout-2026-01-08T11-00-00-fork.jsonl"
    archived = home / "archived_sessions" / live.name
    for path in (live, archived):
        path.parent.mkdir(parents=True)
        shutil.copy(FIXTURES / "fork.jsonl", path)
    source = CodexSource(homes=[home])
    streams = []
    for path in (live, live, archived):
        out: list[Event] = []
        source.new_parser(path).feed(path.read_bytes(), out)
        streams.append(out)
    assert [e.dedupe_key for e in usage(streams[0])] == [e.dedupe_key for e in usage(streams[2])]
    assert streams[0] == streams[1]
    assert dedupe_sum(e for s in streams for e in s) == dedupe_sum(streams[0])


def test_keys_differ_across_sessions_and_calls() -> None:
    keys = [e.dedupe_key for path in ALL_FILES for e in usage(parse(path)[1])]
    assert len(keys) == len(set(keys))


@settings(max_examples=80, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=len(ALL_FILES) - 1),
    cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=8),
    persist=st.booleans(),
    scan=st.sampled_from(SCANS),
)
def test_any_split_into_feeds_gives_identical_events(
    index: int, cuts: list[int], persist: bool, scan: int
) -> None:
    # The reference is one feed of the whole file with the default line selection; the
    # split feeds force one selection path (heads or markers) or leave it to line length.
    path = ALL_FILES[index]
    data = path.read_bytes()
    whole, expected = parse(path, data)
    lines = data.splitlines(keepends=True)
    bounds = sorted({min(c, len(lines)) for c in cuts} | {0, len(lines)})
    parser = CodexSource(homes=[path.parent]).new_parser(path)
    got: list[Event] = []
    default, codex_scan.HEAD_SCAN_MIN_LINE = codex_scan.HEAD_SCAN_MIN_LINE, scan
    try:
        for start, end in itertools.pairwise(bounds):
            parser.feed(b"".join(lines[start:end]), got)
            if persist:  # the cache stores the parser between reads
                parser = msgspec.json.decode(msgspec.json.encode(parser), type=CodexFileParser)
    finally:
        codex_scan.HEAD_SCAN_MIN_LINE = default
    assert got == expected
    assert (parser.lines, parser.bad_lines) == (whole.lines, whole.bad_lines)


@pytest.mark.parametrize("path", [*ALL_FILES, None], ids=lambda p: p.name if p else "junk")
def test_head_and_marker_selection_pick_the_same_lines(path: Path | None) -> None:
    data = path.read_bytes() if path else JUNK
    results = []
    for scan in (0, 10**9):  # every chunk by line heads / every chunk by marker search
        default, codex_scan.HEAD_SCAN_MIN_LINE = codex_scan.HEAD_SCAN_MIN_LINE, scan
        try:
            results.append(codex_scan.select_lines(data, True, 600))
        finally:
            codex_scan.HEAD_SCAN_MIN_LINE = default
    assert results[0] == results[1]
    if path is None:  # old header, spaced-out function_call; 2 junk lines; 1 over-long
        assert [line[:12] for line in results[0].needed] == [b'{"id":"old-1', b'{"type": "re']
        assert (results[0].lines, results[0].junk, results[0].overlong) == (7, 2, 1)


# -- source ---------------------------------------------------------------------------------


def test_source_roots_from_env_and_default(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    listed = CodexSource(env={"CODEX_HOME": f"{a}, {b}"})
    both = [a / "sessions", a / "archived_sessions", b / "sessions", b / "archived_sessions"]
    assert listed.roots() == both
    default = CodexSource(env={"HOME": str(tmp_path)})
    assert default.roots() == [tmp_path / ".codex/sessions", tmp_path / ".codex/archived_sessions"]
    assert default.is_transcript(tmp_path / ".codex/sessions/2026/01/01/rollout-x.jsonl")
    assert default.is_transcript(tmp_path / ".codex/archived_sessions/rollout-x.jsonl")
    assert not default.is_transcript(tmp_path / ".codex/sessions/notes.txt")
    assert not default.is_transcript(tmp_path / ".codex/history.jsonl")
    parser = default.new_parser(NO_META)
    assert parser.session_id == "0194b5c6-d7e8-7f90-a1b2-c3d4e5f60789"
    assert SessionKey("codex", parser.session_id) == SessionKey(CodexSource.name, parser.session_id)


def _token(clock: str, total_in: int, last_in: int) -> bytes:
    """A token_count at 2026-02-01T00:<clock>Z with input-only usage."""
    info = {
        "total_token_usage": {"input_tokens": total_in, "output_tokens": 0},
        "last_token_usage": {"input_tokens": last_in, "output_tokens": 0},
    }
    record = {
        "timestamp": f"2026-02-01T00:{clock}Z",
        "type": "event_msg",
        "payload": {"type": "token_count", "info": info},
    }
    return msgspec.json.encode(record) + b"\n"
