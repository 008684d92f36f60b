"""The cache's hashed dedupe index (engine/dedupe_index.py): a ledger resumed from it counts
exactly what a cold scan of the same files counts, whatever happened to them in between."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tokentop.engine import dedupe_index, dedupe_write
from tokentop.engine import state_cache as cache_mod
from tokentop.engine.dedupe_index import key_digests
from tokentop.engine.engine import Engine
from tokentop.engine.ledger_state import PackedDedupe, names_of
from tokentop.model import LedgerSnapshot
from tokentop.pricing import PriceTable
from tokentop.sources.claude_code import ClaudeCodeSource


def engine_for(root: Path, cache: Path | None = None) -> Engine:
    source = ClaudeCodeSource(config_dirs=[root])
    return Engine([source], PriceTable.default().cost, cache_dir=cache, workers=1)


def figures(snap: LedgerSnapshot) -> dict[str, tuple[object, ...]]:
    """Per session: tokens, cost (rounded), responses and tool calls and errors."""
    return {
        str(s.key): (s.tokens, round(s.cost_usd, 9), s.responses, s.tool_calls, s.tool_errors)
        for s in snap.sessions
    }


def cold(root: Path) -> dict[str, tuple[object, ...]]:
    engine = engine_for(root)
    engine.scan()
    return figures(engine.snapshot())


def resumed(root: Path, cache: Path, *, first: bool = False) -> dict[str, tuple[object, ...]]:
    """A restart from the cache (it must be used, not ignored), reading what changed."""
    engine = engine_for(root, cache)
    engine.load_cache()
    assert engine.cache_note == ("no cache yet" if first else "")
    engine.scan()
    engine.save_cache()
    return figures(engine.snapshot())


def response(mid: str, sid: str, output: int, *, tool: str = "", ts: str = "12:00:00") -> str:
    content: list[dict[str, object]] = [{"type": "text", "text": "ok"}]
    if tool:
        content = [{"type": "tool_use", "id": tool, "name": "Bash", "input": {"command": "ls"}}]
    usage = {"input_tokens": 3, "cache_read_input_tokens": 1000, "output_tokens": output,
             "cache_creation_input_tokens": 50}  # fmt: skip
    record = {"type": "assistant", "sessionId": sid, "requestId": f"req-{mid}",
              "timestamp": f"2026-11-20T{ts}Z", "cwd": "/w/p",
              "message": {"id": mid, "model": "claude-sonnet-4-5-20250929", "content": content,
                          "usage": usage}}  # fmt: skip
    return json.dumps(record) + "\n"


def result(tool: str, sid: str, *, error: bool = False) -> str:
    block = {"type": "tool_result", "tool_use_id": tool, "content": "x", "is_error": error}
    record = {"type": "user", "sessionId": sid, "timestamp": "2026-11-20T12:00:01Z",
              "message": {"role": "user", "content": [block]}}  # fmt: skip
    return json.dumps(record) + "\n"


def append(path: Path, *lines: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.writelines(lines)


def test_a_resumed_ledger_counts_like_a_cold_scan_through_every_kind_of_change(
    tmp_path: Path,
) -> None:
    root, cache = tmp_path / "claude", tmp_path / "cache"
    a = root / "projects" / "-w-p" / "aaaa.jsonl"
    b = root / "projects" / "-w-p" / "bbbb.jsonl"
    gone = root / "projects" / "-w-p" / "cccc.jsonl"
    append(a, *(response(f"msg_a{i}", "aaaa", 10 + i, tool=f"tool_a{i}") for i in range(20)))
    append(a, *(result(f"tool_a{i}", "aaaa", error=i % 5 == 0) for i in range(10)))
    append(gone, response("msg_c0", "cccc", 7), response("msg_c1", "cccc", 8))
    assert resumed(root, cache, first=True) == cold(root)  # a cold scan, then the index

    # After the restart: a later, larger copy of a counted response (a base slot grows), the
    # results of base calls (one an error), a call's result repeated, new responses, and a
    # resumed session in a new file repeating ids of the base at their counted size.
    append(a, response("msg_a3", "aaaa", 500), result("tool_a12", "aaaa", error=True))
    append(a, result("tool_a13", "aaaa"), result("tool_a13", "aaaa", error=True))
    append(b, *(response(f"msg_a{i}", "bbbb", 10 + i) for i in range(5)))
    append(b, response("msg_b0", "bbbb", 42, tool="tool_a1"), result("tool_a2", "bbbb"))
    older = a.stat().st_mtime - 60
    os.utime(b, (older, older))  # a cold scan reads newest first: `a` first, as resumed did
    assert resumed(root, cache) == cold(root)

    # Truncated to nothing and written again, a file deleted: both keep what they counted
    # (max wins: the same ids counted again add nothing), exactly as a cold scan of the
    # files as they were when first read would; and one more restart with nothing new.
    before = resumed(root, cache)
    a.write_text(response("msg_a0", "aaaa", 10))
    gone.unlink()
    assert resumed(root, cache) == before
    assert resumed(root, cache) == before


def test_a_grow_after_two_restarts_is_counted_once(tmp_path: Path) -> None:
    root, cache = tmp_path / "claude", tmp_path / "cache"
    path = root / "projects" / "-w-p" / "s.jsonl"
    append(path, response("msg_1", "s", 5), response("msg_2", "s", 6))
    resumed(root, cache, first=True)
    append(path, response("msg_1", "s", 50))
    resumed(root, cache)  # the grow is an update to a base slot, written into the next index
    append(path, response("msg_1", "s", 40), response("msg_1", "s", 60))
    assert resumed(root, cache) == cold(root)
    (session,) = cold(root).values()
    assert session[0].output == 60 + 6  # type: ignore[attr-defined]


def test_keys_whose_first_halves_collide_are_still_told_apart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every key made to share its first 64 bits: the second 64 bits keep them apart, so
    no two responses or tool calls merge (with blake2b this needs a 2^-64 chance)."""
    real = dedupe_index.key_hash
    monkeypatch.setattr(dedupe_index, "key_hash", lambda key: (7, real(key)[1]))
    root, cache = tmp_path / "claude", tmp_path / "cache"
    path = root / "projects" / "-w-p" / "s.jsonl"
    append(path, *(response(f"msg_{i}", "s", i + 1, tool=f"t{i}") for i in range(30)))
    resumed(root, cache, first=True)
    append(path, response("msg_3", "s", 100), result("t4", "s", error=True))
    append(path, *(response(f"msg_new{i}", "s", 2) for i in range(5)))
    assert resumed(root, cache) == cold(root)
    index = dedupe_index.load(cache_mod.dedupe_path(engine_for(root, cache).cache_path), "")  # type: ignore[arg-type]
    assert index is None  # another save's id: never used


