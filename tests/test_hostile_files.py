"""Hostile file systems: FIFOs and devices where files are expected, unreadable files and
folders, symlinked folders and loops, in every source. Each is real (os.mkfifo, chmod,
symlink, a scan run as `nobody` when root), and the good files' totals stay exact."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest

from hostile_fs import (
    as_unprivileged,
    bounded,
    claude_engine,
    fifo,
    health,
    shared_tmp_dir,
    write_session,
)
from hostile_helpers import CASES, Case, clean_totals, copy_fixture, totals, usage_files
from tokentop.engine.engine import Engine
from tokentop.policy.watchdog import judge_once
from tokentop.pricing import PriceTable
from tokentop.render import records as output
from tokentop.sources.claude_code import ClaudeCodeSource
from tokentop.sources.gemini import GeminiSource
from tokentop.sources.opencode import OpencodeSource


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temp dir every user can enter (pytest's is root-only when run as root)."""
    with shared_tmp_dir() as path:
        yield path


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
        from tokentop.commands import sessions_memo as sessions_cache

        sessions_cache.recall(second)
        second.load_cache()
        second.scan()

    bounded(warm, pipes)
    assert totals(second.snapshot()) == want


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
    whole = case.whole_file and path.name.endswith(case.whole_file)
    suffix = case.whole_file if whole else path.suffix  # Cline's names end `.messages.json`
    stem = path.name.removesuffix(suffix)
    odd = path.with_name(stem + os.fsdecode(b"\xff") + suffix)
    path.rename(odd)
    pipes = [fifo(odd.with_name(stem + "-fifo" + suffix))]
    locked = odd.with_name(stem + "-locked" + suffix)
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
        doc = msgspec.json.encode(output.sessions_list(judge_once(snap))).decode()
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


SHORT_SYS_FILE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def _short_sys_file() -> bool:
    try:
        return SHORT_SYS_FILE.stat().st_size > len(SHORT_SYS_FILE.read_bytes())
    except OSError:
        return False


@pytest.mark.skipif(not _short_sys_file(), reason="no /sys file longer in stat than in reading")
def test_a_transcript_linked_to_a_sys_file_ends_every_read_loop(tmp_path: Path) -> None:
    """A /sys file says 4096 bytes and holds 23: the tailer hands out what is there and
    says it is done; `sessions` and the hook (PreToolUse naming it) finish at once."""
    import subprocess
    import sys
    import time

    from tokentop.engine.tail import Tailer

    projects = tmp_path / "claude" / "projects"
    want = write_session(projects / "p" / "good.jsonl", "good", [5, 7])
    link = projects / "p" / "4b1d0000-0000-4000-8000-000000000000.jsonl"
    link.symlink_to(SHORT_SYS_FILE)
    tailer = Tailer(link)
    reads = [tailer.read_new() for _ in range(3)]
    assert not any(r.more for r in reads) and reads[0].data == SHORT_SYS_FILE.read_bytes()
    env = {
        **os.environ,
        "XDG_CACHE_HOME": str(tmp_path / "c"),
        "XDG_DATA_HOME": str(tmp_path / "d"),
    }
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "tokentop.cli", "sessions", "--json", "--no-cache",
         "--claude-dir", str(tmp_path / "claude")],
        capture_output=True, timeout=30, env=env,
    )  # fmt: skip
    assert done.returncode == 0 and time.monotonic() - started < 15
    assert sum(s["tokens"]["total"] for s in json.loads(done.stdout)) == want.total
    hook_input = json.dumps({
        "session_id": link.stem, "transcript_path": str(link), "cwd": "/x",
        "hook_event_name": "PreToolUse", "tool_name": "Bash", "tool_input": {},
    })  # fmt: skip
    hook = subprocess.run(
        [sys.executable, "-m", "tokentop.commands.hook", "--registry", str(tmp_path / "r")],
        input=hook_input.encode(), capture_output=True, timeout=30, env=env,
    )  # fmt: skip
    assert hook.returncode == 0, hook.stderr
