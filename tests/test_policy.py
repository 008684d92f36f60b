"""Detectors and decisions: tables with a fake clock, once-per-crossing, and silence on
normal sessions (the shared samples and the demo's steady agent, replayed line by line)."""

from __future__ import annotations

import contextlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from tokentop.clock import FakeClock
from tokentop.config import Budget, Config, parse_config
from tokentop.engine.engine import Engine
from tokentop.engine.ledger import Ledger
from tokentop.model import RecentTool, SessionKey, SessionSnapshot, TokenCounts
from tokentop.policy.detectors import (
    Decision,
    PolicyState,
    budget_finding,
    detect,
    evaluate,
    loop_finding,
    ping_pong,
    repeated_call,
    repeated_error,
)
from tokentop.pricing import PriceTable
from tokentop.quantities import spent_of
from tokentop.sources.base import Source
from tokentop.sources.claude_code import ClaudeCodeSource

FIXTURES = Path(__file__).parent / "fixtures"
CLOCK = FakeClock()
NOW = CLOCK.now()
KEY = SessionKey("claude", "s1")


def session(**changes: object) -> SessionSnapshot:
    """A quiet, healthy, live session; `changes` replace fields."""
    base = SessionSnapshot(
        key=KEY,
        cwd="/home/dev/shop",
        branch="main",
        first_ts=NOW - 600,
        last_ts=NOW - 5,
        tokens=TokenCounts(input=1_000, output=9_000, cache_read=90_000),
        cost_usd=0.5,
        unpriced_models=(),
        models=(),
        model_timeline=(),
        responses=20,
        tokens_per_min=10_000.0,
        usd_per_hour=1.0,
        burn_series=(),
        tool_calls=0,
        tool_errors=0,
        tools=(),
        recent_tools=(),
        files=(),
        bad_lines=0,
    )
    return msgspec.structs.replace(base, **changes)


def call(
    name: str, arg: str, ago: float = 10, error: bool | None = False, out: str = ""
) -> RecentTool:
    changing = name in ("Edit", "Write")
    return RecentTool(NOW - ago, name, arg, error, out, changing)


def calls(*spec: str, ago: float = 10) -> tuple[RecentTool, ...]:
    """'Bash:t' -> a Bash call with input hash 't'; 'Bash:t!e' -> failed with output 'e'."""
    made = []
    for item in spec:
        name, _, rest = item.partition(":")
        arg, _, err = rest.partition("!")
        made.append(call(name, arg, ago, bool(err), err))
    return tuple(made)


def config(text: str = "") -> Config:
    return parse_config(text, "test.toml")


def detectors(snapshot: SessionSnapshot, cfg: Config, now: float = NOW) -> list[str]:
    return [d.detector for d in detect(snapshot, cfg, now, PolicyState())]


# -- budget ---------------------------------------------------------------------------------

BUDGET_CASES = [
    # (config, cost, tokens total, expected (action, level) or None)
    ("[budgets]\nusd = 1\n", 0.5, 100, None),
    ("[budgets]\nusd = 1\n", 0.85, 100, ("warn", 1)),
    ("[budgets]\nusd = 1\n", 1.0, 100, ("warn", 2)),
    ("[budgets]\nusd = 1\n[policy.budget]\naction = 'kill'\n", 1.2, 100, ("kill", 2)),
    ("[budgets]\ntokens = 5000\n[policy.budget]\naction = 'pause'\n", 0.0, 5_001, ("pause", 2)),
    ("[budgets]\ntokens = 5000\n", 0.0, 4_000, ("warn", 1)),
    ("[budgets]\ntokens = 5000\n[alerts]\nwarn_pct = 90\n", 0.0, 4_000, None),
    ("[budgets]\nusd = 1\n[policy.budget]\naction = 'none'\n", 5.0, 100, None),
    ("", 500.0, 10**9, None),  # no budget at all
]


@pytest.mark.parametrize(("text", "cost", "total", "expected"), BUDGET_CASES)
def test_budget_table(text: str, cost: float, total: int, expected: tuple[str, int] | None) -> None:
    snap = session(cost_usd=cost, tokens=TokenCounts(output=total))
    found = [d for d in detect(snap, config(text), NOW) if d.detector == "budget"]
    assert [(d.action, d.level) for d in found] == ([expected] if expected else [])


