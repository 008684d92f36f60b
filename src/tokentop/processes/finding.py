"""Which process runs a session: launch it ourselves, ask the hook, or guess from psutil.

Exact mappings (launched, hook, open-file) are what automatic actions act on. Every process
found here by scanning (a guess by cwd, a writer of a file, an agent above the hook) must be a
known agent install (`processes/installs.py`), never merely a process with an agent's
name. A guess
is confident only when exactly one process fits and no other live session shares the cwd.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any, Literal

import msgspec
import psutil

from tokentop.processes.installs import agent_install

How = Literal["launched", "hook", "heuristic", "open-file", "exporter"]
EXACT: frozenset[str] = frozenset({"launched", "hook", "open-file", "exporter"})
"""Mappings automatic actions may act on; "heuristic" is a guess that only alerts.
"exporter" is a trace session's process proven to send its spans (processes/exporters.py)."""
Stdio = int | IO[Any] | None

KNOWN_AGENTS: tuple[str, ...] = (
    "claude",
    "codex",
    "gemini",
    "opencode",
    "aider",
    "openclaw",
    "qwen",
    "goose",
    "crush",
    "cursor-agent",
)
"""Names of agent CLIs, for labels only: a name is no evidence (see `processes/installs.py`)."""

INTERPRETERS = ("node", "nodejs", "bun", "deno", "python", "pypy", "uv", "uvx", "pipx", "npx")
SCRIPT_SUFFIXES = (".js", ".mjs", ".cjs", ".ts", ".py", ".exe")


class ProcessRef(msgspec.Struct, frozen=True):
    """A process as tokentop first saw it; `create_time` guards later signals against pid reuse."""

    pid: int
    create_time: float
    cmdline: tuple[str, ...] = ()
    cwd: str = ""
    how: How = "heuristic"
    """How the session was mapped to this process; only "heuristic" can be a guess."""
    confident: bool = False
    """False when the mapping was ambiguous and the user should confirm before acting."""
    agent: str = ""
    """The known agent name the process matched, "" when unknown."""

    @property
    def exact(self) -> bool:
        """Whether automatic actions (policy, guard, hook escalation) may act on it."""
        return self.how in EXACT

    @property
    def command(self) -> str:
        """The command line as one string, for confirm dialogs."""
        return " ".join(self.cmdline)


def ref_for_pid(pid: int, how: How = "hook", confident: bool = True) -> ProcessRef | None:
    """Remember a live process (e.g. a hook's parent agent); None when it is gone or hidden."""
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            started = proc.create_time()
            cmdline = _args(proc.cmdline())
            cwd = _cwd_of(proc)
            agent = _install_of(proc, demo=True) or agent_name(proc.name(), cmdline)
    except psutil.Error:
        return None
    return ProcessRef(pid, started, cmdline, cwd, how, confident, agent)


def launch(
    argv: Sequence[str],
    cwd: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
    *,
    stdin: Stdio = None,
    stdout: Stdio = None,
    stderr: Stdio = None,
) -> tuple[subprocess.Popen[bytes], ProcessRef]:
    """Start `argv` in its own session and process group; raises OSError if it cannot start.

    The new session keeps the agent out of tokentop's terminal signals (Ctrl-C, SIGHUP), so
    only the controller decides when it stops.
    """
    popen = subprocess.Popen(
        list(argv),
        cwd=cwd,
        env=env,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        start_new_session=True,
    )
    try:
        started = psutil.Process(popen.pid).create_time()
    except psutil.Error:
        started = 0.0  # exited already: a zero create_time makes every later signal refuse
    where = os.path.abspath(cwd if cwd is not None else os.getcwd())
    name = os.path.basename(argv[0]) if argv else ""
    ref = ProcessRef(
        popen.pid, started, tuple(argv), where, "launched", True, agent_name(name, argv)
    )
    return popen, ref


def agent_name(name: str, cmdline: Sequence[str], known: Sequence[str] = KNOWN_AGENTS) -> str:
    """The agent a process is named after (its name, argv[0], or the script after an
    interpreter): a label for display, never evidence that it is an agent."""
    candidates = [name]
    if cmdline:
        first = _stem(cmdline[0])
        candidates.append(first)
        if _is_interpreter(first):
            script = next((arg for arg in cmdline[1:] if not arg.startswith("-")), "")
            candidates.append(_stem(script))
    return next((c for c in candidates if c in known), "")


def _stem(arg: str) -> str:
    base = os.path.basename(arg)
    for suffix in SCRIPT_SUFFIXES:
        if base.endswith(suffix):
            return base[: -len(suffix)]
    return base


def _is_interpreter(name: str) -> bool:
    return name in INTERPRETERS or name.startswith(("python", "node"))


def _cwd_of(proc: psutil.Process) -> str:
    try:
        return proc.cwd()
    except psutil.Error:
        return ""


def find_agent_processes() -> list[ProcessRef]:
    """The current user's running known agent installs (how="heuristic", not yet confident).

    A child running the same agent as its parent (the npm `codex` wrapper and its binary)
    is folded into the parent, since every action covers the whole tree.
    """
    uid, me = os.getuid(), os.getpid()
    found: dict[int, tuple[ProcessRef, int]] = {}
    for proc in psutil.process_iter(_SCAN_ATTRS):
        info: dict[str, Any] = proc.info
        if info["pid"] == me or not _is_live_and_ours(info, uid):
            continue
        agent = agent_install(info["exe"] or "", info["cmdline"] or (), info["cwd"] or "")
        if agent:
            found[info["pid"]] = (_scanned_ref(info, agent), info["ppid"] or 0)
    return [ref for ref, ppid in found.values() if not _wrapped(ref, found.get(ppid))]


