"""Every agent tokentop reads, in one table: its `--KEY-dir` flag and `[roots]` key, the
module and class of its source, and how its installed program is recognised.

Adding an agent is a module under `sources/`, one row here and one in the README's "What
it reads" table: the flags, `[roots]`, the sources every command builds and the process
recognition in `processes/installs.py` all read this table. It is plain data (no source is
imported here), so `--help`, config loading and the hook stay as fast as they were.
"""

from __future__ import annotations

from typing import NamedTuple


class Agent(NamedTuple):
    """One agent's row: `key` is also its sources' `name` (the SessionKey agent)."""

    key: str
    module: str
    cls: str
    help: str
    """What `--KEY-dir` names, for `--help`."""
    native: tuple[str, ...] = ()
    """Regexes over the real path of the agent's own executable (a native binary)."""
    entry_points: tuple[str, ...] = ()
    """Regexes over the real path of the script node or bun runs (the agent's npm package)."""


_SOURCES = "tokentop.sources."

AGENTS: tuple[Agent, ...] = (
    Agent(
        "claude",
        _SOURCES + "claude_code",
        "ClaudeCodeSource",
        "Claude Code config dir (or its projects/ dir); repeatable. "
        "Giving any --*-dir reads only the dirs given.",
    ),
    Agent("codex", _SOURCES + "codex", "CodexSource", "Codex home (holding sessions/); repeatable"),
    Agent(
        "gemini", _SOURCES + "gemini", "GeminiSource", "Gemini CLI home (~/.gemini, holding tmp/)"
    ),
    Agent(
        "openclaw",
        _SOURCES + "openclaw",
        "OpenClawSource",
        "OpenClaw state dir (~/.openclaw, holding agents/)",
    ),
    Agent(
        "opencode",
        _SOURCES + "opencode",
        "OpencodeSource",
        "opencode data dir (~/.local/share/opencode)",
    ),
    Agent(
        "pi",
        _SOURCES + "pi",
        "PiSource",
        "Pi agent dir (~/.pi/agent, holding sessions/)",
        entry_points=(r"/node_modules/@mariozechner/pi-coding-agent/",),
    ),
    Agent(
        "copilot",
        _SOURCES + "copilot",
        "CopilotSource",
        "GitHub Copilot CLI home (~/.copilot, holding session-state/)",
        native=(
            r"/node_modules/@github/copilot-[^/]+/copilot(?:\.exe)?$",
            r"/Caskroom/copilot-cli/[^/]+/copilot$",
        ),
        entry_points=(r"/node_modules/@github/copilot/",),
    ),
    Agent(
        "cline",
        _SOURCES + "cline",
        "ClineSource",
        "Cline CLI data dir (~/.cline/data, holding sessions/) or a VS Code extension's "
        "globalStorage dir (holding tasks/)",
        native=(r"/node_modules/@cline/cli-[^/]+/(?:[^/]+/)*cline(?:\.exe)?$",),
        entry_points=(r"/node_modules/cline/",),
    ),
    Agent(
        "qwen",
        _SOURCES + "qwen",
        "QwenSource",
        "Qwen Code home (~/.qwen, holding projects/)",
    ),  # its install is recognised in processes/installs.py already
    Agent(
        "kimi",
        _SOURCES + "kimi",
        "KimiSource",
        "Kimi Code home (~/.kimi-code, holding sessions/)",
        entry_points=(r"/node_modules/@moonshot-ai/kimi-code/",),
    ),
    Agent(
        "goose",
        _SOURCES + "goose",
        "GooseSource",
        "Goose data dir (~/.local/share/goose, holding sessions/sessions.db)",
        native=(r"/Cellar/block-goose-cli/[^/]+/bin/goose$",),
    ),
    Agent(
        "crush",
        _SOURCES + "crush",
        "CrushSource",
        "Crush data dir (~/.local/share/crush, listing projects) or a project's .crush dir",
        native=(r"/Cellar/crush/[^/]+/bin/crush$",),
        entry_points=(r"/node_modules/@charmland/crush/",),
    ),
    Agent(
        "kilo",
        _SOURCES + "kilo",
        "KiloSource",
        "Kilo CLI data dir (~/.local/share/kilo)",
        native=(r"/node_modules/@kilocode/cli-[^/]+/bin/kilo(?:\.exe)?$",),
        entry_points=(r"/node_modules/@kilocode/cli/",),
    ),
)

BY_KEY: dict[str, Agent] = {agent.key: agent for agent in AGENTS}

LOG_ROOTS: tuple[str, ...] = ("proxy_log", "jsonl")
"""`[roots]` keys that name log files rather than an agent's folders."""

ROOT_KINDS: tuple[str, ...] = (*BY_KEY, *LOG_ROOTS)
"""Every `[roots]` key: the agents, then LiteLLM proxy logs and generic JSONL files."""