def test_a_token_budget_counts_every_kind_unless_told_otherwise() -> None:
    tokens = TokenCounts(input=100, output=900, cache_read=4_000, cache_write_5m=500)
    snap = session(tokens=tokens)
    every = config("[budgets]\ntokens = 5000\n[policy.budget]\naction = 'kill'\n")
    narrow = config(
        "[budgets]\ntokens = 5000\n[policy.budget]\naction = 'kill'\n"
        "token_kinds = ['input', 'output']\n"
    )
    over = [d for d in detect(snap, every, NOW) if d.detector == "budget"]
    assert [(d.action, d.level) for d in over] == [("kill", 2)]
    assert "5,500 of 5,000 tokens" in over[0].reason
    assert [d for d in detect(snap, narrow, NOW) if d.detector == "budget"] == []


def test_project_budget_beats_the_default() -> None:
    cfg = config("[budgets]\nusd = 10\n[budgets.projects.shop]\nusd = 0.4\n")
    assert detectors(session(cost_usd=0.5), cfg) == ["budget"]
    roomy = config("[budgets]\nusd = 0.1\n[budgets.projects.shop]\nusd = 20\n")
    assert detectors(session(cost_usd=0.5), roomy) == []


# -- loop -----------------------------------------------------------------------------------

LOOP_CASES = [
    ("same call six times", calls(*["Bash:t"] * 6), "the same Bash call 6 times"),
    ("five is not enough", calls(*["Bash:t"] * 5), None),
    ("an edit between is progress", calls(*["Bash:t"] * 3, "Edit:a", *["Bash:t"] * 3), None),
    ("the same edit again and again", calls(*["Edit:a", "Read:x"] * 3, "Edit:a") * 1, None),
    ("same error five times", calls(*[f"Bash:{i}!boom" for i in range(5)]), "the same Bash error"),
    ("errors that differ", calls(*[f"Bash:{i}!boom{i}" for i in range(5)]), None),
    ("ping-pong", calls(*["Read:x", "Bash:t"] * 4), "Read and Bash alternating 4 times"),
    ("three cycles only", calls(*["Read:x", "Bash:t"] * 3), None),
    ("old calls fall out of the window", calls(*["Bash:t"] * 6, ago=601), None),
]


@pytest.mark.parametrize(("name", "recent", "reason"), LOOP_CASES, ids=[c[0] for c in LOOP_CASES])
def test_loop_table(name: str, recent: tuple[RecentTool, ...], reason: str | None) -> None:
    found = [d for d in detect(session(recent_tools=recent), Config(), NOW) if d.detector == "loop"]
    if reason is None:
        assert found == []
    else:
        assert len(found) == 1 and reason in found[0].reason and found[0].action == "warn"


def test_repeat_rules_directly() -> None:
    edits = calls(*["Edit:a", "Bash:t"] * 3)
    assert repeated_call(edits, 3) == (("Edit", "a"), 3)  # the same edit, redone, counts
    assert repeated_call(calls("Bash:t", "Bash:t", "Edit:b", "Bash:t"), 3) is None
    assert repeated_error(calls("Bash:a!e", "Read:b!e", "Bash:c!e"), 2) == (("Bash", "e"), 2)
    assert ping_pong(calls("Bash:t", "Bash:t", "Bash:t", "Bash:t"), 2) is None
    assert ping_pong(calls("A:1", "B:2", "A:1", "B:2"), 2) == (("A", "1"), ("B", "2"))


@pytest.mark.parametrize(
    ("recent", "ongoing"),
    [
        (calls(*["Bash:t"] * 6), True),
        (calls(*["Bash:t"] * 6, "Read:other"), False),  # the agent has moved on
        (calls(*[f"Bash:{i}!boom" for i in range(5)]), True),
        (calls(*[f"Bash:{i}!boom" for i in range(5)], "Read:x!"), False),
        ((*calls(*[f"Bash:{i}!boom" for i in range(5)]), call("Bash", "9", error=None)), True),
        (calls(*["Read:x", "Bash:t"] * 4), True),
    ],
)
def test_an_ongoing_loop_is_one_the_newest_call_continues(
    recent: tuple[RecentTool, ...], ongoing: bool
) -> None:
    snap = session(recent_tools=recent)
    assert loop_finding(snap, Config(), NOW) is not None
    assert (loop_finding(snap, Config(), NOW, ongoing=True) is not None) is ongoing


