"""Claude's 5-hour blocks agree with ccusage 20.0.24's `blocks --json` on the same history.

tests/fixtures/blocks/ccusage-20.0.24-blocks.json is real ccusage output, made once by
tests/fixtures/blocks/make_ccusage_blocks.py (its docstring says how) on the seeded corpus
of tests/blocks_corpus.py, which this test writes again: no npm and no network here. Every
block is compared field by field: start, end, last response, responses, the four token
counts, cost, models, gaps; for the active block also burn and projection (ccusage projects
from its own clock, kept in the fixture).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from blocks_corpus import write_corpus
from tokentop.cli import main
from tokentop.engine.engine import Engine
from tokentop.history.block_feed import blocks_since
from tokentop.history.blocks import BLOCK_S, Block, BlockEntry, chain_start, identify_blocks, iso_ms
from tokentop.history.windows import WindowWatch
from tokentop.model import TokenCounts
from tokentop.pricing import PriceTable
from tokentop.sources.claude_code import ClaudeCodeSource

FIXTURE = json.loads(
    (Path(__file__).parent / "fixtures" / "blocks" / "ccusage-20.0.24-blocks.json").read_text()
)
COST = PriceTable.default().cost


def engine_over(root: Path) -> Engine:
    engine = Engine([ClaudeCodeSource(config_dirs=[root])], COST, workers=1)
    engine.scan()
    return engine


def as_ccusage(b: Block) -> dict[str, Any]:
    """Our block in ccusage's JSON terms (the fields both compute)."""
    t = b.tokens
    return {
        "id": ("gap-" if b.gap else "") + iso_ms(b.start),
        "startTime": iso_ms(b.start),
        "endTime": iso_ms(b.end),
        "actualEndTime": iso_ms(b.last) if b.last is not None else None,
        "isActive": b.active,
        "isGap": b.gap,
        "entries": b.entries,
        "tokenCounts": {
            "inputTokens": t.input,
            "outputTokens": t.output,
            "cacheCreationInputTokens": t.cache_write,
            "cacheReadInputTokens": t.cache_read,
        },
        "totalTokens": t.total,
        "models": list(b.models),
    }


def same_block(mine: Block, theirs: dict[str, Any]) -> None:
    expected = {k: theirs[k] for k in as_ccusage(mine)}
    assert as_ccusage(mine) == expected
    assert mine.cost_usd == pytest.approx(theirs["costUSD"], rel=1e-12, abs=1e-12)


def test_every_block_of_the_history_equals_ccusage(tmp_path: Path) -> None:
    root = write_corpus(tmp_path / "history")
    blocks, bad = blocks_since(engine_over(root).snapshot(), -math.inf, 2e9, COST)
    theirs = FIXTURE["history"]
    assert bad == 0 and len(blocks) == len(theirs) == 9
    assert sum(b.gap for b in blocks) == 3
    for mine, block in zip(blocks, theirs, strict=True):
        same_block(mine, block)
    assert sum(b.entries for b in blocks) == 360  # every response of the corpus, once


def test_the_active_block_has_ccusages_burn_and_projection(tmp_path: Path) -> None:
    active = FIXTURE["active"]
    root = write_corpus(tmp_path / "active", active["shift_hours"])
    snapshot = engine_over(root).snapshot()
    projections = []
    for now in (active["now_before"], active["now_after"]):
        blocks, _ = blocks_since(snapshot, -math.inf, now, COST)
        for mine, block in zip(blocks, active["blocks"], strict=True):
            same_block(mine, block)
        current = blocks[-1]
        theirs = active["blocks"][-1]
        assert current.active and current.burn is not None and current.projection is not None
        rate = theirs["burnRate"]
        assert current.burn.tokens_per_min == pytest.approx(rate["tokensPerMinute"], rel=1e-12)
        assert current.burn.uncached_tokens_per_min == pytest.approx(
            rate["tokensPerMinuteForIndicator"], rel=1e-12
        )
        assert current.burn.usd_per_hour == pytest.approx(rate["costPerHour"], rel=1e-9)
        p = current.projection
        projections.append((p.tokens, p.cost_usd, p.minutes_left))
    p = active["blocks"][-1]["projection"]
    assert (p["totalTokens"], p["totalCost"], p["remainingMinutes"]) in projections


