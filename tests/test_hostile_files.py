"""Hostile file systems: FIFOs where files are expected, damaged caches, files rewritten in
place, unreadable paths, symlinked folders and loops, names that are not UTF-8. Each is a
real file (os.mkfifo, chmod, symlink), and the good files' totals stay exact."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from hostile_helpers import CASES, Case, clean_totals, copy_fixture, totals, usage_files
from tokentop import cache as cache_mod
from tokentop import output
from tokentop.engine import Engine
from tokentop.model import LedgerSnapshot, TokenCounts
from tokentop.pricing import PriceTable
from tokentop.sources.claude_code import ClaudeCodeSource
from tokentop.sources.gemini import GeminiSource
from tokentop.sources.opencode import OpencodeSource

SCAN_TIMEOUT_S = 30


def claude_line(sid: str, msg_id: str, out: int, uuid: str = "") -> bytes:
    record = {
        "type": "assistant",
        "sessionId": sid,
        "cwd": "/w",
        "timestamp": "2026-01-01T00:00:00.000Z",
        "uuid": uuid or f"u-{msg_id}",
        "message": {
            "id": msg_id,
            "model": "claude-sonnet-4-20250514",
            "usage": {"input_tokens": 1, "output_tokens": out},
        },
    }
    return json.dumps(record).encode() + b"\n"


def write_session(path: Path, sid: str, outs: list[int]) -> TokenCounts:
    """A transcript of one response per count; returns what it adds up to."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(claude_line(sid, f"{sid}-m{i}", n) for i, n in enumerate(outs)))
    return TokenCounts(input=len(outs), output=sum(outs))


def claude_engine(projects: Path, cache_dir: Path | None = None) -> Engine:
    source = ClaudeCodeSource([projects])
    return Engine([source], PriceTable.default().cost, workers=1, cache_dir=cache_dir)