def test_loop_rules_can_be_turned_off() -> None:
    cfg = config("[policy.loop]\nrepeats = 0\nerror_repeats = 0\n")
    assert detectors(session(recent_tools=calls(*["Bash:t!e"] * 10)), cfg) == []


# -- drift, runaway, stall ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("responses", "tokens", "fires"),
    [(79, 0, False), (80, 0, True), (5, 10_000_000, True), (5, 9_999_999, False)],
)
def test_drift_table(responses: int, tokens: int, fires: bool) -> None:
    snap = session(responses_since_change=responses, tokens_since_change=tokens)
    assert ("drift" in detectors(snap, Config())) is fires


def test_runaway_needs_the_rate_to_stay_high_for_the_configured_minutes() -> None:
    clock, state, cfg = FakeClock(), PolicyState(), config("[policy.runaway]\nminutes = 2\n")
    hot = {"tokens_per_min": 3_000_000.0}
    out: list[list[Decision]] = []
    for rate_changes, step in [(hot, 0), (hot, 60), (hot, 61), ({}, 10), (hot, 10), (hot, 119)]:
        clock.advance(step)
        snap = session(last_ts=clock.now() - 1, **rate_changes)
        out.append(evaluate(snap, cfg, clock.now(), state))
    assert [[d.detector for d in ds] for ds in out] == [[], [], ["runaway"], [], [], []]
    assert "3.0M tokens/min for 2 min" in out[2][0].reason


def test_stall_is_informational_and_needs_a_live_process() -> None:
    state, quiet = PolicyState(), session(last_ts=NOW - 16 * 60)
    assert evaluate(quiet, Config(), NOW, state, process_alive=None) == []
    assert evaluate(quiet, Config(), NOW, state, process_alive=False) == []
    found = evaluate(quiet, Config(), NOW, state, process_alive=True)
    assert [(d.detector, d.action) for d in found] == [("stall", "warn")]
    assert evaluate(quiet, Config(), NOW + 60, state, process_alive=True) == []
    fresh = session(last_ts=NOW - 60)
    assert evaluate(fresh, Config(), NOW, state, process_alive=True) == []


# -- once per crossing ----------------------------------------------------------------------


def test_each_decision_is_emitted_once_per_crossing() -> None:
    clock, state = FakeClock(), PolicyState()
    cfg = config("[budgets]\nusd = 1\n[policy.budget]\naction = 'kill'\n")

    def at(cost: float, quiet: float = 1.0) -> list[tuple[str, str, int]]:
        clock.advance(1)
        snap = session(cost_usd=cost, last_ts=clock.now() - quiet)
        return [(d.detector, d.action, d.level) for d in evaluate(snap, cfg, clock.now(), state)]

    assert at(0.5) == []
    assert at(0.85) == [("budget", "warn", 1)]
    assert at(0.9) == []  # still warned: no repeat
    assert at(1.05) == [("budget", "kill", 2)]
    assert at(1.1) == [] and at(1.2) == []
    assert at(1.3, quiet=3 * 3600) == []  # gone quiet: forgotten, not judged
    assert at(1.3) == [("budget", "kill", 2)]  # active again: the crossing fires again


def test_loop_fires_once_while_it_lasts_and_again_after_it_clears() -> None:
    state, cfg = PolicyState(), Config()
    looping = session(recent_tools=calls(*["Bash:t"] * 6))
    assert [d.detector for d in evaluate(looping, cfg, NOW, state)] == ["loop"]
    assert evaluate(looping, cfg, NOW + 1, state) == []
    fixed = session(recent_tools=(*calls(*["Bash:t"] * 6), call("Edit", "fix", 1)))
    assert evaluate(fixed, cfg, NOW + 2, state) == []
    again = session(recent_tools=(*fixed.recent_tools, *calls(*["Bash:t"] * 6, ago=0)))
    assert [d.detector for d in evaluate(again, cfg, NOW + 3, state)] == ["loop"]


# -- defaults stay silent on normal sessions -------------------------------------------------


