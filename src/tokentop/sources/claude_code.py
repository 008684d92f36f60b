"""Claude Code transcripts: `projects/<escaped-cwd>/<session>.jsonl` (+ subagent files).

One API response is written as one line per content block, every line carrying the same
`message.id` and a usage snapshot that may grow (output 8, then 322). Each response becomes a
UsageEvent keyed `claude:<message.id>` (claude_parser.py); the ledger keeps the largest copy
of a key, which also folds sidechain replays and resumed-session copies found in other files.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import ClassVar

from tokentop.sources.base import DirSource, env_dirs, name_text
from tokentop.sources.base import short_hash as short_hash  # the digest of a tool's input
from tokentop.sources.claude_parser import AGENT, ClaudeFileParser

__all__ = ["AGENT", "ClaudeCodeSource", "ClaudeFileParser", "short_hash"]

# -- source ---------------------------------------------------------------------------------


class ClaudeCodeSource(DirSource):
    """Finds Claude Code's `projects/` folders the way Claude Code and ccusage do."""

    name: ClassVar[str] = AGENT
    layout: ClassVar[str] = (
        "DIR/projects/<project>/<session>.jsonl, or DIR/<project>/<session>.jsonl"
    )

    def __init__(
        self, config_dirs: list[Path] | None = None, env: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(config_dirs, env)

    @staticmethod
    def default_dirs(env: Mapping[str, str]) -> list[Path]:
        return default_config_dirs(env)

    def roots_in(self, folder: Path) -> list[Path]:
        return [projects_dir(folder)]

    def new_parser(self, path: Path) -> ClaudeFileParser:
        parent = subagent_parent(path)
        return ClaudeFileParser(
            path=name_text(path),
            session_id=name_text(parent or path.stem),
            session_from_path=bool(parent),
        )


def default_config_dirs(env: Mapping[str, str]) -> list[Path]:
    """`$CLAUDE_CONFIG_DIR` (comma list) if set, else both XDG and legacy locations."""
    listed = env_dirs(env, "CLAUDE_CONFIG_DIR")
    if listed:
        return listed
    home = Path(env.get("HOME") or Path.home())
    xdg = env.get("XDG_CONFIG_HOME") or str(home / ".config")
    return [Path(xdg) / "claude", home / ".claude"]


def projects_dir(folder: Path) -> Path:
    """A config dir's `projects/`, or the folder itself when it already is one: named
    `projects`, or, whatever its name, holding project folders of transcripts (a copy of
    someone's `projects/`) and no `projects/` of its own."""
    if (folder / "projects").is_dir():
        return folder / "projects"
    if folder.name == "projects" or holds_projects(folder):
        return folder
    return folder / "projects"


def holds_projects(folder: Path) -> bool:
    """Whether a sub-folder of `folder` holds `*.jsonl` files directly (a project folder)."""
    try:
        subs = [e for e in os.scandir(folder) if e.is_dir(follow_symlinks=True)]
        return any(name.endswith(".jsonl") for sub in subs[:MAX_PEEK] for name in _names(sub.path))
    except OSError:
        return False


def _names(folder: str) -> list[str]:
    try:
        return os.listdir(folder)
    except OSError:
        return []


MAX_PEEK = 200
"""Sub-folders looked into before a folder is taken for a config dir (its projects/ absent)."""


def subagent_parent(path: Path) -> str:
    """The parent session of `<parent>/subagents/agent-*.jsonl`, else ""."""
    if path.parent.name == "subagents" and path.name.startswith("agent-"):
        return path.parent.parent.name
    return ""
