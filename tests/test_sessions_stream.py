"""`sessions --json` written a few records at a time: the same bytes as the whole list
formatted at once, and its memo of a quiet history still printed back exactly."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tokentop.commands.sessions import RECORDS_PER_CHUNK, json_chunks
from tokentop.commands.sessions_memo import output_path, read_memo
from tokentop.render.text import json_for_terminal

WEIRD = "ünï \x1b]2;x\x07 \u202e \u2028 \x7f \x9b 😀"


def record(n: int) -> dict[str, Any]:
    return {
        "session_id": f"s-{n}",
        "cwd": WEIRD if n % 3 == 0 else "/w",
        "tokens": {"input": n, "output": 2 * n},
        "models": [] if n % 2 else [{"model": "m", "cost_usd": n / 7, "tags": []}],
        "files": [{"path": "/p", "last_error": None}],
        "budget": {} if n % 5 == 0 else None,
    }


@pytest.mark.parametrize("count", [0, 1, RECORDS_PER_CHUNK, RECORDS_PER_CHUNK + 1, 100])
def test_chunks_are_the_whole_list_formatted_at_once(count: int) -> None:
    records = [record(n) for n in range(count)]
    whole = json_for_terminal(msgspec.json.format(msgspec.json.encode(records), indent=1))
    streamed = b"".join(json_chunks(iter(records)))
    assert streamed == whole + b"\n"
    assert json.loads(streamed) == json.loads(json.dumps(records))
    assert b"\x1b" not in streamed and "\u202e".encode() not in streamed


def test_memo_of_the_old_format_is_computed_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A memo file written before the output was streamed (one msgpack object) is not
    mistaken for the new layout: the output is computed and the memo rewritten."""
    from tokentop.cli import main

    argv = small_history(tmp_path, monkeypatch, 5)
    assert main(argv) == 0
    first = capsys.readouterr().out
    [memo] = (tmp_path / "cache").glob("*.sessions")
    remembered = read_memo(memo)
    assert remembered is not None and remembered.out == first
    assert output_path(memo.with_suffix(".x")) == memo
    memo.write_bytes(msgspec.msgpack.encode({"cache_id": remembered.cache_id, "out": "[]\n"}))
    assert read_memo(memo) is None
    assert main(argv) == 0
    assert capsys.readouterr().out == first
    again = read_memo(memo)
    assert again is not None and again.out == first


def test_a_one_off_snapshot_leaves_out_only_calls_no_detector_reads(tmp_path: Path) -> None:
    """`sessions` takes its snapshot without the recent tool calls of sessions quiet for
    longer than the loop window: the looping live session is judged and printed exactly as
    from a full snapshot, and the engine's own snapshots keep every session's calls."""
    from claude_lines import response, write_transcript
    from tokentop.config import Config
    from tokentop.engine.engine import Engine
    from tokentop.policy.watchdog import Watchdog
    from tokentop.pricing import PriceTable
    from tokentop.render.records import sessions_list
    from tokentop.sources.claude_code import ClaudeCodeSource

    root = tmp_path / "c"
    gen = [sys.executable, str(Path(__file__).with_name("gen_claude_corpus.py")), str(root)]
    subprocess.run([*gen, "--sessions", "2", "--turns", "12"], check=True, capture_output=True)
    looping = [response("live-1", "/live", 1000, error="boom") for _ in range(8)]
    write_transcript(root / "projects" / "-live" / "live-1.jsonl", "live-1", "/live", looping)
    engine = Engine([ClaudeCodeSource(config_dirs=[root])], PriceTable.default().cost)
    engine.scan()
    config = Config()
    since = engine.clock.now() - config.policy.loop.window_s
    lean = engine.snapshot(calls_since=since)
    full = engine.snapshot()
    assert engine.last_snapshot is full
    calls = {s.key.session_id: len(s.recent_tools) for s in full.sessions}
    assert calls["live-1"] == 8 and len(calls) == 3 and min(calls.values()) > 0
    assert {s.key.session_id: len(s.recent_tools) for s in lean.sessions} == {
        sid: n if sid == "live-1" else 0 for sid, n in calls.items()
    }
    judged = [sessions_list(Watchdog(config).judge(snap)) for snap in (lean, full)]
    assert judged[0] == judged[1]
    assert [r["flags"] for r in judged[0] if r["session_id"] == "live-1"] != [""]
    again = engine.snapshot()  # the cache was left as the full snapshot made it
    assert {s.key.session_id: len(s.recent_tools) for s in again.sessions} == calls


def test_a_grown_file_written_last_is_found_before_the_cache_head_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The memo names the files written last: after one of them grew, `sessions --json`
    computes again without decoding the cache's list of files for the memo's sake."""
    from tokentop.cli import main
    from tokentop.engine import state_cache

    argv = small_history(tmp_path, monkeypatch, 6)
    assert main(argv) == 0
    first = capsys.readouterr().out
    [memo] = (tmp_path / "cache").glob("*.sessions")
    remembered = read_memo(memo)
    assert remembered is not None and len(remembered.newest) == 3
    newest = Path(remembered.newest[0][0])
    assert main(argv) == 0 and capsys.readouterr().out == first  # remembered
    with newest.open("ab") as fh:
        fh.write(newest.read_bytes().splitlines()[-1] + b"\n")  # a repeat: same totals
    heads: list[Path] = []
    real_head = state_cache.load_head
    monkeypatch.setattr(state_cache, "load_head", lambda p: heads.append(p) or real_head(p))
    assert main(argv) == 0
    again = capsys.readouterr().out
    assert again != first and json.loads(again) and heads == []
    grown = [f for s in json.loads(again) for f in s["files"] if f["path"] == str(newest)]
    assert grown[0]["bytes_read"] == newest.stat().st_size


def small_history(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int) -> list[str]:
    """A generated history of three sessions, and the `sessions --json` argv that reads it
    with a cache of its own."""
    gen = [sys.executable, str(Path(__file__).with_name("gen_claude_corpus.py"))]
    gen += [str(tmp_path / "c"), "--sessions", "3", "--turns", "10", "--seed", str(seed)]
    subprocess.run(gen, check=True, capture_output=True)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    argv = ["sessions", "--json", "--cache-dir", str(tmp_path / "cache")]
    return [*argv, "--claude-dir", str(tmp_path / "c")]
