"""Engine integration: real files on disk, appended to, truncated and rotated while it runs.

Totals must equal what the corpus generator says it wrote (its expected.json), however the
bytes arrive.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tokentop.engine.engine import Engine
from tokentop.model import LedgerSnapshot
from tokentop.pricing import PriceTable
from tokentop.sources.claude_code import ClaudeCodeSource

GEN = Path(__file__).with_name("gen_claude_corpus.py")
KINDS = ("input", "output", "cache_read", "cache_write")


def make_corpus(out: Path, sessions: int = 6, turns: int = 25, seed: int = 3) -> dict[str, int]:
    subprocess.run(
        [sys.executable, str(GEN), str(out), "--sessions", str(sessions), "--turns", str(turns),
         "--seed", str(seed), "--tool-bytes", "400"],
        check=True, capture_output=True,
    )  # fmt: skip
    expected: dict[str, int] = json.loads((out / "expected.json").read_text())["totals"]
    return expected


def totals(snap: LedgerSnapshot) -> dict[str, int]:
    out = dict.fromkeys(KINDS, 0)
    for s in snap.sessions:
        out["input"] += s.tokens.input
        out["output"] += s.tokens.output
        out["cache_read"] += s.tokens.cache_read
        out["cache_write"] += s.tokens.cache_write
    return out


def engine_for(root: Path, cache_dir: Path | None = None, workers: int = 1) -> Engine:
    source = ClaudeCodeSource(config_dirs=[root])
    return Engine([source], PriceTable.default().cost, cache_dir=cache_dir, workers=workers)


def test_cold_scan_equals_expected(tmp_path: Path) -> None:
    expected = make_corpus(tmp_path / "c")
    engine = engine_for(tmp_path / "c")
    engine.scan()
    assert totals(engine.snapshot()) == {k: expected[k] for k in KINDS}
    assert len(engine.snapshot().sessions) == 6


def test_two_process_scan_equals_sequential(tmp_path: Path, monkeypatch) -> None:
    """The parallel cold scan must merge to exactly the sequential totals."""
    import tokentop.engine.coldscan as coldscan

    expected = make_corpus(tmp_path / "c", sessions=20)
    monkeypatch.setattr(coldscan, "PARALLEL_MIN_BYTES", 0)
    engine = engine_for(tmp_path / "c", workers=2)
    merged = spy_absorb(engine)
    engine.scan()
    snap = engine.snapshot()
    assert merged and all(merged), "the child's ledgers must have been merged, not re-read"
    assert engine.bytes_read == corpus_bytes(tmp_path / "c")
    assert totals(snap) == {k: expected[k] for k in KINDS}
    sequential = engine_for(tmp_path / "c")
    sequential.scan()
    by_key = {s.key: s for s in sequential.snapshot().sessions}
    for s in snap.sessions:
        assert s.tokens == by_key[s.key].tokens
        assert s.cost_usd == pytest.approx(by_key[s.key].cost_usd)
        assert s.tool_calls == by_key[s.key].tool_calls


def spy_absorb(engine: Engine) -> list[bool]:
    """Record what each merge of a child's ledger returned."""
    calls: list[bool] = []
    absorb = engine.absorb

    def spy(*args: object, **kwargs: object) -> bool:
        calls.append(absorb(*args, **kwargs))  # type: ignore[arg-type]
        return calls[-1]

    engine.absorb = spy  # type: ignore[method-assign]
    return calls


def corpus_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*.jsonl"))


def test_two_process_scan_spawns_when_threads_run(tmp_path: Path, monkeypatch) -> None:
    """Under the live app other threads exist, so the child is spawned, not forked."""
    import tokentop.engine.coldscan as coldscan

    expected = make_corpus(tmp_path / "c", sessions=12)
    monkeypatch.setattr(coldscan, "PARALLEL_MIN_BYTES", 0)
    engine = engine_for(tmp_path / "c", workers=2)
    merged = spy_absorb(engine)
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        engine.scan()
    finally:
        stop.set()
        other.join()
    assert merged and all(merged)
    assert totals(engine.snapshot()) == {k: expected[k] for k in KINDS}


def test_refused_merge_falls_back_to_reading_the_childs_files(tmp_path: Path, monkeypatch) -> None:
    """When the halves share a dedupe key the merge is refused; the files the child read are
    then read again here, and the totals stay exact."""
    import tokentop.engine.coldscan as coldscan

    expected = make_corpus(tmp_path / "c", sessions=20)
    monkeypatch.setattr(coldscan, "PARALLEL_MIN_BYTES", 0)
    engine = engine_for(tmp_path / "c", workers=2)
    engine.absorb = lambda *args, **kwargs: False  # type: ignore[method-assign]
    engine.scan()
    assert engine.bytes_read == corpus_bytes(tmp_path / "c")
    assert totals(engine.snapshot()) == {k: expected[k] for k in KINDS}


