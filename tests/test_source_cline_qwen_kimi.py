"""Cline, Qwen Code and Kimi Code sources: totals pinned on the shared samples, a Cline file
rewritten whole (and compacted), a Qwen uuid written twice, a Kimi usage in two records."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from source_helpers import by_id, engine_for
from tokentop.model import TokenCounts
from tokentop.sources.cline import ClineSource
from tokentop.sources.kimi import KimiSource
from tokentop.sources.qwen import QwenSource

FIXTURES = Path(__file__).parent / "fixtures"
CLINE = FIXTURES / "cline/samples"
FORK, PARENT = "1784094124598_rruoq", "1784094053271_p8pzo"
QWEN = FIXTURES / "qwen/samples"
KIMI = FIXTURES / "kimi/samples/kimi-code"
KIMI_SESSION = "session_1bcbe023-4f7e-4971-9dc9-43b8756045b0"


def test_cline_sample_totals() -> None:
    """The real CLI 3.x session is a fork (`<id>.json` names its parent and `forkedAt`):
    all 16 assistant messages predate the fork, so they are the parent's spending. Their
    metrics sum to 630254 input (AI SDK totals, cache included), 534435 cache reads, 4395
    out, $2.036022565 recorded: 630254 - 534435 = 95819 uncached input."""
    engine = engine_for(ClineSource([CLINE / "data"]))
    engine.scan()
    sessions = by_id(engine.snapshot())
    parent = sessions[PARENT]
    assert parent.tokens == TokenCounts(input=95819, output=4395, cache_read=534435)
    assert parent.cost_usd == pytest.approx(2.036022565)
    assert parent.responses == 16
    assert sessions[FORK].tokens.total == 0 and sessions[FORK].parent == PARENT
    assert sessions[FORK].cwd == "/Users/example/dev/cline"


def _session_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data/sessions" / FORK
    shutil.copytree(CLINE / "data/sessions" / FORK, folder)
    meta = json.loads((folder / f"{FORK}.json").read_text())
    del meta["metadata"]["fork"]  # read as a session of its own
    (folder / f"{FORK}.json").write_text(json.dumps(meta))
    return folder


def _rewrite(path: Path, doc: object) -> None:
    """Write the file whole again, as Cline does, with a new mtime."""
    path.write_text(json.dumps(doc))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 3_000_000_000))


def test_cline_file_rewritten_whole_replaces_never_adds(tmp_path: Path) -> None:
    """The messages file rewritten whole with one more response (1000 in incl. 900 cache
    reads, 10 out, $0.01): the total grows by exactly that response, not by the file again.
    Then Cline's compaction rewrites it without per-message metrics, their sum in
    `usageBefore` (the real `basic.compaction.json` of this session): still the same total."""
    folder = _session_dir(tmp_path)
    messages = folder / f"{FORK}.messages.json"
    engine = engine_for(ClineSource([tmp_path / "data"]))
    engine.scan()
    first = by_id(engine.snapshot())[FORK].tokens
    assert first == TokenCounts(input=95819, output=4395, cache_read=534435)
    doc = json.loads(messages.read_text())
    metrics = {"inputTokens": 1000, "outputTokens": 10, "cacheReadTokens": 900,
               "cacheWriteTokens": 0, "cost": 0.01}  # fmt: skip
    doc["messages"].append({"id": "msg_new", "role": "assistant", "ts": 1784094200000,
                            "modelInfo": {"id": "anthropic/claude-opus-4.8-fast"},
                            "metrics": metrics})  # fmt: skip
    _rewrite(messages, doc)
    engine.process([messages])
    grown = by_id(engine.snapshot())[FORK].tokens
    assert grown == first + TokenCounts(input=100, output=10, cache_read=900)
    _rewrite(messages, json.loads((CLINE / "sdk-fixtures/basic.compaction.json").read_text()))
    engine.process([messages])
    assert by_id(engine.snapshot())[FORK].tokens == grown
    cold = engine_for(ClineSource([tmp_path / "data"]))  # a cold scan of the compacted file
    cold.scan()
    assert by_id(cold.snapshot())[FORK].tokens == first  # usageBefore: the 16 folded away


def test_qwen_sample_totals_and_duplicate_uuid(tmp_path: Path) -> None:
    """splitrail's real recording: two assistant records, 500 prompt / 20 out and 600 prompt
    (50 of it cached) / 5 out -> 1050 uncached in, 50 cache read, 25 out; the ui_telemetry
    records repeat the same counts and are not read. Then the second assistant record is
    written again under its uuid (as the recorder re-writes a message): still 1125 in all."""
    chats = QWEN / "projects/-tmp-qwentest/chats"
    engine = engine_for(QwenSource([QWEN]))
    engine.scan()
    session = by_id(engine.snapshot())["69f0814a-8bfc-4c8e-93d3-05757f17b96f"]
    assert session.tokens == TokenCounts(input=1050, output=25, cache_read=50)
    assert session.responses == 2
    copy = tmp_path / "projects/p/chats"
    shutil.copytree(chats, copy)
    path = next(copy.glob("*.jsonl"))
    lines = path.read_bytes().splitlines(keepends=True)
    again = [line for line in lines if b'"type":"assistant"' in line][-1]
    path.write_bytes(b"".join([*lines, again]))
    twice = engine_for(QwenSource([tmp_path]))
    twice.scan()
    assert by_id(twice.snapshot())[session.key.session_id].tokens == session.tokens


def test_kimi_sample_totals_usage_in_two_records() -> None:
    """The real wire file writes each call's usage twice, in `step.end` and in its
    `usage.record` (usageScope turn): 22 calls counted once each, plus the one
    `usageScope: "session"` record of the compaction call (1411 in / 937 out / 40960 read),
    which has no `step.end` twin. Sums: 30174 in, 5515 out, 661504 cache read. The other
    session was only cancelled and retried: it counts nothing."""
    engine = engine_for(KimiSource([KIMI]))
    engine.scan()
    sessions = by_id(engine.snapshot())
    session = sessions[KIMI_SESSION]
    assert session.tokens == TokenCounts(input=30174, output=5515, cache_read=661504)
    assert session.responses == 22 + 1
    assert session.cwd == "/private/tmp/as-agent-lab/kimi/project"
    wire = KIMI / "sessions/wd_project_ac3bb318f98e" / KIMI_SESSION / "agents/main/wire.jsonl"
    step_ends = wire.read_bytes().count(b'"type": "step.end"') or wire.read_bytes().count(
        b'"type":"step.end"'
    )
    assert step_ends == 22  # each counted call also appears once more, not counted
    assert sessions["session_9eb1bf57-c1af-48a5-b658-0e8d9fe794f5"].tokens.total == 0