def packed(
    keys: list[str],
    tokens: bytes,
    cost: bytes,
    sessions: list[str],
    models: list[str],
    calls: dict[str, str],
) -> PackedDedupe:
    """Tables of exact keys (in slot order) hashed as a ledger keeps them."""
    session_names, session_idx = names_of(sessions)
    model_names, model_idx = names_of(models)
    marks, mark_idx = names_of(list(calls.values()))
    return PackedDedupe(
        key_digests(keys), b"", tokens, cost, session_names, session_idx,
        model_names, model_idx, key_digests(calls), marks, mark_idx,
    )  # fmt: skip


def test_the_index_round_trips_and_refuses_a_damaged_file(tmp_path: Path) -> None:
    path, save_id = tmp_path / "x.dedupe", "ab" * 16
    fresh = packed(
        ["k1", "k2"], bytes(8 * 6 * 2), bytes(16), ["s1", "s2"], ["m", "m"], {"c1": "Bash"}
    )
    dedupe_write.save(path, save_id, None, {}, fresh)
    index = dedupe_index.load(path, save_id)
    assert index is not None
    assert (index.find("k2"), index.find("k3"), index.find_call("c1")) == (1, None, "Bash")
    assert index.slot(1).session == "s2"
    more = packed(["k3"], bytes(48), bytes(8), ["s3"], ["m2"], {"c1": "Bash\x000"})
    dedupe_write.save(tmp_path / "y.dedupe", save_id, index, {0: ([1, 2, 3, 4, 5, 6], 0.5)}, more)
    again = dedupe_index.load(tmp_path / "y.dedupe", save_id)
    assert again is not None and again.find("k3") == 2 and again.find_call("c1") == "Bash\x000"
    assert again.slot(0).tokens == [1, 2, 3, 4, 5, 6] and again.slot(0).cost == 0.5
    assert again.slot(2) == dedupe_index.Slot([0] * 6, 0.0, "s3", "m2")
    whole = path.read_bytes()
    for at in range(len(whole) - dedupe_index.TRAILER.size):  # head, hashes, names, columns
        data = bytearray(whole)
        data[at] ^= 1
        path.write_bytes(bytes(data))
        assert dedupe_index.load(path, save_id) is None, at