def test_warm_restart_reads_nothing_new(tmp_path: Path) -> None:
    expected = make_corpus(tmp_path / "c")
    first = engine_for(tmp_path / "c", cache_dir=tmp_path / "cache")
    first.scan()
    first.save_cache()
    assert first.bytes_read > 0
    second = engine_for(tmp_path / "c", cache_dir=tmp_path / "cache")
    second.load_cache()
    second.scan()
    assert second.bytes_read == 0
    assert totals(second.snapshot()) == {k: expected[k] for k in KINDS}
    files = sorted((tmp_path / "c" / "projects").rglob("*.jsonl"))
    line = files[0].read_bytes().splitlines(keepends=True)[1]
    with files[0].open("ab") as fh:
        fh.write(line)  # a copy of an existing response: read, but deduped
    second.scan()
    assert second.bytes_read == len(line)
    assert totals(second.snapshot()) == {k: expected[k] for k in KINDS}


def _replay(src: Path, dst: Path, rnd: random.Random) -> None:
    """Copy `src` into `dst` in random-sized appends (splitting lines), then truncate it
    and write it again from scratch, then rotate it (rename away, rewrite in place)."""
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    pos = 0
    while pos < len(data):
        step = rnd.randint(1, 4000)
        with dst.open("ab") as fh:
            fh.write(data[pos : pos + step])
        pos += step
        time.sleep(rnd.random() * 0.004)
    mode = rnd.choice(["truncate", "rotate", "none"])
    if mode == "truncate":
        with dst.open("wb") as fh:
            fh.write(data[: len(data) // 2])
        time.sleep(0.1)
        with dst.open("ab") as fh:
            fh.write(data[len(data) // 2 :])
    elif mode == "rotate":
        os.replace(dst, dst.with_suffix(".old"))
        dst.write_bytes(data)


def test_live_engine_with_appends_truncation_and_rotation(tmp_path: Path) -> None:
    expected = make_corpus(tmp_path / "src", sessions=5, turns=30)
    live = tmp_path / "live"
    (live / "projects").mkdir(parents=True)
    engine = engine_for(live)
    seen: list[LedgerSnapshot] = []
    engine.add_listener(seen.append)
    engine.start()
    try:
        rnd = random.Random(5)
        sources = sorted((tmp_path / "src" / "projects").rglob("*.jsonl"))
        writers = [
            threading.Thread(
                target=_replay,
                args=(f, live / f.relative_to(tmp_path / "src"), random.Random(rnd.random())),
            )
            for f in sources
        ]
        for w in writers:
            w.start()
        for w in writers:
            w.join()
        want = {k: expected[k] for k in KINDS}
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and totals(engine.snapshot()) != want:
            time.sleep(0.05)
        assert totals(engine.snapshot()) == want
        assert seen, "listeners were never called"
        assert engine.snapshot().bad_lines == 0
    finally:
        engine.stop()


def started_with_a_costly_listener(
    tmp_path: Path, sessions: int, tick_s: float = 1.0
) -> tuple[Engine, list[float]]:
    """A started engine past its scan, whose listener notes when it is called and then
    takes 30 ms of CPU."""
    make_corpus(tmp_path / "c", sessions=sessions, turns=3)
    engine = engine_for(tmp_path / "c")
    engine.tick_s = tick_s
    stamps: list[float] = []

    def costly(_snap: LedgerSnapshot) -> None:
        stamps.append(time.monotonic())
        spent = time.thread_time()
        while time.thread_time() - spent < 0.03:
            pass

    engine.add_listener(costly)
    engine.start()
    assert engine.scanned.wait(30)
    return engine, stamps


def test_quiet_snapshots_slow_down_when_judging_them_is_costly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A listener that takes 30 ms of CPU per snapshot, a 0.05 s tick and a 10 % share: quiet
    snapshots come ~0.3 s apart, yet an append is still published at once."""
    import tokentop.engine.engine as engine_mod

    monkeypatch.setattr(engine_mod, "QUIET_SHARE", 0.1)
    engine, stamps = started_with_a_costly_listener(tmp_path, sessions=2, tick_s=0.05)
    try:
        time.sleep(1.5)
        quiet = [b - a for a, b in itertools.pairwise(stamps[-4:])]
        assert quiet and min(quiet) >= 0.25, quiet
        transcript = sorted((tmp_path / "c" / "projects").rglob("*.jsonl"))[0]
        before = len(stamps)
        line = transcript.read_bytes().splitlines(keepends=True)[1]
        appended = time.monotonic()
        with transcript.open("ab") as fh:
            fh.write(line.replace(b"msg_", b"msg_X"))
        deadline = appended + 5
        while len(stamps) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(stamps) > before and stamps[before] - appended < 0.25
    finally:
        engine.stop()


def test_snapshots_of_a_growing_file_keep_their_judging_within_a_share_of_a_core(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends every 20 ms, a listener taking 30 ms of CPU, a 10 % share: snapshots come
    ~0.3 s apart instead of ten a second, and the last one has every line."""
    import tokentop.engine.engine as engine_mod

    monkeypatch.setattr(engine_mod, "BUSY_SHARE", 0.1)
    engine, stamps = started_with_a_costly_listener(tmp_path, sessions=1)
    try:
        transcript = sorted((tmp_path / "c" / "projects").rglob("*.jsonl"))[0]
        line = transcript.read_bytes().splitlines(keepends=True)[1]
        initial = responses(engine)
        started = len(stamps)
        for n in range(75):
            with transcript.open("ab") as fh:
                fh.write(line.replace(b"msg_", f"msg_{n}x".encode()))
            time.sleep(0.02)
        busy = [b - a for a, b in itertools.pairwise(stamps[started:])]
        assert len(busy) >= 2 and min(busy) >= 0.25, busy
        deadline = time.monotonic() + 10
        while responses(engine) < initial + 75 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert responses(engine) == initial + 75
    finally:
        engine.stop()


def responses(engine: Engine) -> int:
    return sum(s.responses for s in engine.snapshot().sessions)


def test_cache_with_a_stale_dedupe_side_file_is_ignored(tmp_path: Path) -> None:
    """A crash between writing the side file and the main file must not mix two saves."""
    expected = make_corpus(tmp_path / "c")
    first = engine_for(tmp_path / "c", cache_dir=tmp_path / "cache")
    first.scan()
    first.save_cache()
    [side] = (tmp_path / "cache").glob("*.dedupe")
    side.write_bytes(b"another-save\n" + side.read_bytes().partition(b"\n")[2])
    second = engine_for(tmp_path / "c", cache_dir=tmp_path / "cache")
    second.load_cache()
    assert "stale" in second.cache_note
    second.scan()
    assert second.bytes_read > 0  # cold scan
    assert totals(second.snapshot()) == {k: expected[k] for k in KINDS}


def test_sessions_json_is_remembered_only_while_nothing_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A warm `sessions --json` over unchanged files with only quiet sessions prints what
    the previous run computed, without decoding the ledger; any change, or an active
    session, computes it again, and the result equals a cold scan's."""
    from tokentop.cli import main
    from tokentop.engine import ledger as ledger_mod

    make_corpus(tmp_path / "c", sessions=4)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    (tmp_path / "codex").mkdir()
    dirs = ["--claude-dir", str(tmp_path / "c"), "--codex-dir", str(tmp_path / "codex")]
    warm = ["sessions", "--json", "--cache-dir", str(tmp_path / "cache"), *dirs]

    def run(argv: list[str]) -> str:
        assert main(argv) == 0
        return capsys.readouterr().out

    first = run(warm)
    assert list((tmp_path / "cache").glob("*.sessions"))
    with monkeypatch.context() as m:
        m.setattr(ledger_mod.Ledger, "restore", None)  # any decode of the ledger fails
        assert run(warm) == first

    transcript = sorted((tmp_path / "c").rglob("*.jsonl"))[0]
    with transcript.open("a") as fh:
        fh.write(json.dumps(json.loads(transcript.read_text().splitlines()[-1]) | {
            "uuid": "u-new", "message": {"id": "msg_new", "model": "claude-sonnet-4-5-20250929",
            "usage": {"input_tokens": 7, "output_tokens": 5}}, "type": "assistant",
        }) + "\n")  # fmt: skip
    changed = run(warm)
    assert changed != first
    assert changed == run(["sessions", "--json", "--no-cache", *dirs])
    totals_first = sum(s["tokens"]["total"] for s in json.loads(first))
    assert sum(s["tokens"]["total"] for s in json.loads(changed)) == totals_first + 12

    live = tmp_path / "c" / "projects" / "-live" / "live-1.jsonl"
    live.parent.mkdir()
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
    live.write_text(json.dumps({
        "type": "assistant", "sessionId": "live-1", "timestamp": now, "cwd": "/live",
        "message": {"id": "msg_live", "model": "claude-sonnet-4-5-20250929",
                    "usage": {"input_tokens": 3, "output_tokens": 4}},
    }) + "\n")  # fmt: skip
    active = run(warm)
    with monkeypatch.context() as m:
        m.setattr(ledger_mod.Ledger, "restore", None)
        with pytest.raises(TypeError):  # not remembered: an active session's burn moves
            run(warm)
    assert '"session_id": "live-1"' in active
