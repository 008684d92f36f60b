"""Session summaries: active time, timeline shares, when to record, and the consumer estimate."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from tokentop.clock import FakeClock
from tokentop.config import Budget, Budgets, Config, History
from tokentop.history.context_use import Calibration, top_consumers
from tokentop.history.store import Store
from tokentop.history.summary import (
    MAX_RECORDS_PER_OBSERVE,
    SummaryRecorder,
    active_seconds,
    build_summary,
    end_reason,
    file_changes,
    timeline_shares,
)
from tokentop.model import (
    LedgerSnapshot,
    ModelUsage,
    SessionKey,
    SessionSnapshot,
    TokenCounts,
    ToolStat,
)
from tokentop.tokens import HeuristicTokenizer

T0 = 1_763_640_000.0  # a minute boundary
CFG = Config(history=History(idle_end_s=600, active_gap_s=300))


def snap(sid: str = "s1", **kw: object) -> SessionSnapshot:
    base = SessionSnapshot(
        key=SessionKey("claude", sid),
        cwd="",
        branch="",
        first_ts=T0,
        last_ts=T0 + 1200,
        tokens=TokenCounts(1000, 500, 8000, 500),
        cost_usd=2.0,
        unpriced_models=(),
        models=(
            ModelUsage("opus", TokenCounts(600, 300, 5000, 100), 1.5, 3),
            ModelUsage("sonnet", TokenCounts(400, 200, 3000, 400), 0.5, 5),
        ),
        model_timeline=((T0, "opus"), (T0 + 300, "sonnet")),
        responses=8,
        tokens_per_min=0.0,
        usd_per_hour=0.0,
        burn_series=(),
        tool_calls=3,
        tool_errors=1,
        tools=(ToolStat("Read", 2, 0), ToolStat("Bash", 1, 1)),
        recent_tools=(),
        files=(),
        bad_lines=0,
    )
    return msgspec.structs.replace(base, **kw)


def test_active_time_counts_short_gaps_only() -> None:
    assert active_seconds([], 300) == 0
    assert active_seconds([5, 6, 7], 300) == 180
    assert active_seconds([0, 3], 300) == 60 + 60 + 120  # a 2-minute pause is work
    assert active_seconds([0, 10], 300) == 120  # a 9-minute pause is not


def test_timeline_share_by_time_then_by_responses() -> None:
    assert timeline_shares(snap()) == {"opus": 0.25, "sonnet": 0.75}
    instant = snap(last_ts=T0, model_timeline=((T0, "opus"),))
    assert timeline_shares(instant) == {"opus": 3 / 8, "sonnet": 5 / 8}


def test_end_reason_is_a_function_of_snapshot_clock_and_config() -> None:
    h = CFG.history
    s = snap()
    assert end_reason(s, s.last_ts + 599, h) is None
    assert end_reason(s, s.last_ts + 600, h) == "idle"
    assert end_reason(s, s.last_ts + 1, h, process_alive=False) == "exited"
    assert end_reason(s, s.last_ts + 1, h, process_alive=True) is None


def test_build_summary_from_minutes_and_budget() -> None:
    minutes = {int(T0 // 60) + m: (t, 0.0) for m, t in ((0, 4000.0), (1, 2000.0), (15, 4000.0))}
    config = msgspec.structs.replace(CFG, budgets=Budgets(usd=8.0))
    s = build_summary(snap(), now=T0 + 2000, reason="idle", config=config, minutes=minutes)
    assert s.active_s == 180  # minutes 0-1, then a 13-minute pause, then minute 15
    assert s.peak_tokens_per_min == 4000
    assert s.mean_tokens_per_min == pytest.approx(10000 / 3)
    assert (s.budget_usd, s.budget_used_pct) == (8.0, 25.0)
    assert [(m.model, m.timeline_share) for m in s.models] == [("opus", 0.25), ("sonnet", 0.75)]
    live_budget = build_summary(
        snap(), now=T0, reason="open", config=config, budget=Budget(tokens=20000)
    )
    assert (live_budget.budget_usd, live_budget.budget_used_pct) == (None, 50.0)


def test_without_minutes_active_time_is_the_span() -> None:
    s = build_summary(snap(), now=T0 + 99999, reason="idle", config=CFG)
    assert s.active_s == 1200


def test_file_changes_from_tools() -> None:
    assert not file_changes(snap())
    assert file_changes(snap(tools=(ToolStat("Edit", 1, 0),)))
    assert not file_changes(snap(tools=(ToolStat("Write", 1, 1),)))  # denied: nothing written
    assert file_changes(snap(tools=(ToolStat("Write", 2, 1),)))


def test_a_denied_write_is_not_a_file_change(tmp_path: Path) -> None:
    """The shared sample 1af7fc5e: its only Write was denied (is_error: true), so its summary
    says no files were changed and it is not labelled pending."""
    from tokentop.engine.engine import Engine
    from tokentop.history.git_output import assess
    from tokentop.pricing import PriceTable
    from tokentop.render.markdown import summary_markdown
    from tokentop.sources.claude_code import ClaudeCodeSource

    fixtures = Path(__file__).parent / "fixtures"
    engine = Engine([ClaudeCodeSource([fixtures / "claude"])], PriceTable.default().cost)
    engine.scan()
    (sample,) = [s for s in engine.snapshot().sessions if s.key.session_id.startswith("1af7fc5e")]
    assert {t.name: (t.calls, t.errors) for t in sample.tools}["Write"] == (1, 1)
    assert not file_changes(sample)
    cfg = History()
    git = assess(
        str(tmp_path), sample.first_ts, sample.last_ts, sample.cost_usd, file_changes(sample), cfg
    )
    summary = build_summary(sample, now=sample.last_ts + 99999, reason="idle", config=CFG, git=git)
    assert summary.label == "theater"  # spent, changed nothing, committed nothing
    assert "files were changed" not in summary_markdown(summary)


def test_recorder_records_ended_sessions_once_and_again_when_changed(tmp_path: Path) -> None:
    clock = FakeClock(T0 + 1300)
    store = Store(tmp_path / "t.db")
    rec = SummaryRecorder(store, CFG, clock, use_git=False)
    quiet, busy = snap("quiet"), snap("busy", last_ts=T0 + 1290)
    ledger = LedgerSnapshot(clock.now(), (quiet, busy), (), 0, 1)
    assert rec.observe(ledger) == []  # quiet for 100 s: not over yet
    clock.advance(500)
    assert [s.session_id for s in rec.observe(ledger)] == ["quiet"]
    assert rec.observe(ledger) == []  # unchanged: not recorded again
    assert [s.end_reason for s in rec.observe(ledger, {busy.key: False})] == ["exited"]
    grown = msgspec.structs.replace(quiet, responses=9, cost_usd=3.0)
    rec.observe(LedgerSnapshot(clock.now(), (grown,), (), 0, 2))
    assert {s.session_id: s.cost_usd for s in store.summaries()[0]} == {"quiet": 3.0, "busy": 2.0}
    # A new recorder (a restart) knows what the store already holds.
    again = SummaryRecorder(store, CFG, clock, use_git=False)
    assert again.observe(LedgerSnapshot(clock.now(), (grown, busy), (), 0, 3)) == []


def test_recorder_bounds_work_per_call(tmp_path: Path) -> None:
    clock = FakeClock(T0 + 99999)
    rec = SummaryRecorder(Store(tmp_path / "t.db"), CFG, clock, use_git=False)
    many = tuple(snap(f"s{i}") for i in range(MAX_RECORDS_PER_OBSERVE + 3))
    ledger = LedgerSnapshot(clock.now(), many, (), 0, 1)
    assert len(rec.observe(ledger)) == MAX_RECORDS_PER_OBSERVE
    assert len(rec.observe(ledger)) == 3


def claude_transcript(path: Path, big: str) -> None:
    def line(kind: str, content: list[dict[str, object]]) -> str:
        role = "assistant" if kind == "assistant" else "user"
        return json.dumps({"type": kind, "message": {"role": role, "content": content}})

    lines = [
        line("assistant", [{"type": "tool_use", "id": "t1", "name": "Read",
                            "input": {"file_path": "/p/big.py"}}]),
        line("user", [{"type": "tool_result", "tool_use_id": "t1", "content": big}]),
        line("assistant", [{"type": "tool_use", "id": "t2", "name": "Bash",
                            "input": {"command": "ls"}}]),
        line("user", [{"type": "tool_result", "tool_use_id": "t2",
                       "content": [{"type": "text", "text": "a.py b.py"}]}]),
        "{not json at all \"tool_result\"",
    ]  # fmt: skip
    path.write_text("\n".join(lines) + "\n")


def codex_transcript(path: Path) -> None:
    args = json.dumps({"command": ["bash", "-lc", "rg -n parse src"]})
    patch = "*** Begin Patch\n*** Update File: src/app.py\n@@\n-x\n+y\n*** End Patch"
    items = [
        {"type": "function_call", "name": "shell", "arguments": args, "call_id": "c1"},
        {"type": "function_call_output", "call_id": "c1", "output": "src/a.py:1: parse " * 50},
        {"type": "custom_tool_call", "name": "apply_patch", "input": patch, "call_id": "c2"},
        {"type": "custom_tool_call_output", "call_id": "c2", "output": "Success."},
    ]
    records = [{"timestamp": "x", "type": "response_item", "payload": p} for p in items]
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")


def test_top_consumers_estimate_tools_and_files(tmp_path: Path) -> None:
    tok = HeuristicTokenizer()
    big = "def parse(value):\n    return value\n" * 200
    claude_transcript(tmp_path / "c.jsonl", big)
    codex_transcript(tmp_path / "x.jsonl")
    found = top_consumers([str(tmp_path / "c.jsonl"), str(tmp_path / "x.jsonl")], tok, top=3)
    assert [t.name for t in found.tools] == ["Read", "shell (rg)", "Bash"]
    assert found.tools[0].tokens == tok.count(big)
    assert [(f.name, f.calls) for f in found.files] == [("/p/big.py", 1), ("src/app.py", 1)]
    assert (found.estimate, found.partial, found.tokenizer) == (True, False, "heuristic")


def test_top_consumers_stop_at_the_byte_budget(tmp_path: Path) -> None:
    claude_transcript(tmp_path / "c.jsonl", "x " * 5000)
    found = top_consumers([str(tmp_path / "c.jsonl"), str(tmp_path / "gone.jsonl")],
                          HeuristicTokenizer(), max_bytes=200)  # fmt: skip
    assert found.partial and found.bytes_scanned <= 200
    missing = top_consumers([str(tmp_path / "gone.jsonl")], HeuristicTokenizer())
    assert missing.partial and missing.tools == ()


class CountingTokenizer:
    """The heuristic tokenizer, counting the characters it is asked to tokenize."""

    name = "counting"
    exact = False

    def __init__(self) -> None:
        self.chars = 0
        self._inner = HeuristicTokenizer()

    def count(self, text: str) -> int:
        self.chars += len(text)
        return self._inner.count(text)


def test_only_a_sample_of_results_is_tokenized_the_rest_counts_bytes(tmp_path: Path) -> None:
    """After the calibration's sample, a result is its JSON bytes at the measured tokens per
    byte: tokenizing every result was most of a first report's time."""
    text = "def parse(value):\n    return value\n" * 100
    for name in ("a", "b", "c"):
        claude_transcript(tmp_path / f"{name}.jsonl", text)
    tokenizer = CountingTokenizer()
    calibration = Calibration(tokenizer, sample_bytes=len(text))
    first = top_consumers([str(tmp_path / "a.jsonl")], calibration, top=3)
    sampled = tokenizer.chars
    later = top_consumers([str(tmp_path / "b.jsonl"), str(tmp_path / "c.jsonl")], calibration)
    assert tokenizer.chars == sampled  # nothing more was tokenized
    read = first.tools[0]
    assert read.name == "Read" and read.tokens == HeuristicTokenizer().count(text)
    per_file = later.tools[0].tokens / 2
    assert later.tools[0].calls == 2 and abs(per_file - read.tokens) <= 0.02 * read.tokens
