"""Accepted output from a real git repository made in a temp dir, with fixed author dates."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tokentop.config import History
from tokentop.history.git_output import NOT_A_REPO, assess, check_survival, label_for, parse_log

START = 1_750_000_000.0
"""The session window used below: [START, END]; commits are placed inside and outside it."""
END = START + 3600
COST = 3.0
CFG = History(commit_slack_s=0)


@pytest.fixture(autouse=True)
def isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No user or system git config leaks in (signing, hooks, default branch...)."""
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-global-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for var in ("GIT_DIR", "GIT_WORK_TREE", "GIT_AUTHOR_DATE", "GIT_COMMITTER_DATE"):
        monkeypatch.delenv(var, raising=False)


def git(repo: Path, *args: str, when: float | None = None, email: str = "me@example.com") -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "Me", "GIT_COMMITTER_NAME": "Me"}
    env["GIT_AUTHOR_EMAIL"] = env["GIT_COMMITTER_EMAIL"] = email
    if when is not None:
        env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = f"@{int(when)} +0000"
    done = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def commit(repo: Path, name: str, lines: int, when: float, email: str = "me@example.com") -> str:
    (repo / name).write_text("".join(f"line {i}\n" for i in range(lines)))
    git(repo, "add", name)
    git(repo, "commit", "-q", "-m", f"add {name}", when=when, email=email)
    return git(repo, "rev-parse", "HEAD")


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "me@example.com")
    commit(path, "before.txt", 5, START - 7200)
    return path


def test_commits_inside_the_window_count_and_outside_do_not(repo: Path) -> None:
    inside_a = commit(repo, "a.py", 10, START + 60)
    inside_b = commit(repo, "b.py", 4, END - 1)
    commit(repo, "after.txt", 7, END + 3600)
    value = assess(str(repo), START, END, COST, False, CFG)
    assert value.status == "ok"
    assert [c.sha for c in value.commits] == [inside_b, inside_a]
    assert (value.files_changed, value.lines_added, value.lines_removed) == (2, 14, 0)
    assert value.usd_per_commit == COST / 2
    assert value.label == "leverage"
    assert value.branch == "main"
    assert value.repo == str(repo.resolve())


def test_commit_slack_extends_the_window(repo: Path) -> None:
    commit(repo, "late.py", 3, END + 120)
    assert assess(str(repo), START, END, COST, False, CFG).commits == ()
    slack = History(commit_slack_s=300)
    assert len(assess(str(repo), START, END, COST, False, slack).commits) == 1


def test_other_authors_are_not_counted_unless_configured(repo: Path) -> None:
    commit(repo, "theirs.py", 3, START + 10, email="colleague@example.com")
    commit(repo, "mine.py", 2, START + 20)
    assert len(assess(str(repo), START, END, COST, False, CFG).commits) == 1
    everyone = History(commit_slack_s=0, my_commits_only=False)
    assert len(assess(str(repo), START, END, COST, False, everyone).commits) == 2


def test_modified_and_deleted_lines_are_counted(repo: Path) -> None:
    (repo / "before.txt").write_text("line 0\nchanged\n")
    git(repo, "commit", "-q", "-am", "edit", when=START + 5)
    value = assess(str(repo), START, END, COST, False, CFG)
    assert (value.lines_added, value.lines_removed, value.files_changed) == (1, 4, 1)


def test_reset_away_commit_does_not_survive(repo: Path) -> None:
    commit(repo, "kept.py", 3, START + 10)
    dropped = commit(repo, "dropped.py", 3, START + 20)
    value = assess(str(repo), START, END, COST, False, CFG)
    assert len(value.commits) == 2 and value.surviving is None
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    checked = check_survival(value, COST, CFG, now=END + 99)
    assert checked.surviving == 1
    assert checked.usd_per_surviving_commit == COST
    assert checked.survival_checked_at == END + 99
    assert dropped in {c.sha for c in checked.commits}  # the record keeps what was made


def test_rebase_dropping_a_commit_and_rewording_another(repo: Path) -> None:
    commit(repo, "one.py", 3, START + 10)
    commit(repo, "two.py", 3, START + 20)
    commit(repo, "three.py", 3, START + 30)
    value = assess(str(repo), START, END, COST, False, CFG)
    # Drop "two" by rebasing "three" onto "one": three gets a new sha with the same patch.
    git(repo, "rebase", "-q", "--onto", "HEAD~2", "HEAD~1", when=END + 10)
    assert git(repo, "log", "--format=%s") == "add three.py\nadd one.py\nadd before.txt"
    checked = check_survival(value, COST, CFG, now=END + 60)
    assert checked.surviving == 2
    assert checked.usd_per_surviving_commit == COST / 2


def test_every_commit_gone_means_zero_surviving(repo: Path) -> None:
    commit(repo, "x.py", 3, START + 10)
    value = assess(str(repo), START, END, COST, False, CFG)
    git(repo, "reset", "-q", "--hard", "HEAD~1")
    checked = check_survival(value, COST, CFG, now=END)
    assert checked.surviving == 0 and checked.usd_per_surviving_commit is None


def test_dirty_worktree_without_commit_is_pending(repo: Path) -> None:
    (repo / "wip.py").write_text("x = 1\n")
    value = assess(str(repo), START, END, COST, False, CFG)
    assert (value.label, value.dirty, value.commits) == ("pending", True, ())
    clean = repo / "wip.py"
    clean.unlink()
    assert assess(str(repo), START, END, COST, False, CFG).label == "theater"
    assert assess(str(repo), START, END, COST, True, CFG).label == "pending"


def test_not_a_git_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    value = assess(str(plain), START, END, COST, False, CFG)
    assert value.status == NOT_A_REPO
    assert value.label == "theater"
    assert check_survival(value, COST, CFG, now=END) == value


def test_missing_or_unknown_cwd(tmp_path: Path) -> None:
    assert "not found" in assess(str(tmp_path / "nope"), START, END, COST, True, CFG).status
    unknown = assess("", START, END, 0.0, False, CFG)
    assert unknown.status.startswith("no working directory") and unknown.label == "trivial"


def test_empty_repository_has_no_commits(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    value = assess(str(tmp_path), START, END, COST, False, CFG)
    assert (value.status, value.commits, value.label) == ("ok", (), "theater")


def test_label_table() -> None:
    cfg = History(min_spend_usd=0.5)
    assert label_for(1.0, 2, False, False, cfg) == "leverage"
    assert label_for(1.0, 0, True, False, cfg) == "pending"
    assert label_for(1.0, 0, False, True, cfg) == "pending"
    assert label_for(1.0, 0, False, False, cfg) == "theater"
    assert label_for(0.1, 0, False, False, cfg) == "trivial"


def test_parse_log_binary_and_garbage() -> None:
    out = "\x1eabc\x1f100\x1fme@x\x1fsubj\n-\t-\timg.png\n3\t1\ta.py\n\x1ebroken header\n"
    [(c, email)] = parse_log(out)
    assert (c.sha, c.author_ts, c.files, c.added, c.removed, email) == (
        "abc",
        100.0,
        ("img.png", "a.py"),
        3,
        1,
        "me@x",
    )


def test_a_commit_in_the_first_second_counts(repo: Path) -> None:
    commit(repo, "quick.py", 1, START)  # git stores whole seconds; the session began at .7
    assert len(assess(str(repo), START + 0.7, END, COST, False, CFG).commits) == 1