def match_session(
    cwd: str, candidates: Iterable[ProcessRef], agent: str | None = None, rivals: int = 0
) -> ProcessRef | None:
    """The candidate working in `cwd` (and running `agent`, if given).

    Several candidates in the same cwd, or `rivals` (other live sessions of the agent in that
    cwd), make the match ambiguous: the newest process is returned with confident=False.
    """
    want = _same_path_key(cwd)
    matches = [
        ref
        for ref in candidates
        if ref.cwd and _same_path_key(ref.cwd) == want and (agent is None or ref.agent == agent)
    ]
    if not matches:
        return None
    newest = max(matches, key=lambda ref: ref.create_time)
    return msgspec.structs.replace(
        newest, how="heuristic", confident=len(matches) == 1 and not rivals
    )


def find_by_open_file(path: str | os.PathLike[str]) -> ProcessRef | None:
    """The known agent holding `path` open for writing: an exact mapping (Codex keeps its
    rollout open for the whole session). Readers such as `tail -f`, and writers that are no
    agent install (a log shipper, `sleep 600 3>>rollout.jsonl`), are ignored."""
    target = os.path.realpath(path)
    me = os.getpid()
    writers = [
        pid for pid in _user_pids() if pid != me and _writes_to(pid, target) and is_agent(pid)
    ]
    if not writers:
        return None
    top = next((pid for pid in writers if _ppid(pid) not in writers), writers[0])
    return ref_for_pid(_lift_to_wrapper(top), how="open-file", confident=True)


def find_agent_ancestor(pid: int | None = None) -> ProcessRef | None:
    """The nearest known agent install among `pid`'s ancestors (default: this process's).

    A hook command runs under a shell under the agent, so its parent is not always the agent;
    an ancestor merely named like an agent (a wrapper script, `exec -a claude`) is skipped.
    """
    try:
        start = psutil.Process(pid)
        for proc in start.parents():
            if _install_of(proc):
                return ref_for_pid(_lift_to_wrapper(proc.pid), how="hook", confident=True)
    except psutil.Error:
        return None
    return None


_SCAN_ATTRS = ["pid", "ppid", "name", "exe", "cmdline", "create_time", "uids", "cwd", "status"]


def _is_live_and_ours(info: dict[str, Any], uid: int) -> bool:
    uids = info["uids"]
    live = info["status"] not in (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)
    return live and uids is not None and uids.real == uid


def _scanned_ref(info: dict[str, Any], agent: str) -> ProcessRef:
    cmdline = _args(info["cmdline"] or ())
    started = float(info["create_time"] or 0.0)
    return ProcessRef(info["pid"], started, cmdline, info["cwd"] or "", "heuristic", False, agent)


def _args(cmdline: Sequence[str]) -> tuple[str, ...]:
    """argv without the empty strings a process title written over it leaves behind."""
    args = list(cmdline)
    while args and not args[-1]:
        args.pop()
    return tuple(args)


def _wrapped(ref: ProcessRef, parent: tuple[ProcessRef, int] | None) -> bool:
    return parent is not None and parent[0].agent == ref.agent


def _same_path_key(path: str) -> str:
    return os.path.realpath(os.path.expanduser(path))


def _user_pids() -> list[int]:
    uid = os.getuid()
    pids: list[int] = []
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info["uids"]
        if uids is not None and uids.real == uid:
            pids.append(proc.pid)
    return pids


def _writes_to(pid: int, target: str) -> bool:
    """Whether `pid` has `target` open with write access (Linux /proc; any holder elsewhere)."""
    if not os.path.isdir("/proc/self/fdinfo"):
        try:
            return any(f.path == target for f in psutil.Process(pid).open_files())
        except psutil.Error:
            return False
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    return any(_fd_writes_to(pid, fd, target) for fd in fds)


def _fd_writes_to(pid: int, fd: str, target: str) -> bool:
    try:
        if os.readlink(f"/proc/{pid}/fd/{fd}") != target:
            return False
        with open(f"/proc/{pid}/fdinfo/{fd}") as info:
            flags = next((int(line.split()[1], 8) for line in info if line.startswith("flags:")), 0)
    except (OSError, ValueError, IndexError):
        return False
    return (flags & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)


def _ppid(pid: int) -> int:
    try:
        return psutil.Process(pid).ppid()
    except psutil.Error:
        return -1


def _install_of(proc: psutil.Process, *, demo: bool = False) -> str:
    """The agent `proc` runs when it is a known install; "" otherwise or when hidden."""
    try:
        with proc.oneshot():
            return agent_install(proc.exe(), proc.cmdline(), _cwd_of(proc), demo=demo)
    except psutil.Error:
        return ""


def is_agent(pid: int) -> bool:
    """Whether `pid` is a known agent install (or tokentop's demo agent)."""
    try:
        return bool(_install_of(psutil.Process(pid), demo=True))
    except psutil.Error:
        return False


def _lift_to_wrapper(pid: int) -> int:
    """The parent, when it runs the same agent (the node wrapper of a native binary)."""
    try:
        proc = psutil.Process(pid)
        parent = proc.parent()
        own = _install_of(proc)
        if parent is not None and own and _install_of(parent) == own:
            return parent.pid
    except psutil.Error:
        pass
    return pid
