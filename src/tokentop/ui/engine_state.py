"""The part of TokentopApp that tells when the engine is down: a banner, then a restart.

Numbers from an engine that stopped must not pass for live ones: the banner says since when
they are frozen, why, and where the traceback is; ticks stop re-evaluating them; the engine
is restarted, backing off when it keeps failing.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from textual import work
from textual.css.query import NoMatches

from tokentop.engine.failure import EngineFailure
from tokentop.ui.insights import InsightsApp
from tokentop.ui.messages import EngineFailed
from tokentop.ui.screens.main import MainScreen


def main_screen(app: InsightsApp) -> MainScreen:
    return next(s for s in app.screen_stack if isinstance(s, MainScreen))


class EngineStateApp(InsightsApp):
    """The red banner and the restart; `engine_down` pauses the app's ticks."""

    engine: Any

    def init_engine_state(self) -> None:
        self.engine_failure: EngineFailure | None = None
        self.engine_down = False
        self._failures: list[float] = []

    def listen_for_failure(self, engine: Any) -> None:
        add_failure_listener = getattr(engine, "add_failure_listener", None)
        if add_failure_listener is not None:
            add_failure_listener(lambda f: self.post_message(EngineFailed(f)))
        if (failure := getattr(engine, "failure", None)) is not None:
            self.post_message(EngineFailed(failure))  # it failed before we listened

    def on_engine_failed(self, message: EngineFailed) -> None:
        """Say the numbers are frozen and why, then restart (backing off if it keeps failing)."""
        if message.failure is self.engine_failure:
            return  # reported twice: failed while the app was starting to listen
        self.engine_failure, self.engine_down = message.failure, True
        now = time.monotonic()
        self._failures = [t for t in self._failures if now - t < 300] + [now]
        self._show_banner()
        self.set_timer(min(60.0, 2.0 ** len(self._failures)), self._restart_engine)

    @work(thread=True, group="engine")
    def _restart_engine(self) -> None:
        self.engine.restart()
        self.call_from_thread(self._restarted)

    def _restarted(self) -> None:
        self.engine_down = False
        self._show_banner()

    def _show_banner(self) -> None:
        failure = self.engine_failure
        if failure is None:
            return
        at = time.strftime("%H:%M:%S", time.localtime(failure.at))
        log = f"  log: {failure.log}" if failure.log else ""
        if self.engine_down:
            text = (
                f"⚠ engine stopped at {at}: {failure.reason}; numbers are frozen, restarting…{log}"
            )
        else:
            text = f"engine restarted after it stopped at {at}: {failure.reason}{log}"
        with contextlib.suppress(NoMatches, StopIteration):  # else shown once it is mounted
            main_screen(self).show_banner(text, failed=self.engine_down)