def replay_decisions(source: Source, paths: list[Path]) -> Iterator[Decision]:
    """Feed each file line by line and evaluate every session after every line, at the
    line's own time, as a live guard would have seen it."""
    ledger, state, cfg = Ledger(PriceTable.default().cost), PolicyState(), Config()
    for path in paths:
        parser = source.new_parser(path)
        for line in path.read_bytes().splitlines(keepends=True):
            events: list = []
            parser.feed(line, events)
            ledger.apply(events, str(path))
            now = max((getattr(e, "timestamp", 0.0) for e in events), default=0.0)
            if now <= 0:
                continue
            for snap in ledger.snapshot(now + 1).sessions:
                yield from evaluate(snap, cfg, now + 1, state)


def fixture_files(folder: str) -> list[Path]:
    root = FIXTURES / folder
    if not root.is_dir():
        pytest.skip(f"no fixtures in {root}")
    return sorted(root.rglob("*.jsonl"))


def test_defaults_are_silent_on_the_claude_samples() -> None:
    paths = fixture_files("claude")
    assert len(paths) >= 5
    assert list(replay_decisions(ClaudeCodeSource(config_dirs=[]), paths)) == []


def test_defaults_are_silent_on_the_codex_samples() -> None:
    codex = pytest.importorskip("tokentop.sources.codex")
    paths = fixture_files("codex") + fixture_files("codex_samples")
    assert list(replay_decisions(codex.CodexSource(homes=[]), paths)) == []


def test_defaults_are_silent_on_every_session_the_engine_finds_in_the_samples() -> None:
    """The engine over the fixture copies of the shared samples, each session judged as if it
    had just been written to (with a live process, so stall is asked too)."""
    claude_dirs = [FIXTURES / "claude", FIXTURES / "claude" / "ccusage-fixture"]
    sources: list[Source] = [ClaudeCodeSource(config_dirs=claude_dirs)]
    with contextlib.suppress(ImportError):
        from tokentop.sources.codex import CodexSource

        sources.append(CodexSource(homes=[FIXTURES / "codex", FIXTURES / "codex_samples"]))
    engine = Engine(sources, PriceTable.default().cost, workers=1)
    engine.scan()
    sessions = engine.snapshot().sessions
    assert len({s.key for s in sessions if s.key.agent == "claude"}) >= 3
    for snap in sessions:
        for now in (snap.last_ts + 1, snap.last_ts + 3600):
            assert (
                evaluate(snap, Config(), now, PolicyState(), process_alive=now < snap.last_ts + 60)
                == []
            )


def demo_transcript(tmp_path: Path, behavior: str, turns: int) -> Path:
    argv = [
        sys.executable, "-m", "tokentop.demo.agent", "--kind", "claude", "--behavior", behavior,
        "--root", str(tmp_path), "--cwd", "/home/dev/shop", "--interval", "0",
        "--max-turns", str(turns), "--print-path",
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return Path(done.stdout.strip())


def test_defaults_are_silent_on_a_steady_agent_and_catch_a_looping_one(tmp_path: Path) -> None:
    source = ClaudeCodeSource(config_dirs=[])
    steady = demo_transcript(tmp_path / "steady", "steady", 90)
    assert list(replay_decisions(source, [steady])) == []
    looping = demo_transcript(tmp_path / "loop", "loop", 12)
    found = list(replay_decisions(source, [looping]))
    assert [(d.detector, d.action) for d in found] == [("loop", "warn")]
    assert "the same Bash error 5 times" in found[0].reason  # the 5th result precedes a 6th call


def test_a_small_budget_reads_spend_and_budget_apart() -> None:
    """A $0.052 spend of a $0.05 budget read "$0.05 of $0.05 (104%)"."""
    finding = budget_finding(session(cost_usd=0.052), Config(), Budget(usd=0.05))
    assert finding is not None
    assert finding.reason == "over budget: $0.052 of $0.050 (104%)"
    assert spent_of(0.50001, 0.5) == "$0.5000 of $0.5000"  # four places at most
    assert spent_of(0.4, 0.5) == "$0.40 of $0.50"
    assert spent_of(0.05, 0.05) == "$0.05 of $0.05"  # equal: nothing to tell apart
    assert spent_of(1234.4, 1234.0) == "$1,234 of $1,234"  # whole dollars from $1,000
    assert spent_of(0.0504, 0.05, complete=False) == "≥$0.0504 of $0.0500"
