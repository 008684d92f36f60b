"""Kilo CLI sessions: `~/.local/share/kilo/kilo.db`, opencode's schema under Kilo's name.

Kilo CLI (`@kilocode/cli`) is an opencode fork that keeps opencode's SQLite store and its
`message(id, session_id, data)` rows, in its own data dir and file name (seen in peers'
readers of real installs: `.local/share/kilo/kilo.db` read through the opencode schema).
So this is opencode's source with another root and agent name: read-only and
incremental, every assistant message keyed `kilo:<message id>` (see `opencode.py`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from tokentop.sources.base import env_dirs
from tokentop.sources.opencode import OpencodeSource


class KiloSource(OpencodeSource):
    """`kilo.db` (and its `-wal`) in every Kilo data dir."""

    name: ClassVar[str] = "kilo"
    db_stem: ClassVar[str] = "kilo"

    @staticmethod
    def default_dirs(env: Mapping[str, str]) -> list[Path]:
        listed = env_dirs(env, "KILO_DATA_DIR")
        if listed:
            return listed
        home = Path(env.get("HOME") or Path.home())
        return [Path(env.get("XDG_DATA_HOME") or home / ".local" / "share") / "kilo"]
