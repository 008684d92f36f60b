"""The hook's escalation of an ignored soft stop: pause or kill the agent, from a helper.

A process may not signal its own ancestors (the controller refuses them), and the agent is an
ancestor of the hook that decides to escalate (and of its shell). So the hook starts a helper
in a session of its own, and the helper acts once the process that started it (the hook, or
the hook server's worker for that call) has exited: the helper is then an orphan, no longer
below the agent.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TYPE_CHECKING

from tokentop.model import Action

if TYPE_CHECKING:
    import argparse

    from tokentop.processes.registry import SessionRecord

ACTOR = "hook"
"""How the hook signs the actions it logs."""
AGENT = "claude"
PARENT_WAIT_S = 10.0


def exact_agent(record: SessionRecord) -> bool:
    """Whether escalation may act on the recorded process: one `tokentop run` launched, or one
    the hook found among its ancestors that is still a known agent install."""
    from tokentop.processes.finding import is_agent

    return record.pid > 0 and (record.how == "launched" or is_agent(record.pid))


def spawn_escalation(action: str, record: SessionRecord, reason: str) -> None:
    """Start the helper in its own session; it acts once this process has exited.

    `-P`, in "/", with only the environment it needs: the agent's folder (which may hold a
    `tokentop/` package of its own) is never on its import path, and the agent's secrets
    are not passed on."""
    import contextlib
    import subprocess

    from tokentop.commands.hook_wire import child_env
    from tokentop.processes.finding import launch

    argv = [
        sys.executable, "-P", "-m", "tokentop.commands.hook", "escalate", action,
        "--pid", str(record.pid), "--create-time", repr(record.create_time),
        "--parent", str(os.getpid()), f"--session={record.key}", f"--reason={reason}",
    ]  # fmt: skip
    quiet = subprocess.DEVNULL
    with contextlib.suppress(OSError):  # the block still stands; the guard can act instead
        launch(argv, "/", child_env(), stdin=quiet, stdout=quiet, stderr=quiet)


def escalate(args: argparse.Namespace) -> int:
    """The helper: wait until the hook (our parent `--parent`, a descendant of the agent) has
    gone, so the agent is no longer our ancestor, then pause or kill it and log the action.

    The parent's pid comes in argv: by the time our imports are done it has usually exited
    already, and we have a new parent; only while our parent is still that pid is it alive
    (a pid reused meanwhile cannot be our parent)."""
    from tokentop.processes.control import ProcessController, default_action_log
    from tokentop.processes.finding import ProcessRef

    deadline = time.monotonic() + PARENT_WAIT_S
    while os.getppid() == args.parent and time.monotonic() < deadline:
        time.sleep(0.01)
    ref = ProcessRef(args.pid, args.create_time, how="hook", confident=True, agent=AGENT)
    controller = ProcessController(log_path=default_action_log(), actor=ACTOR)
    verb: Action = "pause" if args.action == "pause" else "kill"
    result = controller.carry_out(verb, ref, args.reason, "policy:soft-stop", session=args.session)
    return 0 if result.ok else 1


def escalate_main(argv: list[str]) -> int:
    """`python -P -m tokentop.commands.hook escalate ACTION --pid N --create-time T --parent P`."""
    import argparse

    p = argparse.ArgumentParser(prog="tokentop.commands.hook escalate", allow_abbrev=False)
    p.add_argument("action", choices=["pause", "kill"])
    p.add_argument("--pid", type=int, required=True)
    p.add_argument("--create-time", type=float, required=True)
    p.add_argument("--parent", type=int, required=True, help="the hook process that started us")
    p.add_argument("--session", default="")
    p.add_argument("--reason", default="")
    return escalate(p.parse_args(argv))
