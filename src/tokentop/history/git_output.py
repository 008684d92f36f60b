"""Accepted output, from git: the commits a session produced, what they cost, and if they survived.

Only the local repository is read (`git` as a subprocess with a timeout; never the network).
A session is labelled from what it left behind: commits are "leverage" (with $/commit), file
changes without a commit are "pending", spend with neither is "theater", and a session that
spent next to nothing is "trivial". Survival is checked later: a commit still reachable from
its branch head (or whose patch is, after a rebase rewrote it) survives; one reset or rebased
away does not.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Sequence
from typing import Literal

import msgspec

from tokentop.config import History

Label = Literal["leverage", "pending", "theater", "trivial"]
NOT_A_REPO = "not a git repository"
NUMSTAT_SEP = "\x1e"
FIELD_SEP = "\x1f"
LOG_FORMAT = f"{NUMSTAT_SEP}%H{FIELD_SEP}%at{FIELD_SEP}%ae{FIELD_SEP}%s"
GIT_OFF = "git is off ([history] git = false)"
PREFILTER_MARGIN_S = 86400
"""`git log --since` filters on committer time; a day of margin covers clock skew, and the
author time (which is what counts) is checked exactly afterwards."""


class Commit(msgspec.Struct, frozen=True):
    sha: str
    author_ts: float
    subject: str
    files: tuple[str, ...]
    added: int
    removed: int


class GitValue(msgspec.Struct, frozen=True):
    """What git says a session produced; `status` is "ok" or why nothing could be read."""

    status: str
    label: Label
    repo: str = ""
    branch: str = ""
    commits: tuple[Commit, ...] = ()
    files_changed: int = 0
    lines_added: int = 0
    lines_removed: int = 0
    usd_per_commit: float | None = None
    dirty: bool = False
    """The worktree had uncommitted changes when the session was assessed."""
    file_changes: bool = False
    """The session called a file-changing tool (from the transcript, git or no git)."""
    surviving: int | None = None
    """Commits still on the branch at the last survival check; None before any check."""
    usd_per_surviving_commit: float | None = None
    survival_checked_at: float = 0.0


class GitError(Exception):
    """A git command failed or timed out; the message is one line for the summary."""


HARDENING = (
    "--no-pager",
    "-c", "core.fsmonitor=false",
    "-c", "core.hooksPath=/dev/null",
    "-c", "core.quotepath=off",
    "-c", "diff.external=",
    "-c", "log.showSignature=false",
    "-c", "color.ui=false",
    "-c", "safe.bareRepository=explicit",
)  # fmt: skip
"""Options before every git command: nothing the repository's config names is run (no
fsmonitor daemon, hooks, external diff or signature program; no implicit bare repository)."""
NO_PROGRAMS = ("--no-ext-diff", "--no-textconv", "--no-color")
"""For commands that print diffs: no external diff or textconv filter from .gitattributes."""
_KEEP_GIT_ENV = frozenset({"GIT_CONFIG_GLOBAL"})
_SHA = re.compile(r"[0-9a-f]{7,64}")


def git_env() -> dict[str, str]:
    """The environment for git: no system config, no optional locks, no prompts, and none of
    the caller's GIT_* variables that would point git at another repository or program."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _KEEP_GIT_ENV}
    env |= {"GIT_CONFIG_NOSYSTEM": "1", "GIT_TERMINAL_PROMPT": "0", "GIT_OPTIONAL_LOCKS": "0"}
    return env | {"LC_ALL": "C", "GIT_ATTR_NOSYSTEM": "1"}


def owned_repo(cwd: str) -> str:
    """Why git must not run in `cwd` ("" when it may): it must be an absolute directory owned
    by this user, inside a repository whose top folder and `.git` are owned by this user too
    (git would otherwise read, and run, config that someone else wrote)."""
    if not os.path.isabs(cwd):
        return f"not an absolute path: {cwd}"
    uid = os.geteuid()
    try:
        if os.stat(cwd).st_uid != uid:
            return f"not owned by you: {cwd}"
        top = _repo_top(cwd)
        if top is None:
            return NOT_A_REPO
        if os.stat(top).st_uid != uid or os.lstat(os.path.join(top, ".git")).st_uid != uid:
            return f"repository not owned by you: {top}"
    except OSError as exc:
        return f"cannot inspect {cwd}: {exc.strerror}"
    return ""


def _repo_top(cwd: str) -> str | None:
    """The nearest folder from `cwd` up that holds `.git`, as git's own discovery finds it."""
    path = os.path.realpath(cwd)
    while True:
        if os.path.lexists(os.path.join(path, ".git")):
            return path
        parent = os.path.dirname(path)
        if parent == path:
            return None
        path = parent


