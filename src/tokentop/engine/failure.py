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
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > MAX_LOG_BYTES:
            path.replace(path.with_suffix(".log.1"))
        with path.open("a", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')}\n{text}\n")
    except OSError:
        return ""
    return str(path)
