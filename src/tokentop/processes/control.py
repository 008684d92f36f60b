"""Map agent sessions to processes, and pause, resume, terminate or kill them safely.

Every action re-checks the pid's `create_time`, which must equal the remembered one exactly (a
reused pid is refused), never touches
tokentop itself or its ancestors, signals only the current user's processes, returns an
`ActionResult` instead of raising, and is appended to a JSONL action log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Literal

import msgspec
import psutil

from tokentop.clock import Clock, SystemClock
from tokentop.files import append_private
from tokentop.model import Action
from tokentop.processes.action_log import (  # here too: where callers have found them
    ActionResult as ActionResult,
)
from tokentop.processes.action_log import LoggedAction as LoggedAction
from tokentop.processes.action_log import default_action_log as default_action_log
from tokentop.processes.action_log import read_action_log as read_action_log
from tokentop.processes.finding import ProcessRef

ProcessState = Literal["running", "stopped", "gone", "unknown"]
"""What a process is doing now, as the OS says (a table row's state is the UI's own)."""

KILL_WAIT = 2.0
"""Seconds to wait for SIGKILLed processes to disappear before reporting survivors."""
_STOPPED = (psutil.STATUS_STOPPED, psutil.STATUS_TRACING_STOP)
_ENDED = (psutil.STATUS_ZOMBIE, psutil.STATUS_DEAD)


class _Refused(Exception):
    """An action was refused before any signal was sent."""


class ProcessController:
    """Signals process trees on behalf of the UI, the policy and the CLI; never raises."""

    def __init__(
        self,
        log_path: Path | None = None,
        clock: Clock | None = None,
        settle: float = 2.0,
        actor: str = "",
    ) -> None:
        self._log_path = log_path
        self.actor = actor
        """Which tokentop process this is, in every action it logs."""
        self._clock: Clock = clock or SystemClock()
        self._settle = settle
        """Seconds pause/resume wait to see the state change before reporting failure."""
        self._lock = threading.Lock()

    def pause(
        self, ref: ProcessRef, reason: str = "", origin: str = "", *, session: str = ""
    ) -> ActionResult:
        """SIGSTOP the tree, parent first so it cannot spawn new children meanwhile."""
        return self._act("pause", ref, reason, origin, session, self._pause)

    def resume(
        self, ref: ProcessRef, reason: str = "", origin: str = "", *, session: str = ""
    ) -> ActionResult:
        """SIGCONT the tree, children first so the parent never sees them stopped."""
        return self._act("resume", ref, reason, origin, session, self._resume)

    def terminate(
        self,
        ref: ProcessRef,
        reason: str = "",
        origin: str = "",
        grace: float = 3.0,
        *,
        session: str = "",
    ) -> ActionResult:
        """SIGTERM the tree (SIGCONT the stopped ones), wait `grace` s, SIGKILL survivors."""
        return self._act(
            "terminate", ref, reason, origin, session, lambda p: self._terminate(p, grace)
        )

    def kill(
        self, ref: ProcessRef, reason: str = "", origin: str = "", *, session: str = ""
    ) -> ActionResult:
        """SIGKILL the whole tree at once."""
        return self._act("kill", ref, reason, origin, session, self._kill)

    def carry_out(
        self, verb: Action, ref: ProcessRef, reason: str = "", origin: str = "", *, session: str
    ) -> ActionResult:
        """Execute what was decided (a Watchdog decision's action, a confirmed key): the
        front-ends name the verb, none picks a signal."""
        method = {
            "pause": self.pause,
            "resume": self.resume,
            "terminate": self.terminate,
            "kill": self.kill,
        }[verb]
        return method(ref, reason, origin, session=session)

    def status(self, ref: ProcessRef) -> ProcessState:
        """The process's state now; a reused pid or a zombie counts as gone."""
        try:
            proc = psutil.Process(ref.pid)
            if not same_process(proc.create_time(), ref):
                return "gone"
            state = proc.status()
        except psutil.NoSuchProcess:
            return "gone"
        except psutil.Error:
            return "unknown"
        if state in _ENDED:
            return "gone"
        return "stopped" if state in _STOPPED else "running"

    def _act(
        self,
        action: Action,
        ref: ProcessRef,
        reason: str,
        origin: str,
        session: str,
        run: Callable[[psutil.Process], tuple[bool, list[int], str]],
    ) -> ActionResult:
        try:
            ok, pids, message = run(_checked_process(ref))
        except _Refused as refused:
            ok, pids, message = False, [], str(refused)
        except psutil.NoSuchProcess:
            ok, pids, message = (
                False,
                [],
                f"Nothing to do: pid {ref.pid} exited while being signalled.",
            )
        except Exception as error:  # the controller must never raise into the UI
            ok, pids, message = False, [], f"{action} of pid {ref.pid} failed: {error!r}"
        result = ActionResult(
            action, ok, tuple(pids), message, reason, origin, self._clock.now(), ref.pid, session,
            self.actor,
        )  # fmt: skip
        return self._log(result)

    def log(self, result: ActionResult) -> ActionResult:
        """Record an action taken another way (the hook blocking a tool call)."""
        return self._log(msgspec.structs.replace(result, actor=result.actor or self.actor))

    def _log(self, result: ActionResult) -> ActionResult:
        """Append one line; a log failure is reported in the message, never raised."""
        if self._log_path is None:
            return result
        line = msgspec.json.encode(result) + b"\n"
        try:
            with self._lock:
                append_private(self._log_path, line)
        except OSError as error:
            note = f" (not recorded in {self._log_path}: {error.strerror or error})"
            return msgspec.structs.replace(result, message=result.message + note)
        return result

    def _pause(self, proc: psutil.Process) -> tuple[bool, list[int], str]:
        proc.send_signal(signal.SIGSTOP)
        pids = [proc.pid, *_signal_all(_children(proc), signal.SIGSTOP)]
        if not _wait_for(lambda: _is_stopped(proc), self._settle):
            return False, pids, f"Sent SIGSTOP to {_describe(proc)} but it has not stopped."
        return True, pids, f"Paused {_describe(proc)}{_plus_children(len(pids) - 1)}."

    def _resume(self, proc: psutil.Process) -> tuple[bool, list[int], str]:
        children = _children(proc)
        pids = [*_signal_all(reversed(children), signal.SIGCONT), proc.pid]
        proc.send_signal(signal.SIGCONT)
        if not _wait_for(lambda: not _is_stopped(proc), self._settle):
            return False, pids, f"Sent SIGCONT to {_describe(proc)} but it is still stopped."
        return True, pids, f"Resumed {_describe(proc)}{_plus_children(len(pids) - 1)}."

    def _terminate(self, proc: psutil.Process, grace: float) -> tuple[bool, list[int], str]:
        what = _describe(proc)
        tree = [proc, *_children(proc)]
        stopped = [p for p in tree if _is_stopped(p)]
        pids = _signal_all(tree, signal.SIGTERM)
        # A stopped process acts on SIGTERM only once it is continued.
        _signal_all(stopped, signal.SIGCONT)
        survivors = _wait_gone(tree, grace)
        if not survivors:
            return True, pids, f"Terminated {what}{_plus_children(len(tree) - 1)}."
        _signal_all(survivors, signal.SIGKILL)
        left = _wait_gone(survivors, KILL_WAIT)
        if left:
            return False, pids, f"{what}: {len(left)} process(es) survived SIGKILL: {_pids(left)}."
        killed = f"{len(survivors)} process(es) ignored SIGTERM for {grace:g} s and were killed"
        return True, pids, f"Terminated {what}: {killed} ({_pids(survivors)})."

    def _kill(self, proc: psutil.Process) -> tuple[bool, list[int], str]:
        what = _describe(proc)
        proc.send_signal(signal.SIGSTOP)  # freeze the parent so the snapshot of children holds
        tree = [proc, *_children(proc)]
        pids = _signal_all(tree, signal.SIGKILL)
        left = _wait_gone(tree, KILL_WAIT)
        if left:
            return False, pids, f"{what}: {len(left)} process(es) survived SIGKILL: {_pids(left)}."
        return True, pids, f"Killed {what}{_plus_children(len(tree) - 1)}."


def same_process(create_time: float, ref: ProcessRef) -> bool:
    """Whether a process started at `create_time` is the one `ref` remembers. psutil reports
    the same float for the same process (boot time + clock ticks since boot), so any
    difference, however small, means the pid was reused."""
    return create_time == ref.create_time


def _protected_pids() -> set[int]:
    """tokentop itself, its parent and every ancestor: never signalled."""
    pids = {0, 1, os.getpid(), os.getppid()}
    with contextlib.suppress(psutil.Error):
        pids.update(p.pid for p in psutil.Process().parents())
    return pids


def _checked_process(ref: ProcessRef) -> psutil.Process:
    """The live process behind `ref`, or _Refused with a sentence saying why not."""
    if ref.pid in _protected_pids():
        raise _Refused(f"Refused: pid {ref.pid} is tokentop itself or one of its parents.")
    try:
        proc = psutil.Process(ref.pid)
        started = proc.create_time()
        uid = proc.uids().real
        state = proc.status()
    except psutil.NoSuchProcess:
        raise _Refused(f"Nothing to do: pid {ref.pid} has already exited.") from None
    except psutil.AccessDenied:
        raise _Refused(f"Refused: no permission to inspect pid {ref.pid}.") from None
    if not same_process(started, ref):
        raise _Refused(
            f"Refused: pid {ref.pid} now belongs to a different process (started "
            f"{_clock_time(started)}, expected {_clock_time(ref.create_time)}); "
            "the original has exited and its pid was reused."
        )
    if uid != os.getuid():
        raise _Refused(f"Refused: pid {ref.pid} belongs to another user (uid {uid}).")
    if state in _ENDED:
        raise _Refused(f"Nothing to do: pid {ref.pid} has already exited.")
    return proc


def _children(proc: psutil.Process) -> list[psutil.Process]:
    """Descendants that are ours to signal (same user, not tokentop or its ancestors)."""
    protected = _protected_pids()
    uid = os.getuid()
    mine: list[psutil.Process] = []
    for child in proc.children(recursive=True):
        try:
            if child.pid not in protected and child.uids().real == uid:
                mine.append(child)
        except psutil.Error:
            continue
    return mine


def _signal_all(procs: Iterable[psutil.Process], sig: int) -> list[int]:
    """Send `sig` to each process that still exists; returns the pids reached."""
    reached: list[int] = []
    for proc in procs:
        try:
            proc.send_signal(sig)
            reached.append(proc.pid)
        except psutil.Error:
            continue
    return reached


def _is_stopped(proc: psutil.Process) -> bool:
    try:
        return proc.status() in _STOPPED
    except psutil.Error:
        return False


def _is_running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() not in _ENDED
    except psutil.NoSuchProcess:
        return False
    except psutil.Error:
        return True


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """psutil.wait_procs, polled, so our children are reaped and others' zombies count as gone."""
    deadline = time.monotonic() + timeout
    alive = procs
    while True:
        _, alive = psutil.wait_procs(alive, timeout=0)
        alive = [p for p in alive if _is_running(p)]
        if not alive or time.monotonic() >= deadline:
            return alive
        time.sleep(0.05)


def _wait_for(condition: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


def _describe(proc: psutil.Process) -> str:
    try:
        return f"pid {proc.pid} ({proc.name()})"
    except psutil.Error:
        return f"pid {proc.pid}"


def _plus_children(count: int) -> str:
    if count == 0:
        return ""
    return f" and {count} child process" + ("" if count == 1 else "es")


def _pids(procs: list[psutil.Process]) -> str:
    return ", ".join(str(p.pid) for p in procs)


def _clock_time(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