def repo_filters(cwd: str, timeout: float) -> dict[str, str]:
    """Config (as GIT_CONFIG_KEY/VALUE variables) that blanks every clean/smudge/process filter
    the repository's own config defines: `git status` runs a clean filter on a file whose
    stat changed, so a repository could otherwise make it run any command."""
    regexp = r"^filter\..*\.(clean|smudge|process)$"
    try:
        out = run_git(cwd, ["config", "--show-scope", "-z", "--get-regexp", regexp], timeout)
    except GitError as exc:
        if str(exc) != "git config exited 1":  # exit 1, silent: no such key
            raise
        out = ""
    keys = sorted({
        entry.split("\t", 1)[1].split("\n", 1)[0]
        for entry in out.split("\0")
        if "\t" in entry and not entry.startswith(("global\t", "system\t"))
    })  # fmt: skip
    env = {"GIT_CONFIG_COUNT": str(len(keys))}
    for n, key in enumerate(keys):
        env |= {f"GIT_CONFIG_KEY_{n}": key, f"GIT_CONFIG_VALUE_{n}": ""}
    return env


def run_git(
    cwd: str,
    args: Sequence[str],
    timeout: float,
    stdin: bytes | None = None,
    env: dict[str, str] | None = None,
) -> str:
    """Run hardened git in `cwd` (see HARDENING); stdout, or GitError with a short reason.

    `cwd` is only ever the working directory of the process, never an argument."""
    try:
        proc = subprocess.run(
            ["git", *HARDENING, *args],
            cwd=cwd,
            input=stdin,
            capture_output=True,
            timeout=timeout,
            env=git_env() | (env or {}),
            check=False,
        )
    except FileNotFoundError as exc:
        raise GitError(
            "git not found" if exc.filename == "git" else f"no such cwd: {cwd}"
        ) from None
    except subprocess.TimeoutExpired:
        raise GitError(f"git {args[0]} timed out after {timeout:g}s") from None
    except OSError as exc:
        raise GitError(f"git {args[0]}: {exc.strerror}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise GitError(err[0] if err else f"git {args[0]} exited {proc.returncode}")
    return proc.stdout.decode(errors="replace")


def label_for(
    cost_usd: float, commits: int, file_changes: bool, dirty: bool, cfg: History
) -> Label:
    """The session's label from its spend and what it left behind (see module doc)."""
    if commits:
        return "leverage"
    if file_changes or dirty:
        return "pending"
    return "theater" if cost_usd >= cfg.min_spend_usd else "trivial"


def per_commit(cost_usd: float, commits: int | None) -> float | None:
    return cost_usd / commits if commits else None


def assess(
    cwd: str, start: float, end: float, cost_usd: float, file_changes: bool, cfg: History
) -> GitValue:
    """Find the commits in `cwd`'s repository authored in [start, end + slack] and label them."""
    unknown = label_for(cost_usd, 0, file_changes, False, cfg)
    if not cfg.git:
        return GitValue(GIT_OFF, unknown, file_changes=file_changes)
    if not cwd:
        return GitValue("no working directory recorded", unknown, file_changes=file_changes)
    if not os.path.isdir(cwd):
        return GitValue(f"directory not found: {cwd}", unknown, file_changes=file_changes)
    refused = owned_repo(cwd)
    if refused:
        return GitValue(refused, unknown, file_changes=file_changes)
    try:
        return _assess(cwd, start, end, cost_usd, file_changes, cfg)
    except GitError as exc:
        status = NOT_A_REPO if "not a git repository" in str(exc) else str(exc)
        return GitValue(status, unknown, file_changes=file_changes)


def _assess(
    cwd: str, start: float, end: float, cost_usd: float, file_changes: bool, cfg: History
) -> GitValue:
    t = cfg.git_timeout_s
    repo = run_git(cwd, ["rev-parse", "--show-toplevel"], t).strip()
    branch = _branch(cwd, t)
    author = _my_email(cwd, t) if cfg.my_commits_only else ""
    commits = _commits_in(cwd, start, end + cfg.commit_slack_s, author, t)
    status = ["status", "--porcelain", "--untracked-files=normal", "--ignore-submodules=all"]
    dirty = bool(run_git(cwd, status, t, env=repo_filters(cwd, t)).strip())
    files = {f for c in commits for f in c.files}
    return GitValue(
        "ok",
        label_for(cost_usd, len(commits), file_changes, dirty, cfg),
        repo=repo,
        branch=branch,
        commits=tuple(commits),
        files_changed=len(files),
        lines_added=sum(c.added for c in commits),
        lines_removed=sum(c.removed for c in commits),
        usd_per_commit=per_commit(cost_usd, len(commits)),
        dirty=dirty,
        file_changes=file_changes,
    )


def _branch(cwd: str, timeout: float) -> str:
    """The checked-out branch name, or "" when detached or unborn."""
    try:
        return run_git(cwd, ["symbolic-ref", "--quiet", "--short", "HEAD"], timeout).strip()
    except GitError:
        return ""


def _my_email(cwd: str, timeout: float) -> str:
    try:
        return run_git(cwd, ["config", "user.email"], timeout).strip()
    except GitError:
        return ""  # no identity configured: count every author


def _has_head(cwd: str, timeout: float) -> bool:
    try:
        run_git(cwd, ["rev-parse", "--verify", "--quiet", "HEAD^{commit}"], timeout)
    except GitError:
        return False
    return True


def _commits_in(cwd: str, start: float, end: float, author: str, timeout: float) -> list[Commit]:
    """Commits on local branches (and a detached HEAD) authored within [start, end]."""
    if not _has_head(cwd, timeout):
        return []
    since = int(start) - PREFILTER_MARGIN_S
    out = run_git(
        cwd,
        ["log", *NO_PROGRAMS, "--no-show-signature", "--branches", "HEAD", f"--since={since}",
         "--no-renames", "--numstat", f"--format={LOG_FORMAT}"],
        timeout,
    )  # fmt: skip
    first = float(int(start))  # git keeps whole seconds: a commit in start's second counts
    commits = [c for c in parse_log(out) if first <= c[0].author_ts <= end]
    return [c for c, email in commits if not author or email.lower() == author.lower()]


def parse_log(out: str) -> list[tuple[Commit, str]]:
    """Parse `git log --numstat --format=LOG_FORMAT` into commits and author emails."""
    found: list[tuple[Commit, str]] = []
    for chunk in out.split(NUMSTAT_SEP)[1:]:
        head, _, stats = chunk.partition("\n")
        parts = head.split(FIELD_SEP)
        if len(parts) != 4:
            continue
        sha, ts, email, subject = parts
        files: list[str] = []
        added = removed = 0
        for line in stats.splitlines():
            cols = line.split("\t", 2)
            if len(cols) != 3:
                continue
            added += int(cols[0]) if cols[0].isdigit() else 0  # "-" for binary files
            removed += int(cols[1]) if cols[1].isdigit() else 0
            files.append(cols[2])
        found.append((Commit(sha, float(ts), subject, tuple(files), added, removed), email))
    return found


def check_survival(value: GitValue, cost_usd: float, cfg: History, now: float) -> GitValue:
    """Re-check which of the session's commits are still on its branch; unchanged on error."""
    if not cfg.git or value.status != "ok" or not value.commits or not os.path.isdir(value.repo):
        return value
    if owned_repo(value.repo):
        return value
    try:
        surviving = _surviving(value, cfg.git_timeout_s)
    except GitError:
        return value
    return msgspec.structs.replace(
        value,
        surviving=surviving,
        usd_per_surviving_commit=per_commit(cost_usd, surviving),
        survival_checked_at=now,
    )


def _surviving(value: GitValue, timeout: float) -> int:
    head = _head_of(value.repo, value.branch, timeout)
    if not head:
        return 0
    count = 0
    missing: list[Commit] = []
    for commit in value.commits:
        if not _SHA.fullmatch(commit.sha):
            continue  # a stored sha is only ever hex; anything else is not passed to git
        if _is_ancestor(value.repo, commit.sha, head, timeout):
            count += 1
        else:
            missing.append(commit)
    if missing:
        since = int(min(c.author_ts for c in missing)) - PREFILTER_MARGIN_S
        log = ["log", *NO_PROGRAMS, "--no-show-signature", "-p", f"--since={since}", head]
        on_branch = _patch_ids(value.repo, log, timeout)
        count += sum(1 for c in missing if _patch_id(value.repo, c.sha, timeout) in on_branch)
    return count


def _head_of(repo: str, branch: str, timeout: float) -> str:
    """The branch's head commit; HEAD when the branch is gone or was never known."""
    for ref in ([f"refs/heads/{branch}"] if branch else []) + ["HEAD"]:
        try:
            out = run_git(repo, ["rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}"], timeout)
            return out.strip()
        except GitError:
            continue
    return ""


def _is_ancestor(repo: str, sha: str, head: str, timeout: float) -> bool:
    try:
        run_git(repo, ["merge-base", "--is-ancestor", sha, head], timeout)
    except GitError:
        return False  # exit 1 (not an ancestor) or the object is gone
    return True


def _patch_ids(repo: str, log_args: list[str], timeout: float) -> set[str]:
    """Stable patch ids of the commits `git log -p` prints: the same change, whatever its sha."""
    patches = run_git(repo, log_args, timeout).encode()
    out = run_git(repo, ["patch-id", "--stable"], timeout, stdin=patches)
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def _patch_id(repo: str, sha: str, timeout: float) -> str:
    try:
        ids = _patch_ids(repo, ["show", *NO_PROGRAMS, "--format=commit %H", sha], timeout)
    except GitError:
        return ""  # the commit object is gone (gc): it cannot have survived
    return next(iter(ids), "")
