"""The user's cache/config/data folders, without importing platformdirs on Linux.

Startup time is part of a warm restart; platformdirs costs ~10 ms to import. On Linux the
rule is the XDG one platformdirs also applies; elsewhere platformdirs decides.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Literal

Kind = Literal["cache", "config", "data", "state"]
_XDG = {
    "cache": ("XDG_CACHE_HOME", ".cache"),
    "config": ("XDG_CONFIG_HOME", ".config"),
    "data": ("XDG_DATA_HOME", ".local/share"),
    "state": ("XDG_STATE_HOME", ".local/state"),
}


def user_dir(kind: Kind, app: str = "tokentop") -> Path:
    if sys.platform.startswith("linux"):
        var, default = _XDG[kind]
        base = os.environ.get(var, "").strip()
        if not os.path.isabs(base):  # unset or relative: the XDG spec says ignore it
            base = str(Path.home() / default)
        return Path(base) / app
    import platformdirs

    return Path(getattr(platformdirs, f"user_{kind}_dir")(app))
