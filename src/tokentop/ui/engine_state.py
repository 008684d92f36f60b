"""EngineHealth: tells when the engine is down (a red banner), then restarts it.

Numbers from an engine that stopped must not pass for live ones: the banner says since when
they are frozen, why, and where the traceback is; the engine is restarted, backing off when
it keeps failing. Owned by the app, which routes EngineFailed here.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from textual.css.query import NoMatches

from tokentop.engine.failure import EngineFailure
from tokentop.ui.messages import EngineFailed
from tokentop.ui.screens.main import MainScreen

if TYPE_CHECKING:
    from textual.app import App


class EngineHealth:
    def __init__(self, app: App[None], engine: Any) -> None:
        self.app = app
        self.engine = engine
        self.failure: EngineFailure | None = None
        self.down = False
        self._failures: list[float] = []

    def listen(self) -> None:
        add_failure_listener = getattr(self.engine, "add_failure_listener", None)
        if add_failure_listener is not None:
            add_failure_listener(lambda f: self.app.post_message(EngineFailed(f)))
        if (failure := getattr(self.engine, "failure", None)) is not None:
            self.app.post_message(EngineFailed(failure))  # it failed before we listened

    def failed(self, failure: EngineFailure) -> None:
        """Say the numbers are frozen and why, then restart (backing off if it keeps failing)."""
        if failure is self.failure:
            return  # reported twice: failed while the app was starting to listen
        self.failure, self.down = failure, True
        now = time.monotonic()
        self._failures = [t for t in self._failures if now - t < 300] + [now]
        self.show_banner()
        self.app.set_timer(min(60.0, 2.0 ** len(self._failures)), self._restart)

    def _restart(self) -> None:
        self.app.run_worker(self._restart_engine, thread=True, group="engine")

    def _restart_engine(self) -> None:
        self.engine.restart()
        self.app.call_from_thread(self._restarted)

    def _restarted(self) -> None:
        self.down = False
        self.show_banner()

    def show_banner(self) -> None:
        failure = self.failure
        if failure is None:
            return
        at = time.strftime("%H:%M:%S", time.localtime(failure.at))
        log = f"  log: {failure.log}" if failure.log else ""
        if self.down:
            text = (
                f"⚠ engine stopped at {at}: {failure.reason}; numbers are frozen, restarting…{log}"
            )
        else:
            text = f"engine restarted after it stopped at {at}: {failure.reason}{log}"
        with contextlib.suppress(NoMatches, StopIteration):  # else shown once it is mounted
            main = next(s for s in self.app.screen_stack if isinstance(s, MainScreen))
            main.show_banner(text, failed=self.down)