def test_a_restart_writes_only_what_is_new_beside_the_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A repeat of a counted response changes a file but no dedupe table: nothing is
    written. A few new keys go to the delta beside the index; past `delta_limit` one new
    index holds everything. Every restart counts like a cold scan."""
    root, cache = tmp_path / "claude", tmp_path / "cache"
    path = root / "projects" / "-w-p" / "s.jsonl"
    append(path, response("msg_1", "s", 5, tool="t1"), result("t1", "s"))
    resumed(root, cache, first=True)
    (index,) = cache.glob("*.dedupe")
    first = index.stat()

    def same_index() -> bool:
        now = index.stat()
        return (now.st_ino, now.st_mtime_ns) == (first.st_ino, first.st_mtime_ns)

    append(path, response("msg_1", "s", 5))  # a repeat: nothing new to remember
    assert resumed(root, cache) == cold(root) and same_index()
    assert not list(cache.glob("*.delta"))
    append(path, response("msg_2", "s", 5, tool="t2"), response("msg_1", "s", 9))
    assert resumed(root, cache) == cold(root) and same_index()  # new key, grown slot: delta
    assert list(cache.glob("*.delta"))
    append(path, result("t2", "s", error=True), response("msg_3", "s", 4))
    assert resumed(root, cache) == cold(root) and same_index()  # the delta grows
    monkeypatch.setattr(dedupe_index, "delta_limit", lambda indexed: 2)
    append(path, response("msg_4", "s", 4))
    assert resumed(root, cache) == cold(root) and not same_index()  # past the limit
    monkeypatch.undo()
    append(path, response("msg_4", "s", 40), response("msg_2", "s", 50))
    assert resumed(root, cache) == cold(root)


def test_a_quiet_session_keeps_one_pace_entry_and_the_same_figures(tmp_path: Path) -> None:
    """Saved after the pace window, a session keeps only its newest response's pace entry:
    its last response time and, once it writes again, its burn equal a cold scan's."""
    from datetime import UTC, datetime

    from tokentop.clock import FakeClock

    root, cache = tmp_path / "claude", tmp_path / "cache"
    path = root / "projects" / "-w-p" / "s.jsonl"
    start = datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp()

    def at(offset: float) -> str:
        return datetime.fromtimestamp(start + offset, UTC).strftime("%H:%M:%S")

    append(path, *(response(f"msg_{i}", "s", 100, ts=at(10 * i)) for i in range(40)))
    clock = FakeClock(start + 3600)

    def snapshot(cached: bool) -> object:
        source = ClaudeCodeSource(config_dirs=[root])
        engine = Engine([source], PriceTable.default().cost, clock=clock,
                        cache_dir=cache if cached else None, workers=1)  # fmt: skip
        engine.load_cache()
        engine.scan()
        engine.save_cache()
        (s,) = engine.snapshot().sessions
        return (s.last_response_ts, s.tokens_per_min, s.usd_per_hour, s.tokens)

    assert snapshot(cached=True) == snapshot(cached=False)
    (main,) = cache.glob("*.msgpack")
    data = cache_mod.load(main)[0]
    assert data is not None and len(data.ledger.sessions["claude:s"].pace) == 24
    append(path, *(response(f"msg_new{i}", "s", 300, ts=at(3600 + 5 * i)) for i in range(6)))
    clock.t = start + 3600 + 30
    assert snapshot(cached=True) == snapshot(cached=False)


