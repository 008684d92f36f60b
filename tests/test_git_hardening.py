"""git never runs what a repository's config names: a transcript's cwd pointing at a hostile repo
(fsmonitor, clean filter, textconv, hooks, signature program) makes `tokentop report`, run as a
real process, leave no marker; repositories of another user are not entered; git can be off."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from claude_lines import response, write_transcript
from tokentop.config import History
from tokentop.history.git_output import Commit, GitValue, assess, check_survival

SESSION = "5d7f3c2a-1b4e-4c6d-8e9f-0a1b2c3d4e5f"


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Me", "GIT_COMMITTER_NAME": "Me"}
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = "me@example.com"
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture(autouse=True)
def isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-gitconfig"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))


def hostile_repo(path: Path, markers: Path) -> dict[str, Path]:
    """A repo whose config runs a command from each hook point; returns the marker files."""
    marks = {k: markers / k for k in ("fsmonitor", "clean", "textconv", "hook", "gpg", "diff")}
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    (path / "f.txt").write_text("one\n")
    (path / ".gitattributes").write_text("*.txt filter=evil diff=evil\n")
    git(path, "add", ".")
    git(path, "commit", "-q", "-m", "initial")
    hooks = path / ".git" / "hooks"
    (hooks / "post-index-change").write_text(f"#!/bin/sh\ntouch {marks['hook']}\n")
    (hooks / "post-index-change").chmod(0o755)
    for key, value in (
        ("core.fsmonitor", f"touch {marks['fsmonitor']}; echo"),
        ("filter.evil.clean", f"touch {marks['clean']}; cat"),
        ("diff.evil.textconv", f"touch {marks['textconv']}; cat"),
        ("diff.external", f"touch {marks['diff']}; true"),
        ("log.showSignature", "true"),
        ("gpg.program", f"touch {marks['gpg']}; false"),
    ):
        git(path, "config", key, value)
    (path / "f.txt").write_text("two\n")  # same size, new mtime: status must re-hash it
    os.utime(path / "f.txt", (1e9, 1e9))
    return marks


def test_the_premise_plain_git_runs_the_repo_commands(tmp_path: Path) -> None:
    marks = hostile_repo(tmp_path / "repo", tmp_path)
    git(tmp_path / "repo", "status", "--porcelain")
    git(tmp_path / "repo", "-c", "core.fsmonitor=false", "status", "--porcelain")  # re-hashes
    git(tmp_path / "repo", "log", "-p")
    assert marks["fsmonitor"].exists() and marks["clean"].exists()
    assert marks["textconv"].exists()  # (gpg runs only for signed commits; none here)


def test_report_runs_none_of_them(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    marks = hostile_repo(repo, tmp_path)
    write_transcript(
        tmp_path / "claude" / "projects" / "-repo" / f"{SESSION}.jsonl",
        SESSION,
        str(repo),
        [response(SESSION, str(repo), 2000)],
    )
    time.sleep(1.1)  # a commit inside the session window, so the log is read too
    git(repo, "-c", "core.fsmonitor=false", "-c", "filter.evil.clean=cat", "commit", "-qam", "x")
    for mark in marks.values():
        mark.unlink(missing_ok=True)
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")}
    argv = [sys.executable, "-m", "tokentop.cli", "report", "--format", "md", "--scan", "--db",
            str(tmp_path / "t.db"), "--claude-dir", str(tmp_path / "claude")]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "2 commits" in done.stdout, done.stdout  # git was read, all the same
    assert [m.name for m in marks.values() if m.exists()] == []


def test_survival_check_runs_no_textconv_or_external_diff(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    marks = hostile_repo(repo, tmp_path)
    git(repo, "-c", "filter.evil.clean=cat", "commit", "-qam", "gone soon")
    sha = git(repo, "rev-parse", "HEAD")
    git(repo, "-c", "core.fsmonitor=false", "reset", "-q", "--hard", "HEAD~1")
    for mark in marks.values():
        mark.unlink(missing_ok=True)
    commit = Commit(sha, time.time(), "gone soon", ("f.txt",), 1, 1)
    value = GitValue("ok", "leverage", repo=str(repo), branch="main", commits=(commit,))
    checked = check_survival(value, 1.0, History(), time.time())
    assert checked.surviving == 0  # the patch-id path ran (log -p, show)
    assert [m.name for m in marks.values() if m.exists()] == []


def test_git_off_and_refused_directories(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    marks = hostile_repo(repo, tmp_path)
    off = assess(str(repo), 0, time.time(), 1.0, False, History(git=False))
    assert off.status.startswith("git is off")
    assert assess("-c", 0, 1, 1.0, False, History()).status.startswith("directory not found")
    os.chdir(tmp_path)
    assert "not an absolute path" in assess("repo", 0, 1, 1.0, False, History()).status
    assert [m.name for m in marks.values() if m.exists()] == []


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give a repo to another user")
def test_a_repo_of_another_user_is_not_entered(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    marks = hostile_repo(repo, tmp_path)
    os.chmod(tmp_path, 0o755)
    shutil.chown(repo / ".git", user="nobody")
    value = assess(str(repo), 0, time.time(), 1.0, False, History())
    assert value.status.startswith("repository not owned by you"), value.status
    shutil.chown(repo, user="nobody")
    assert assess(str(repo), 0, 1, 1.0, False, History()).status.startswith("not owned by you")
    assert [m.name for m in marks.values() if m.exists()] == []
