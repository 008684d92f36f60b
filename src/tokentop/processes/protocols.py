"""What the app needs from process mapping and control, as small protocols.

`tokentop.processes.control.ProcessController` and `ProcessRef` satisfy them; tests pass fakes. Both
are called only from thread workers, since they scan /proc and send signals.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from tokentop.model import Action, SessionSnapshot


class ProcessInfo(Protocol):
    """A mapped process: enough to show in a confirm dialog and to act on."""

    @property
    def pid(self) -> int: ...
    @property
    def cmdline(self) -> Sequence[str]: ...
    @property
    def how(self) -> str:
        """How the mapping was made: "launch", "hook", "open-file", "heuristic"..."""
        ...

    @property
    def confident(self) -> bool:
        """False when the mapping is a guess that the user should check."""
        ...


class ActionOutcome(Protocol):
    @property
    def ok(self) -> bool: ...
    @property
    def message(self) -> str: ...


class ProcessMapper(Protocol):
    def processes_for(self, session: SessionSnapshot) -> ProcessInfo | None:
        """The process running `session`, or None when none is known."""
        ...


class ProcessControl(Protocol):
    """The controller's actions. `ref` is whatever the mapper returned (typed Any so the
    controller may declare its own concrete ref type)."""

    def pause(self, ref: Any, reason: str, origin: str, *, session: str) -> ActionOutcome: ...
    def resume(self, ref: Any, reason: str, origin: str, *, session: str) -> ActionOutcome: ...
    def terminate(self, ref: Any, reason: str, origin: str, *, session: str) -> ActionOutcome: ...
    def kill(self, ref: Any, reason: str, origin: str, *, session: str) -> ActionOutcome: ...


def act(
    controller: ProcessControl, verb: Action, ref: ProcessInfo, origin: str, session: str
) -> ActionOutcome:
    """Run one action, logged under `session` ("agent:id"); a controller that raises anyway
    is reported, not propagated."""
    reason = f"{verb} requested in tokentop"
    method = {
        "pause": controller.pause,
        "resume": controller.resume,
        "terminate": controller.terminate,
        "kill": controller.kill,
    }[verb]
    try:
        return method(ref, reason, origin, session=session)
    except Exception as exc:  # the UI must survive a faulty controller
        return _Failed(f"{verb} pid {ref.pid} failed: {exc}")


class _Failed:
    ok = False

    def __init__(self, message: str) -> None:
        self.message = message