def test_a_parallel_scan_of_new_files_over_a_resumed_index(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many new files after a restart are read by worker processes too; a batch repeating
    keys of the cache's index is refused and read again here, the others are merged."""
    import tokentop.engine.coldscan as coldscan

    monkeypatch.setattr(coldscan, "PARALLEL_MIN_BYTES", 0)
    monkeypatch.setattr(coldscan, "BATCH_BYTES", 4096)
    monkeypatch.setattr(coldscan, "STEP_BYTES", 2048)
    root, cache = tmp_path / "claude", tmp_path / "cache"
    first = root / "projects" / "-w-p" / "a.jsonl"
    append(first, *(response(f"msg_a{i}", "a", 10 + i, tool=f"ta{i}") for i in range(30)))
    resumed(root, cache, first=True)
    for n in range(12):  # new sessions; two of them resume `a`, repeating its ids
        path = root / "projects" / "-w-q" / f"s{n}.jsonl"
        append(
            path, *(response(f"msg_{n}_{i}", f"s{n}", 5 + i, tool=f"t{n}_{i}") for i in range(25))
        )
        if n in (3, 8):
            append(path, *(response(f"msg_a{i}", f"s{n}", 10 + i) for i in range(30)))
        if n == 3:
            append(path, result("ta5", "s3", error=True))
    newest = first.stat().st_mtime
    for path in (root / "projects" / "-w-q").iterdir():  # `a` newest: a cold scan reads it
        age = 600 if path.stem in ("s3", "s8") else 60  # first, as the restart did; the
        os.utime(path, (newest - age, newest - age))  # resumed ones oldest: the worker's
    engine = Engine(
        [ClaudeCodeSource(config_dirs=[root])],
        PriceTable.default().cost,
        cache_dir=cache,
        workers=2,
    )
    merges: list[bool] = []
    absorb = engine.absorb
    engine.absorb = lambda *a, **k: merges.append(absorb(*a, **k)) or merges[-1]  # type: ignore[method-assign]
    engine.load_cache()
    engine.scan()
    assert merges  # the worker read batches; merged or, repeating the index, read again here
    assert figures(engine.snapshot()) == cold(root)


def test_a_damaged_delta_means_one_cold_scan(tmp_path: Path) -> None:
    root, cache = tmp_path / "claude", tmp_path / "cache"
    path = root / "projects" / "-w-p" / "s.jsonl"
    append(path, response("msg_1", "s", 5))
    resumed(root, cache, first=True)
    append(path, response("msg_2", "s", 6))
    resumed(root, cache)
    (delta,) = cache.glob("*.delta")
    data = bytearray(delta.read_bytes())
    data[-3] ^= 0xFF
    delta.write_bytes(bytes(data))
    engine = engine_for(root, cache)
    engine.load_cache()
    assert engine.cache_note.startswith("cache ignored")
    engine.scan()
    assert figures(engine.snapshot()) == cold(root)


def test_a_running_engine_counts_on_from_each_index_it_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a save that writes a whole index, the engine drops the strings it held and
    counts on from that index: a repeat of a key it added before is still a repeat."""
    monkeypatch.setattr(dedupe_index, "delta_limit", lambda indexed: 3)
    root, cache = tmp_path / "claude", tmp_path / "cache"
    path = root / "projects" / "-w-p" / "s.jsonl"
    append(path, response("msg_0", "s", 5))
    engine = engine_for(root, cache)
    engine.scan()
    engine.save_cache()
    append(path, *(response(f"msg_{i}", "s", 5, tool=f"t{i}") for i in range(1, 6)))
    engine.scan()
    engine.save_cache()  # past the limit: a whole index, and the engine counts on from it
    assert engine.ledger.state.seen == {} and engine.ledger.state.tool_calls == {}
    append(path, response("msg_3", "s", 5), response("msg_4", "s", 50), result("t2", "s"))
    append(path, response("msg_9", "s", 7))
    engine.scan()
    engine.save_cache()
    assert figures(engine.snapshot()) == cold(root) == resumed(root, cache)


def test_slots_spilled_to_files_count_like_slots_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past SPILL_SLOTS a cold scan's sealed slots live in temporary files: later, larger
    copies of their responses (read sequentially, as a merge repeating keys is refused), an
    index packed from the files and a restart over it count what a scan holding every slot
    in memory counts; the merged sessions' frozen recent tool calls read the same too."""
    import tokentop.engine.coldscan as coldscan
    from tokentop.engine import dedupe_tables
    from tokentop.engine.slot_columns import SpilledColumns

    root, cache = tmp_path / "claude", tmp_path / "cache"
    projects = root / "projects" / "-w-p"
    for n in range(8):
        lines = [response(f"msg_{n}_{i}", f"s{n}", 5 + i, tool=f"t{n}_{i}") for i in range(12)]
        append(projects / f"s{n}.jsonl", *lines, *(result(f"t{n}_{i}", f"s{n}") for i in range(6)))
    append(projects / "s0.jsonl", *(response(f"msg_7_{i}", "s0", 400 + i) for i in range(4)))
    os.utime(projects / "s0.jsonl", (1, 1))  # read last: its copies grow counted slots

    def scan(cached: bool) -> tuple[object, ...]:
        engine = engine_for(root, cache if cached else None)
        engine.load_cache()
        engine.scan()
        sealed = type(engine.ledger._tables.sealed)
        engine.save_cache()
        snap = engine.snapshot()
        recent = {str(s.key): s.recent_tools for s in snap.sessions}
        return figures(snap), recent, sealed

    in_memory = scan(cached=False)
    sequential = engine_for(root)  # no merge: nothing frozen or spilled
    sequential.process(sorted(projects.iterdir(), key=lambda p: -p.stat().st_mtime))
    snap = sequential.snapshot()
    assert in_memory[:2] == (figures(snap), {str(s.key): s.recent_tools for s in snap.sessions})
    monkeypatch.setattr(coldscan, "HEADLESS_STEP_BYTES", 4096)  # a merge every few files
    monkeypatch.setattr(dedupe_tables, "SPILL_SLOTS", 8)
    spilled = scan(cached=True)
    assert spilled[2] is SpilledColumns and in_memory[2] is not SpilledColumns
    assert spilled[:2] == in_memory[:2]
    append(projects / "s3.jsonl", response("msg_3_0", "s3", 900), result("t3_9", "s3"))
    assert resumed(root, cache) == cold(root) != in_memory[0]


def test_a_save_leaves_a_live_sessions_recent_calls_decoded_and_freezes_a_quiet_ones(
    tmp_path: Path,
) -> None:
    """The cache stores recent calls encoded; in memory only a quiet session's stay so (a
    live one's are read at every snapshot), and a restart reads back the same calls."""
    from datetime import datetime

    root = tmp_path / "claude"
    path = root / "projects" / "-w-p" / "aaaa.jsonl"
    append(path, *(response(f"msg_{i}", "aaaa", 5, tool=f"tool_{i}") for i in range(3)))
    engine = engine_for(root, tmp_path / "cache")
    engine.scan()
    [session] = engine.ledger.state.sessions.values()
    session.thawed_recent()  # as the next tool call of a live session does
    at = datetime.fromisoformat("2026-11-20T12:00:00+00:00").timestamp()
    saved = engine.ledger.cache_state(at + 60)  # live: 1 minute after its last response
    assert len(session.recent) == 3 and not session.recent_frozen
    [copy] = saved.sessions.values()
    assert copy.recent_frozen and copy.recent_calls() == session.recent_calls()
    engine.ledger.cache_state(at + 3600)  # quiet for an hour
    assert not session.recent and session.recent_frozen
    assert [c.name for c in session.recent_calls()] == ["Bash"] * 3