def bounded(fn: Callable[[], object], fifos: list[Path]) -> None:
    """Run `fn` in a thread; if it is still blocked after SCAN_TIMEOUT_S, unblock it (open
    each FIFO for writing) and fail: a FIFO must never block a scan."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(SCAN_TIMEOUT_S)
    blocked = thread.is_alive()
    if blocked:
        for fifo in fifos:
            fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
            os.close(fd)
        thread.join(5)
    assert not blocked, "the scan blocked on a FIFO"
    assert not errors, errors


def fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


def health(snap: LedgerSnapshot, name: str) -> list[str]:
    return [f.last_error for f in snap.files if Path(f.path).name == name and f.bad_lines]


# -- FIFOs and devices -----------------------------------------------------------------------


def test_fifo_transcripts_and_devices_are_listed_not_read(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    want = write_session(projects / "p" / "good.jsonl", "good", [5, 7])
    pipes = [fifo(projects / "p" / "pipe.jsonl"), fifo(projects / "q" / "pipe2.jsonl")]
    (projects / "d").mkdir()
    os.symlink("/dev/zero", projects / "d" / "zero.jsonl")
    engine = claude_engine(projects)
    bounded(engine.scan, pipes)
    snap = engine.snapshot()
    assert totals(snap) == want
    for name in ("pipe.jsonl", "pipe2.jsonl", "zero.jsonl"):
        [reason] = health(snap, name)
        assert "not a regular file" in reason
    bounded(engine.scan, pipes)  # listed once, not once per scan
    assert engine.snapshot().bad_lines == 3


def test_fifo_where_whole_file_sources_expect_a_file(tmp_path: Path) -> None:
    gemini_home = copy_fixture(next(c for c in CASES if c.name == "gemini-json"), tmp_path)
    [chats] = list(gemini_home.rglob("chats"))
    pipes = [
        fifo(chats / "session-2026-01-01T00-00-fifo.json"),
        fifo(gemini_home / "projects.json"),
    ]
    opencode = copy_fixture(next(c for c in CASES if c.name == "opencode"), tmp_path)
    [folder] = list((opencode / "storage" / "message").iterdir())
    pipes += [fifo(folder / "msg_fifo.json"), fifo(opencode / "opencode.db")]
    sources = [GeminiSource([gemini_home]), OpencodeSource([opencode])]
    engine = Engine(sources, PriceTable.default().cost, workers=1)
    bounded(engine.scan, pipes)
    snap = engine.snapshot()
    assert totals(snap).total > 0
    for name in ("session-2026-01-01T00-00-fifo.json", "msg_fifo.json", "opencode.db"):
        [reason] = health(snap, name)
        assert "not a regular file" in reason


@pytest.mark.parametrize("side", [".msgpack", ".dedupe", ".sessions"])
def test_fifo_as_cache_state_file(tmp_path: Path, side: str) -> None:
    projects = tmp_path / "projects"
    want = write_session(projects / "p" / "s.jsonl", "s", [3])
    cache_dir = tmp_path / "cache"
    first = claude_engine(projects, cache_dir)
    first.scan()
    first.save_cache()
    assert first.cache_path is not None
    target = first.cache_path.with_suffix(side)
    target.unlink(missing_ok=True)
    pipes = [fifo(target)]
    second = claude_engine(projects, cache_dir)

    def warm() -> None:
        from tokentop import sessions_cache

        sessions_cache.recall(second)
        second.load_cache()
        second.scan()

    bounded(warm, pipes)
    assert totals(second.snapshot()) == want


# -- damaged caches --------------------------------------------------------------------------


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


# -- rewritten in place ----------------------------------------------------------------------


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


# -- unreadable paths ------------------------------------------------------------------------


def as_unprivileged(fn: Callable[[], bytes]) -> bytes:
    """`fn()` run by a non-root user: here if we are not root, else in a forked child that
    drops to `nobody` (the result comes back through a pipe)."""
    if os.geteuid() != 0:
        return fn()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            os.write(write_end, fn())
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as fh:
        data = fh.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    return data


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir every user can enter (pytest's is root-only when run as root)."""
    path = Path(tempfile.mkdtemp(prefix="tokentop-perm-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        for p in [path, *path.rglob("*")]:
            if not p.is_symlink():
                p.chmod(0o755)
        shutil.rmtree(path)


def test_unreadable_file_and_folder_are_listed(shared_tmp: Path) -> None:
    projects = shared_tmp / "projects"
    want = write_session(projects / "ok" / "a.jsonl", "a", [5])
    write_session(projects / "ok" / "secret.jsonl", "secret", [50])
    write_session(projects / "closed" / "b.jsonl", "b", [60])
    for p in [projects, *projects.rglob("*")]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    (projects / "ok" / "secret.jsonl").chmod(0)
    (projects / "closed").chmod(0)

    cost = PriceTable.default().cost  # loaded here: `nobody` may not read the package

    def scan() -> bytes:
        engine = Engine([ClaudeCodeSource([projects])], cost, workers=1)
        engine.scan()
        engine.scan()  # a second scan does not count them again
        snap = engine.snapshot()
        return msgspec.json.encode({"totals": totals(snap), "files": output.orphan_bad_files(snap)})

    result = json.loads(as_unprivileged(scan))
    assert result["totals"] == list(msgspec.structs.astuple(want))
    listed = {Path(f["path"]).name: f for f in result["files"]}
    assert set(listed) == {"secret.jsonl", "closed"}
    for f in listed.values():
        assert f["bad_lines"] == 1
        assert "Permission denied" in f["last_error"]


# -- symlinks --------------------------------------------------------------------------------


def test_symlinked_project_folder_is_followed_once_and_loops_end(tmp_path: Path) -> None:
    projects = tmp_path / "projects"
    elsewhere = tmp_path / "elsewhere" / "proj"
    want = write_session(elsewhere / "s.jsonl", "s", [5, 6])
    want += write_session(projects / "local" / "t.jsonl", "t", [1])
    os.symlink(elsewhere, projects / "linked")
    os.symlink(elsewhere, projects / "linked-again")
    os.symlink(projects, projects / "local" / "loop")  # a loop back to the root
    engine = claude_engine(projects)
    bounded(engine.scan, [])
    snap = engine.snapshot()
    assert totals(snap) == want
    real = [p for p in engine.files if Path(p).resolve() == (elsewhere / "s.jsonl").resolve()]
    assert len(real) == 1  # one real file, followed under one path
    assert {s.key.session_id for s in snap.sessions} == {"s", "t"}
    bounded(engine.scan, [])
    assert totals(engine.snapshot()) == want


# -- names that are not UTF-8 ----------------------------------------------------------------


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
    doc = json.loads(msgspec.json.encode(output.sessions_list(snap)))
    [session] = doc
    assert session["session_id"] == "sess-\\xfe"
    assert session["files"][0]["path"].endswith("proj-\\xff\\\\x/sess-\\xfe.jsonl")
    raw = session["files"][0]["path"].encode()
    assert unescape(raw) == os.fsencode(path)  # the exact bytes come back
    assert session["tokens"]["total"] == 13
    assert output.text_table(snap).encode()  # printable
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


def unescape(text: bytes) -> bytes:
    """The reverse of `name_text`: `\\\\` is a backslash, `\\xNN` the byte NN."""
    out = bytearray()
    i = 0
    while i < len(text):
        if text[i : i + 2] == b"\\\\":
            out += b"\\"
            i += 2
        elif text[i : i + 2] == b"\\x":
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        else:
            out.append(text[i])
            i += 1
    return bytes(out)


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


def test_opencode_wal_that_is_a_fifo_and_an_unreadable_db(shared_tmp: Path) -> None:
    home = shared_tmp / "opencode"
    home.mkdir()
    db_path = home / "opencode.db"
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE message (id TEXT, session_id TEXT, data TEXT)")
        data = {"role": "assistant", "tokens": {"input": 4, "output": 2}, "time": {"created": 1}}
        db.execute("INSERT INTO message VALUES ('m1', 's1', ?)", (json.dumps(data),))
    db.close()
    wal = fifo(home / "opencode.db-wal")
    engine = Engine([OpencodeSource([home])], PriceTable.default().cost, workers=1)
    bounded(engine.scan, [wal])
    [reason] = health(engine.snapshot(), "opencode.db")
    assert "not a regular file" in reason
    wal.unlink()
    db_path.chmod(0)
    home.chmod(0o755)

    cost = PriceTable.default().cost  # loaded here: `nobody` may not read the package

    def scan_twice() -> bytes:
        unprivileged = Engine([OpencodeSource([home])], cost, workers=1)
        unprivileged.scan()
        unprivileged.scan()
        return msgspec.json.encode(unprivileged.snapshot().files)

    [listed] = json.loads(as_unprivileged(scan_twice))
    assert listed["bad_lines"] == 1  # counted once, not once per scan
    assert "cannot read the database" in listed["last_error"]


def test_sqlite_tokens_column_saturates_instead_of_overflowing(tmp_path: Path) -> None:
    from test_store import summary
    from tokentop.store import INT64_MAX, Store

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
        msgspec.json.encode(output.sessions_list(engine.snapshot()))
        engine.save_cache()
        assert engine._thread is not None and engine._thread.is_alive()
    finally:
        engine.stop()


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_non_utf8_names_in_a_parallel_cold_scan(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker process sends its file states and ledger through a pipe as msgpack: names
    that are not UTF-8 travel as escaped text plus their bytes."""
    from tokentop import coldscan

    monkeypatch.setattr(coldscan, "PARALLEL_MIN_BYTES", 0)
    done: list[set[Path]] = []
    real_scan = coldscan.scan_parallel

    def recorded(engine: Engine, fresh: list[Path]) -> set[Path]:
        done.append(real_scan(engine, fresh))
        return done[-1]

    monkeypatch.setattr(coldscan, "scan_parallel", recorded)
    projects = tmp_path / "projects"
    want = TokenCounts()
    for i in range(6):
        folder = projects / os.fsdecode(b"p%d-\xff" % i)
        want += write_session(folder / os.fsdecode(b"s\xfe.jsonl"), f"s{i}", [i + 1])
    engine = Engine([ClaudeCodeSource([projects])], PriceTable.default().cost, workers=2)
    engine.scan()
    snap = engine.snapshot()
    assert totals(snap) == want
    assert len(engine.files) == 6
    assert [len(d) for d in done] == [6]  # the worker's half came back through the pipe
    doc = json.loads(msgspec.json.encode(output.sessions_list(snap)))
    assert all("-\\xff/s\\xfe.jsonl" in s["files"][0]["path"] for s in doc)


DIR_CASES = [c for c in CASES if c.fixture.is_dir()]


@pytest.mark.parametrize("case", DIR_CASES, ids=[c.name for c in DIR_CASES])
def test_file_system_cases_in_every_folder_source(case: Case, shared_tmp: Path) -> None:
    """In each agent's folder at once: a transcript whose name is not UTF-8, a FIFO and an
    unreadable file where transcripts go, its folder moved away and reached through two
    symlinks, and a symlink loop. Read as a normal user; the totals are the clean ones."""
    want, _ = clean_totals(case, shared_tmp / "clean")
    root = copy_fixture(case, shared_tmp / "hostile")
    [source_root, *_] = case.make(root).roots()
    path = next(p for p in usage_files(case, root) if p.suffix in (".jsonl", ".json"))
    odd = path.with_name(path.stem + os.fsdecode(b"\xff") + path.suffix)
    path.rename(odd)
    pipes = [fifo(odd.with_name(path.stem + "-fifo" + path.suffix))]
    locked = odd.with_name(path.stem + "-locked" + path.suffix)
    locked.write_bytes(b'{"x": 1}\n')
    folder = odd.parent
    away = shared_tmp / "away" / folder.name
    away.parent.mkdir()
    folder.rename(away)
    os.symlink(away, folder)
    os.symlink(away, folder.with_name(folder.name + "-again"))
    os.symlink(source_root, away / "loop")
    for p in [shared_tmp, *shared_tmp.rglob("*")]:
        if not p.is_symlink() and not p.is_fifo():
            p.chmod(0o755 if p.is_dir() else 0o644)
    (away / locked.name).chmod(0)

    cost = PriceTable.default().cost  # loaded here: `nobody` may not read the package

    def scan() -> bytes:
        engine = Engine([case.make(root)], cost, workers=1)
        bounded(engine.scan, pipes)
        snap = engine.snapshot()
        files = [(f.path, f.last_error) for f in snap.files if f.bad_lines]
        doc = msgspec.json.encode(output.sessions_list(snap)).decode()
        return msgspec.json.encode({"totals": totals(snap), "bad": files, "doc": doc})

    result = json.loads(as_unprivileged(scan))
    assert result["totals"] == list(msgspec.structs.astuple(want))
    reasons = {Path(p).name: e for p, e in result["bad"]}
    assert "not a regular file" in reasons[pipes[0].name]
    assert "Permission denied" in reasons[locked.name]
    assert "\\xff" in result["doc"]


FILE_CASES = [c for c in CASES if not c.fixture.is_dir()]


@pytest.mark.parametrize("case", FILE_CASES, ids=[c.name for c in FILE_CASES])
def test_fifo_or_unreadable_file_named_as_a_root(case: Case, shared_tmp: Path) -> None:
    """A proxy log or JSONL file given on the command line that is a FIFO, or unreadable."""
    pipe = fifo(shared_tmp / "pipe.jsonl")
    locked = shared_tmp / "locked.jsonl"
    locked.write_bytes(case.fixture.read_bytes())
    locked.chmod(0)

    cost = PriceTable.default().cost  # loaded here: `nobody` may not read the package

    def scan() -> bytes:
        engine = Engine([case.make(pipe), case.make(locked)], cost, workers=1)
        bounded(engine.scan, [pipe])
        snap = engine.snapshot()
        return msgspec.json.encode({Path(f.path).name: f.last_error for f in snap.files})

    reasons = json.loads(as_unprivileged(scan))
    assert "not a regular file" in reasons["pipe.jsonl"]
    assert "Permission denied" in reasons["locked.jsonl"]
