"""`tokentop sessions --json` as a user runs it (a real subprocess) over a tree holding every
hostile case at once: it exits 0 in bounded time, with the good lines' totals."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from hostile_fs import claude_line, write_session
from hostile_helpers import CASES, clean_totals, copy_fixture, make_hostile
from tokentop.model import TokenCounts

TIMEOUT_S = 60


def sessions_json(tmp: Path, args: list[str], warns: str = "") -> list[dict[str, Any]]:
    """The JSON of one run; its stderr must say `warns` about the cache (or nothing)."""
    env = dict(os.environ)
    for var in ("XDG_CACHE_HOME", "XDG_DATA_HOME", "XDG_CONFIG_HOME"):
        env[var] = str(tmp / var.lower())
    env["HOME"] = str(tmp / "home")
    for var in ("CLAUDE_CONFIG_DIR", "CODEX_HOME", "GEMINI_DATA_DIR", "OPENCODE_DATA_DIR"):
        env.pop(var, None)
    proc = subprocess.run(
        [sys.executable, "-m", "tokentop.cli", "sessions", "--json", *args],
        capture_output=True, timeout=TIMEOUT_S, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    assert b"Traceback" not in proc.stderr
    said = [line for line in proc.stderr.decode().splitlines() if "cache" in line]
    assert said == ([f"tokentop: {warns}; reading everything again"] if warns else [])
    doc: list[dict[str, Any]] = json.loads(proc.stdout)
    return doc


def total(doc: list[dict[str, Any]]) -> int:
    return sum(s["tokens"]["total"] for s in doc)


def hostile_claude_tree(projects: Path) -> TokenCounts:
    """Good sessions plus a FIFO, a device, deep JSON, a huge count, a non-UTF-8 folder and
    file name, a symlinked folder reached twice and a symlink loop."""
    want = write_session(projects / "p" / "a.jsonl", "a", [5, 6])
    bad = claude_line("a", "huge", 1).replace(b'"output_tokens": 1', b'"output_tokens": 1e400')
    deep = b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}\n"
    with (projects / "p" / "a.jsonl").open("ab") as fh:
        fh.write(bad + deep + claude_line("a", "a-m9", 9))
    want += TokenCounts(input=1, output=9)
    os.mkfifo(projects / "p" / "pipe.jsonl")
    os.symlink("/dev/zero", projects / "p" / "zero.jsonl")
    odd = projects / os.fsdecode(b"odd-\xff") / os.fsdecode(b"\xfe.jsonl")
    want += write_session(odd, "odd", [7])
    elsewhere = projects.parent / "elsewhere"
    want += write_session(elsewhere / "l.jsonl", "linked", [8])
    os.symlink(elsewhere, projects / "linked")
    os.symlink(elsewhere, projects / "linked-too")
    os.symlink(projects, projects / "p" / "loop")
    return want


def test_sessions_json_over_every_hostile_case(tmp_path: Path) -> None:
    projects = tmp_path / "claude" / "projects"
    want = hostile_claude_tree(projects).total
    args = ["--claude-dir", str(projects), "--cache-dir", str(tmp_path / "cache")]
    for case in CASES:
        if case.name == "claude":
            continue
        want += clean_totals(case, tmp_path / "clean")[0].total
        root = copy_fixture(case, tmp_path / "hostile")
        make_hostile(case, root)
        args += [case.option, str(root)]
    cold = sessions_json(tmp_path, args)
    assert total(cold) == want
    odd = next(s for s in cold if s["session_id"] == "odd")
    assert "odd-\\xff/\\xfe.jsonl" in odd["files"][0]["path"]
    [dedupe] = (tmp_path / "cache").glob("*.dedupe")
    dedupe.write_bytes(dedupe.read_bytes()[:100])  # power loss: a short side file
    warning = "cache ignored (its dedupe tables are missing, stale or damaged)"
    assert total(sessions_json(tmp_path, args, warns=warning)) == want
    assert total(sessions_json(tmp_path, args)) == want  # warm again
    [state] = (tmp_path / "cache").glob("*.msgpack")
    state.unlink()
    os.mkfifo(state)  # a FIFO as the cache state file
    warning = "cache unreadable: not a regular file (FIFO, device or socket), skipped"
    assert total(sessions_json(tmp_path, args, warns=warning)) == want
    assert total(sessions_json(tmp_path, args)) == want  # its save replaced the FIFO


def test_watch_ndjson_over_every_hostile_case(tmp_path: Path) -> None:
    """`watch --ndjson` keeps streaming over the same tree, and new hostile lines appended
    while it runs do not stop it."""
    from test_cli import Watch

    projects = tmp_path / "claude" / "projects"
    hostile_claude_tree(projects)
    watch = Watch(tmp_path, "--claude-dir", str(projects))
    try:
        odd = watch.wait_for(lambda o: o["type"] == "session" and o["session_id"] == "odd")
        assert "odd-\\xff/\\xfe.jsonl" in odd["files"][0]["path"]
        with (projects / "p" / "a.jsonl").open("ab") as fh:
            fh.write(b'{"x":' + b"[" * 5000 + b"]" * 5000 + b"}\n" + claude_line("a", "late", 40))
        watch.wait_for(
            lambda o: o["type"] == "session" and o["session_id"] == "a" and o["bad_lines"] == 3
        )
        assert watch.proc.poll() is None  # still running
    finally:
        watch.close()
    assert watch.proc.stderr is not None
    assert "Traceback" not in watch.proc.stderr.read()


def test_sessions_json_after_a_same_size_rewrite(tmp_path: Path) -> None:
    """The remembered output and the cache both notice a rewrite that keeps the size."""
    projects = tmp_path / "projects"
    path = projects / "p" / "s.jsonl"
    write_session(path, "s", [111, 222])
    args = ["--claude-dir", str(projects), "--cache-dir", str(tmp_path / "cache")]
    assert total(sessions_json(tmp_path, args)) == 2 + 333
    assert total(sessions_json(tmp_path, args)) == 2 + 333  # remembered
    size = path.stat().st_size
    write_session(path, "s", [444, 555])
    assert path.stat().st_size == size
    warning = f"cache ignored ({str(path)!r} was rewritten in place)"
    assert total(sessions_json(tmp_path, args, warns=warning)) == 2 + 999
    assert total(sessions_json(tmp_path, args)) == 2 + 999
