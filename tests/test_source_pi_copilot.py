"""Pi and Copilot CLI sources: totals pinned on the shared samples, a branch next to its
parent, and a Copilot shutdown replacing the live estimate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from source_helpers import by_id, engine_for
from tokentop.model import TokenCounts
from tokentop.sources.copilot import CopilotSource
from tokentop.sources.pi import PiSource

FIXTURES = Path(__file__).parent / "fixtures"
PI = FIXTURES / "pi/samples/agent"
PI_LARGE = "d703a1a9-1b7b-4fb1-b512-c9738b1fe617"
PI_SMALL = "019e19b4-eb48-746a-aa6b-8dfcfa37954b"
COPILOT = FIXTURES / "copilot/samples"


def test_pi_samples_totals() -> None:
    """pi-mono's own fixture: 26 assistant messages, of which the aborted gpt-5.1-codex one
    has all-zero usage (nothing sent, skipped); the other 25 (22 toolUse, 2 stop and the
    billed `error` one) sum to 98 in / 8022 out / 689031 cache read / 123171 cache write,
    and Pi's recorded `cost.total`s to $0.78922455. The small agent-sessions fixture: two
    responses of 12 in / 7 out each; their recorded cost 0 falls back to the price table."""
    engine = engine_for(PiSource([PI]))
    engine.scan()
    sessions = by_id(engine.snapshot())
    large = sessions[PI_LARGE]
    assert large.tokens == TokenCounts(
        input=98, output=8022, cache_read=689031, cache_write_5m=123171
    )
    assert large.responses == 22 + 2 + 1  # the `error` response was billed and counts
    assert large.cost_usd == pytest.approx(0.78922455)
    assert large.cwd == "/Users/badlogic/workspaces/pi-mono"
    assert sessions[PI_SMALL].tokens == TokenCounts(input=24, output=14)


def test_pi_branch_next_to_its_parent_counts_copies_once(tmp_path: Path) -> None:
    """A branch (as `createBranchedSession` writes it) copies the parent's entries before its
    own header time, then appends one new response (5 in / 7 out). Whichever file is read
    first, the copies count once, in the parent; the branch holds only its own response."""
    src = (
        PI
        / "sessions/--Users-badlogic-workspaces-pi-mono--"
        / f"2025-11-20T23-33-50-805Z_{PI_LARGE}.jsonl"
    )
    folder = tmp_path / "sessions/--p--"
    folder.mkdir(parents=True)
    parent = folder / src.name
    shutil.copy(src, parent)
    entries = src.read_bytes().splitlines()[1:]
    header = {"type": "session", "version": 3, "id": "branch-1",
              "timestamp": "2025-11-21T09:00:00.000Z", "cwd": "/w",
              "parentSession": str(parent)}  # fmt: skip
    own = {"type": "message", "timestamp": "2025-11-21T09:01:00.000Z", "message": {
        "role": "assistant", "model": "claude-sonnet-4-5", "timestamp": 1763715660000,
        "usage": {"input": 5, "output": 7, "cacheRead": 0, "cacheWrite": 0}}}  # fmt: skip
    branch = folder / "2025-11-21T09-00-00-000Z_branch-1.jsonl"
    lines = [json.dumps(header).encode(), *entries, json.dumps(own).encode()]
    branch.write_bytes(b"\n".join(lines) + b"\n")
    for first in (parent, branch):  # the cold scan reads newest first: try both orders
        engine = engine_for(PiSource([tmp_path]))
        engine.process([first, branch if first == parent else parent])
        sessions = by_id(engine.snapshot())
        assert sessions[PI_LARGE].tokens.total == 820322  # 98+8022+689031+123171
        assert sessions["branch-1"].tokens == TokenCounts(input=5, output=7)
        assert sessions["branch-1"].parent == PI_LARGE


def test_copilot_samples_totals() -> None:
    """drift: one shutdown, gpt-4.1 1000 input of which 800 cache reads, 50 output -> 200 in,
    800 cache read, 50 out, exact (its two messages carried no outputTokens, so their
    estimate is replaced). small: the older shutdown carries only `tokenDetails` (100 in,
    15 out, 5 cache read) for gpt-5-mini, exact; lines after it (resumed, trimmed) form a
    second leg still estimated: 0 output and, per response, the conversation so far / 4
    bytes: 90, 132 and 195 bytes -> 22 + 33 + 48 = 103 input.
    subdir_v1 has no shutdown: 12 + 14 output recorded; input estimated from 14 bytes of
    prompt (3) and then 65 bytes with the tool output and reply (16): 19, estimated."""
    engine = engine_for(CopilotSource([COPILOT]))
    engine.scan()
    sessions = by_id(engine.snapshot())
    drift = sessions["copilot_stage0_drift"]
    assert drift.tokens == TokenCounts(input=200, output=50, cache_read=800)
    assert not drift.estimated
    small = sessions["copilot_stage0_small"]
    assert small.tokens == TokenCounts(input=100 + 103, output=15, cache_read=5)
    assert small.estimated
    live = sessions["aaaabbbb-1111-2222-3333-ccccddddeeee"]
    assert live.tokens == TokenCounts(input=19, output=26)
    assert live.estimated and live.cwd == "/tmp/project"


def test_copilot_shutdown_replaces_the_live_estimate(tmp_path: Path) -> None:
    """Live, two responses count 40 + 60 recorded output and an estimated input (≈); the
    shutdown's exact totals (1000 in incl. 600 cache reads, 120 out incl. 20 reasoning)
    then replace the estimate, smaller or not, and the session is no longer estimated."""
    path = tmp_path / "session-state/s1/events.jsonl"
    path.parent.mkdir(parents=True)
    text = "x" * 4000  # 1000 tokens of conversation per the estimate

    def event(kind: str, **data: object) -> str:
        return json.dumps({"type": kind, "timestamp": "2026-01-01T00:00:00.000Z", "data": data})

    live = [event("session.start", sessionId="s1", context={"cwd": "/w"}),
            event("user.message", content=text),
            event("assistant.message", model="gpt-5", content="", outputTokens=40),
            event("assistant.message", model="gpt-5", content="", outputTokens=60)]  # fmt: skip
    path.write_text("\n".join(live) + "\n")
    engine = engine_for(CopilotSource([tmp_path]))
    engine.scan()
    before = by_id(engine.snapshot())["s1"]
    assert before.tokens == TokenCounts(input=2000, output=100) and before.estimated
    usage = {"inputTokens": 1000, "outputTokens": 120, "cacheReadTokens": 600,
             "cacheWriteTokens": 0, "reasoningTokens": 20}  # fmt: skip
    shutdown = event("session.shutdown", modelMetrics={"gpt-5": {"usage": usage}})
    with path.open("a") as fh:
        fh.write(shutdown + "\n")
    engine.process([path])
    after = by_id(engine.snapshot())["s1"]
    assert after.tokens == TokenCounts(input=400, output=100, cache_read=600, reasoning=20)
    assert not after.estimated
