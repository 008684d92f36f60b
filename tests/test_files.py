"""Files tokentop writes: atomic, through a symlink to its target, never through a planted temp
symlink, and owner-only (an existing 0644 db, log, registry or cache file is made 0600)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from claude_lines import response, write_transcript
from tokentop import files
from tokentop.files import append_private, write_atomic

SESSION = "3c4d5e6f-7a8b-4c9d-8e0f-1a2b3c4d5e6f"


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def cli(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tokentop.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )


def test_hook_install_writes_through_a_symlinked_settings_file(tmp_path: Path) -> None:
    dotfiles, claude = tmp_path / "dotfiles", tmp_path / ".claude"
    dotfiles.mkdir()
    claude.mkdir()
    target = dotfiles / "settings.json"
    target.write_text(json.dumps({"model": "opus"}))
    target.chmod(0o644)
    link = claude / "settings.json"
    link.symlink_to(target)
    done = cli("hook", "install", "--settings", str(link), "--yes")
    assert done.returncode == 0, done.stderr
    assert link.is_symlink() and os.readlink(link) == str(target)
    settings = json.loads(target.read_text())
    assert settings["model"] == "opus" and "PreToolUse" in settings["hooks"]
    assert "tokentop.commands.statusline" in settings["statusLine"]["command"]  # offered too
    assert mode(target) == 0o644  # the user's file keeps its mode
    backups = list(claude.glob("settings.json.tokentop-backup-*"))  # before each write
    assert len(backups) == 2 and all(mode(b) == 0o600 for b in backups)
    assert {"model": "opus"} in [json.loads(b.read_text()) for b in backups]
    assert sorted(p.name for p in dotfiles.iterdir()) == ["settings.json"]  # no temp left


def test_a_symlink_planted_at_the_temp_name_is_never_written_through(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    settings = tmp_path / "settings.json"
    settings.write_text("{}")
    (tmp_path / ".settings.json.tokentop-tmp").symlink_to(victim)  # the old fixed name
    assert cli("hook", "install", "--settings", str(settings), "--yes").returncode == 0
    assert victim.read_text() == "precious\n"
    # Even a planted symlink at the very name chosen is refused (O_EXCL|O_NOFOLLOW):
    monkeypatch.setattr(files, "temp_suffix", lambda: "guessed")
    (tmp_path / ".settings.json.guessed.tmp").symlink_to(victim)
    with pytest.raises(FileExistsError):
        write_atomic(settings, b"{}")
    assert victim.read_text() == "precious\n" and settings.read_text() != ""


def test_write_atomic_and_append_create_private_files(tmp_path: Path) -> None:
    written = write_atomic(tmp_path / "a.bin", b"x")
    assert written == tmp_path / "a.bin" and mode(written) == 0o600
    log = tmp_path / "d" / "log.jsonl"
    append_private(log, b"1\n")
    assert mode(log) == 0o600
    log.chmod(0o644)
    append_private(log, b"2\n")
    assert mode(log) == 0o600 and log.read_bytes() == b"1\n2\n"


def test_existing_db_registry_action_log_and_cache_become_private(tmp_path: Path) -> None:
    claude = tmp_path / "claude"
    transcript = claude / "projects" / "-x" / f"{SESSION}.jsonl"
    write_transcript(transcript, SESSION, "/x", [response(SESSION, "/x", 3000)])
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env |= {"XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "cfg")}
    db = tmp_path / "given.db"
    db.write_bytes(b"")  # an existing 0644 file given with --db (case i)
    db.chmod(0o644)
    done = cli("report", "--db", str(db), "--claude-dir", str(claude), env=env)
    assert done.returncode == 0, done.stderr
    assert mode(db) == 0o600
    assert all(mode(p) == 0o600 for p in tmp_path.glob("given.db*"))
    assert cli("sessions", "--claude-dir", str(claude), env=env).returncode == 0
    caches = list((tmp_path / "cache" / "tokentop").glob("state-*"))
    assert caches and all(mode(c) == 0o600 for c in caches)
    registry = tmp_path / "registry.jsonl"
    registry.write_text("")
    registry.chmod(0o644)
    hook_in = json.dumps({"session_id": SESSION, "hook_event_name": "SessionStart"})
    argv = [sys.executable, "-m", "tokentop.commands.hook", "--registry", str(registry)]
    hooked = subprocess.run(argv, input=hook_in, text=True, env=env, capture_output=True)
    assert hooked.returncode == 0, hooked.stderr
    assert mode(registry) == 0o600 and registry.read_text()


def test_an_existing_action_log_becomes_private(tmp_path: Path) -> None:
    import psutil

    from tokentop.processes.control import ProcessController
    from tokentop.processes.finding import ProcessRef

    log = tmp_path / "actions.jsonl"
    log.write_text("")
    log.chmod(0o644)
    child = subprocess.Popen(["sleep", "30"])
    try:
        ref = ProcessRef(child.pid, psutil.Process(child.pid).create_time(), how="run")
        result = ProcessController(log_path=log).kill(ref, "test", "test")
        assert result.ok, result.message
    finally:
        child.kill()
        child.wait()
    assert mode(log) == 0o600 and json.loads(log.read_text())["ok"]