def test_reading_only_the_recent_sessions_finds_the_same_current_block(tmp_path: Path) -> None:
    """The app's header reads only the sessions since the last quiet stretch over 5 hours
    (chain_start); its current block equals the one computed over the whole history."""
    active = FIXTURE["active"]
    root = write_corpus(tmp_path / "active", active["shift_hours"])
    snapshot = engine_over(root).snapshot()
    now = active["now_before"]
    every, _ = blocks_since(snapshot, -math.inf, now, COST)
    recent, _ = blocks_since(snapshot, now - BLOCK_S, now, COST)
    assert recent == [b for b in every if b.end > now - BLOCK_S] and recent[-1].active
    watch = WindowWatch(COST, lambda: now)
    try:
        watch.take(snapshot)
        assert watch.ready.wait(10)
        assert watch.current().claude_block == every[-1]
    finally:
        watch.close()


def test_the_report_by_block_is_ccusages_blocks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = write_corpus(tmp_path / "history")
    argv = ["report", "--by", "block", "--claude-dir", str(root), "--db", str(tmp_path / "t.db")]
    assert main([*argv, "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    ids = [b["id"] for b in doc["blocks"]]
    assert ids == [b["id"] for b in FIXTURE["history"]]
    costs = [b["cost_usd"] for b in doc["blocks"]]
    assert costs == pytest.approx([b["costUSD"] for b in FIXTURE["history"]], rel=1e-12)
    assert main(argv) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[:4] == ["BLOCK", "STATE", "LENGTH", "RESPONSES"]
    assert sum(" gap " in line for line in table) == 3
    assert main([*argv, "--no-scan"]) == 2


def entry(minute: float, tokens: int = 100) -> BlockEntry:
    return BlockEntry(1_767_225_600.0 + minute * 60, TokenCounts(output=tokens), 0.01, "m")


def test_the_rule_at_its_edges() -> None:
    """A response exactly 5 h after the block's start stays in it (ccusage compares with >);
    one a millisecond later starts the next block, at its own hour."""
    start = 1_767_225_600.0  # 2026-01-01 00:00 UTC
    at_edge = [entry(10), entry(300)]
    assert [b.entries for b in identify_blocks(at_edge, start)] == [2]
    later = [entry(10), BlockEntry(start + 5 * 3600 + 0.001, TokenCounts(output=1), 0.0, "m")]
    blocks = identify_blocks(later, start)
    assert [b.entries for b in blocks] == [1, 1] and blocks[1].start == start + 5 * 3600
    gap = identify_blocks([entry(0), entry(0 + 5 * 60 + 1)], start + 86400)
    assert [b.gap for b in gap] == [False, True, False]
    assert chain_start([(0.0, 10.0), (15_000.0, 30_000.0), (40_000.0, 50_000.0)], 45_000) == 0.0
    assert chain_start([(0.0, 10.0), (30_000.0, 50_000.0)], 45_000) == 30_000.0


def test_the_headers_block_follows_a_new_response_and_holds_while_nothing_changes(
    tmp_path: Path,
) -> None:
    """The header's watch keeps its entries between ticks that read nothing new; a response
    appended to a session of the active block is counted at the next tick."""
    active = FIXTURE["active"]
    root = write_corpus(tmp_path / "active", active["shift_hours"])
    newest = max((root / "projects").rglob("*.jsonl"), key=last_response_at)
    watch = WindowWatch(COST, lambda: active["now_before"], every_s=0.01)

    def block_after(snapshot: Any) -> Block:
        watch.ready.clear()
        watch.take(snapshot)
        assert watch.ready.wait(10)
        block = watch.current().claude_block
        assert block is not None and watch.current().error == ""
        return block

    try:
        first = block_after(engine_over(root).snapshot())
        assert block_after(engine_over(root).snapshot()) == first
        record = json.loads(last_response(newest))
        record["message"]["id"] = "msg_appended_by_the_test"
        record["requestId"] = "req_appended_by_the_test"
        with newest.open("ab") as out:
            out.write(json.dumps(record).encode() + b"\n")
        grown = block_after(engine_over(root).snapshot())
    finally:
        watch.close()
    assert grown.entries == first.entries + 1
    assert grown.tokens.total > first.tokens.total


def last_response(path: Path) -> bytes:
    return next(
        line
        for line in reversed(path.read_bytes().splitlines())
        if b'"usage"' in line and b'"assistant"' in line
    )


def last_response_at(path: Path) -> str:
    return str(json.loads(last_response(path))["timestamp"])
