"""Hostile state: damaged caches, files rewritten in place, names that are not UTF-8, counts
above int64 in SQLite, and the live engine thread fed all of it. Real files throughout."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path
from typing import Any

import msgspec
import pytest

from hostile_fs import (
    claude_engine,
    claude_line,
    fifo,
    health,
    unescape,
    wait_for,
    write_session,
)
from hostile_helpers import totals
from tokentop.engine import state_cache as cache_mod
from tokentop.engine.engine import Engine
from tokentop.model import TokenCounts
from tokentop.policy.watchdog import judge_once
from tokentop.pricing import PriceTable
from tokentop.render import records as output
from tokentop.sources.claude_code import ClaudeCodeSource
from tokentop.sources.opencode import OpencodeSource


@pytest.mark.parametrize("damage", ["truncate-dedupe", "zero-dedupe", "truncate-main", "junk-main"])
def test_damaged_cache_means_one_cold_scan(tmp_path: Path, damage: str) -> None:
    projects = tmp_path / "projects"
    want = write_session(projects / "p" / "a.jsonl", "a", [3, 4])
    want += write_session(projects / "p" / "b.jsonl", "b", [10])
    cache_dir = tmp_path / "cache"
    first = claude_engine(projects, cache_dir)
    first.scan()
    first.save_cache()
    assert first.cache_path is not None
    main, side = first.cache_path, cache_mod.dedupe_path(first.cache_path)
    if damage == "truncate-dedupe":
        side.write_bytes(side.read_bytes()[: side.stat().st_size // 2])
    elif damage == "zero-dedupe":
        side.write_bytes(side.read_bytes().split(b"\n")[0] + b"\n" + b"\0" * 64)
    elif damage == "truncate-main":
        main.write_bytes(main.read_bytes()[:-7])
    else:
        main.write_bytes(b"\x93\xff" + os.urandom(64))
    second = claude_engine(projects, cache_dir)
    second.load_cache()
    assert second.cache_note.startswith("cache ignored"), second.cache_note
    second.scan()
    assert second.bytes_read > 0  # cold
    assert totals(second.snapshot()) == want
    second.save_cache()
    third = claude_engine(projects, cache_dir)
    third.load_cache()
    assert third.cache_note == ""  # the warning came once: the next run is warm again
    third.scan()
    assert third.bytes_read == 0
    assert totals(third.snapshot()) == want


def test_same_size_rewrite_between_runs_is_noticed(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    path = projects / "p" / "s.jsonl"
    write_session(path, "s", [111, 222])
    cache_dir = tmp_path / "cache"
    first = claude_engine(projects, cache_dir)
    first.scan()
    first.save_cache()
    size = path.stat().st_size
    new = write_session(path, "s", [333, 444])  # other counts, same width: same size
    assert path.stat().st_size == size
    second = claude_engine(projects, cache_dir)
    second.load_cache()
    assert "rewritten in place" in second.cache_note
    second.scan()
    assert totals(second.snapshot()) == new
    with path.open("ab") as fh:
        fh.write(claude_line("s", "s-m9", 5))
    second.process([str(path)])
    assert totals(second.snapshot()) == new + TokenCounts(input=1, output=5)
    cold = claude_engine(projects)
    cold.scan()
    assert totals(cold.snapshot()) == totals(second.snapshot())


def test_same_size_rewrite_while_running_is_reread(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    path = projects / "p" / "s.jsonl"
    write_session(path, "s", [111])
    cache_dir = tmp_path / "cache"
    engine = claude_engine(projects, cache_dir)
    engine.scan()
    os.utime(path, ns=(1, 1))  # an old mtime, so the rewrite's is certainly another
    engine.process([str(path)])
    path.write_bytes(claude_line("t", "t-m0", 999))
    engine.process([str(path)])
    keys = {s.key.session_id for s in engine.snapshot().sessions}
    assert "t" in keys  # re-read from 0, not skipped as "nothing new"
    engine.save_cache()
    restart = claude_engine(projects, cache_dir)
    restart.load_cache()
    assert "rewritten in place" in restart.cache_note
    restart.scan()
    assert totals(restart.snapshot()) == TokenCounts(input=1, output=999)


def test_names_that_are_not_utf8_survive_json_and_the_cache(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    folder = projects / os.fsdecode(b"proj-\xff\\x")
    path = folder / os.fsdecode(b"sess-\xfe.jsonl")
    folder.mkdir(parents=True)
    lines = claude_line("", "m1", 5) + claude_line("", "m2", 6)  # no sessionId: the name is
    path.write_bytes(lines.replace(b'"sessionId": "", ', b""))
    cache_dir = tmp_path / "cache"
    engine = claude_engine(projects, cache_dir)
    engine.scan()
    engine.save_cache()
    snap = engine.snapshot()
    doc = json.loads(msgspec.json.encode(output.sessions_list(judge_once(snap))))
    [session] = doc
    assert session["session_id"] == "sess-\\xfe"
    assert session["files"][0]["path"].endswith("proj-\\xff\\\\x/sess-\\xfe.jsonl")
    raw = session["files"][0]["path"].encode()
    assert unescape(raw) == os.fsencode(path)  # the exact bytes come back
    assert session["tokens"]["total"] == 13
    assert output.text_table(judge_once(snap)).encode()  # printable
    warm = claude_engine(projects, cache_dir)
    warm.load_cache()
    assert warm.cache_note == ""
    warm.scan()
    assert warm.bytes_read == 0  # the cache's path is the real one again
    assert totals(warm.snapshot()) == totals(snap)
    with path.open("ab") as fh:
        fh.write(claude_line("", "m3", 7).replace(b'"sessionId": "", ', b""))
    warm.scan()
    assert totals(warm.snapshot()).output == 18


def test_opencode_db_path_that_is_not_utf8(tmp_path: Path) -> None:
    home = tmp_path / os.fsdecode(b"data-\xff")
    home.mkdir()
    with sqlite3.connect(home / "opencode.db") as db:
        db.execute("CREATE TABLE message (id TEXT, session_id TEXT, data TEXT)")
        data = {"role": "assistant", "tokens": {"input": 4, "output": 2}, "time": {"created": 1}}
        db.execute("INSERT INTO message VALUES ('m1', 's1', ?)", (json.dumps(data),))
    db.close()
    engine = Engine([OpencodeSource([home])], PriceTable.default().cost, workers=1)
    engine.scan()
    assert totals(engine.snapshot()) == TokenCounts(input=4, output=2)


def test_sqlite_tokens_column_saturates_instead_of_overflowing(tmp_path: Path) -> None:
    from test_store import summary
    from tokentop.history.store import INT64_MAX, Store

    huge = TokenCounts(input=2**70, output=3)
    big = msgspec.structs.replace(summary("a"), tokens=huge)
    with Store(tmp_path / "t.db") as store:
        store.record_summary(big)
        [found], bad = store.summaries()
        column = store.conn.execute("SELECT tokens FROM summaries").fetchone()[0]
    assert bad == 0
    assert found.tokens == huge  # the stored summary keeps the exact total
    assert column == INT64_MAX


def test_the_live_engine_thread_survives_hostile_appends(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    path = projects / "p" / "s.jsonl"
    want = write_session(path, "s", [5])
    engine = Engine(
        [ClaudeCodeSource([projects])],
        PriceTable.default().cost,
        workers=1,
        sweep_s=0.2,
        cache_dir=tmp_path / "cache",
    )
    engine.start()
    try:
        wait_for(lambda: totals(engine.snapshot()) == want)
        hostile = [
            b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}\n",
            claude_line("s", "big", 1).replace(b'"output_tokens": 1', b'"output_tokens": 2e400'),
            claude_line("s", "neg", 1).replace(b'"output_tokens": 1', b'"output_tokens": -4'),
            claude_line("s", "huge", 1).replace(b": 1}", b": 18446744073709551616}"),
            b"\xff\xfe\x00junk\n",
        ]
        with path.open("ab") as fh:
            fh.write(b"".join(hostile) + claude_line("s", "s-m1", 7))
        want += TokenCounts(input=1, output=7)
        wait_for(lambda: totals(engine.snapshot()) == want)
        fifo(projects / "q" / "pipe.jsonl")
        wait_for(lambda: bool(health(engine.snapshot(), "pipe.jsonl")))
        assert engine.snapshot().bad_lines == len(hostile) + 1
        odd = projects / os.fsdecode(b"r-\xff") / os.fsdecode(b"\xfe.jsonl")
        want += write_session(odd, "odd", [11])
        wait_for(lambda: totals(engine.snapshot()) == want)
        msgspec.json.encode(output.sessions_list(judge_once(engine.snapshot())))
        engine.save_cache()
        assert engine._thread is not None and engine._thread.is_alive()
    finally:
        engine.stop()


def test_non_utf8_names_in_a_parallel_cold_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker process sends its file states and ledger through a pipe as msgpack: names
    that are not UTF-8 travel as escaped text plus their bytes."""
    from tokentop.engine import coldscan

    monkeypatch.setattr(coldscan, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(coldscan, "BATCH_BYTES", 1)  # every file its own batch
    projects = tmp_path / "projects"
    want = TokenCounts()
    for i in range(6):
        folder = projects / os.fsdecode(b"p%d-\xff" % i)
        want += write_session(folder / os.fsdecode(b"s\xfe.jsonl"), f"s{i}", [i + 1])
    engine = Engine([ClaudeCodeSource([projects])], PriceTable.default().cost, workers=2)
    merged: list[bool] = []
    absorb = engine.absorb

    def spy(*args: Any, **kwargs: Any) -> bool:
        merged.append(absorb(*args, **kwargs))
        return merged[-1]

    engine.absorb = spy  # type: ignore[method-assign]
    engine.scan()
    snap = engine.snapshot()
    assert totals(snap) == want
    assert len(engine.files) == 6
    assert merged and all(merged)  # the worker's batches came back through the pipe
    doc = json.loads(msgspec.json.encode(output.sessions_list(judge_once(snap))))
    assert all("-\\xff/s\\xfe.jsonl" in s["files"][0]["path"] for s in doc)
