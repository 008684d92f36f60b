"""When the engine's live loop fails: the reason, and a traceback in a log file.

A monitor that stops counting must say so: front-ends show `EngineFailure.line()` (the app
in a red banner, `watch`/`guard`/`run` on stderr before exiting non-zero), and the full
traceback goes to a log in the user state dir, where a bug report can quote it.
"""

from __future__ import annotations

import time
import traceback
from pathlib import Path

import msgspec

from tokentop.dirs import user_dir
from tokentop.files import append_private

LOG_NAME = "engine.log"
MAX_LOG_BYTES = 1 << 20


class EngineFailure(msgspec.Struct, frozen=True):
    reason: str
    log: str
    """The log file holding the traceback ("" when it could not be written)."""
    at: float

    def line(self) -> str:
        where = f" (details: {self.log})" if self.log else ""
        return f"tokentop: the engine stopped: {self.reason}{where}"


def failure_of(exc: BaseException) -> EngineFailure:
    """Describe `exc` and append its traceback to the log."""
    reason = f"{type(exc).__name__}: {exc}"[:300]
    text = "".join(traceback.format_exception(exc))
    return EngineFailure(reason, _append_log(text), time.time())


def log_path() -> Path:
    return user_dir("state") / LOG_NAME


def _append_log(text: str) -> str:
    path = log_path()
    try:
        if path.exists() and path.stat().st_size > MAX_LOG_BYTES:
            path.replace(path.with_suffix(".log.1"))
        entry = f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n{text}\n"
        append_private(path, entry.encode("utf-8", "backslashreplace"))
    except OSError:
        return ""
    return str(path)
