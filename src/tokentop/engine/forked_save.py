"""The cache saved by a forked child while this process goes on (a first `report`).

Why: after a first scan of a long history, a report spends ~0.17 s saving the cache
(hashing, sorting and writing the dedupe index) and ~0.3 s recording a summary of every
session; both only read the scanned state, so on a second core they overlap (issue #23: a
first report within 1.5 x the cold scan). A fork is safe only while the process has one
thread (a lock another thread held would stay held in the child), as for the cold scan's
forked worker; otherwise, and off Linux, the cache is saved here, before going on.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING

from tokentop.engine.coldscan import detach_child, fork_is_safe

if TYPE_CHECKING:
    from tokentop.engine.engine import Engine


class PendingSave:
    """A save under way in a child (`pid`) of the engine's state at `mark`, with the id
    `save_id`; or done already (`pid` None)."""

    def __init__(
        self, engine: Engine, pid: int | None, mark: tuple[int, int, int] = (0, 0, 0),
        save_id: str = "",
    ) -> None:  # fmt: skip
        self.engine, self.pid, self.mark, self.save_id = engine, pid, mark, save_id

    def wait(self) -> None:
        """Until the cache is written: if the child failed, it is saved here."""
        if self.pid is None:
            return
        pid, self.pid = self.pid, None
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            status = 1
        if os.waitstatus_to_exitcode(status) == 0:
            self.engine.saved_elsewhere(self.mark, self.save_id)
        else:
            self.engine.save_cache()


def save_beside(engine: Engine) -> PendingSave:
    """Save `engine`'s cache in a forked child where that is safe, else now."""
    if engine.cache_path is None or not fork_is_safe():
        engine.save_cache()
        return PendingSave(engine, None)
    mark, save_id = engine.change_mark(), os.urandom(16).hex()
    pid = os.fork()
    if pid == 0:  # the child: never returns into the caller
        code = 1
        try:
            detach_child(keep=())
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                # Ctrl+C reaches the whole group: a save cut short would leave its
                # temporary files behind, and it ends within a second anyway
                signal.signal(sig, signal.SIG_IGN)
            engine.save_cache(save_id)
            code = 0 if not engine.cache_note.startswith("cache not saved") else 1
        finally:
            os._exit(code)
    return PendingSave(engine, pid, mark, save_id)
