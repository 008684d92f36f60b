"""Whether a process is a known agent install, judged by where its executable and entry point
live, never by its name alone.

A name is cheap: `python3 claude.py`, `exec -a claude sleep 600` or a copy of `sleep` called
`claude` all look like an agent to `ps`. An install is not: the native `claude` binary lives in
`…/claude/versions/<version>`, Codex's in `node_modules/@openai/codex…/vendor/<triple>/codex/`,
and the npm packages run as node or bun with a script inside `node_modules/<package>/` (the
`claude` on PATH is a symlink to `…/@anthropic-ai/claude-code/cli.js`). Claude Code also sets
its process title, so a node process whose command line is `claude` counts, but only when the
program wrote that title over a longer argv (node pads the rest with NULs, seen as empty
arguments): `exec -a claude node` gives the same first argument without the program doing
anything, and an argv alone never counts.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Sequence

from tokentop.agents import AGENTS

NATIVE: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (agent, re.compile(pattern))
    for agent, pattern in (
        ("claude", r"/claude/versions/[^/]+$"),
        ("claude", r"/Caskroom/claude-code/[^/]+/claude$"),
        ("claude", r"/node_modules/@anthropic-ai/claude-code[^/]*/(?:[^/]+/)*claude(?:\.exe)?$"),
        ("codex", r"/node_modules/@openai/codex[^/]*/vendor/[^/]+/codex/codex(?:\.exe)?$"),
        ("codex", r"/Caskroom/codex/[^/]+/codex(?:-[^/]+)?$"),
        ("codex", r"/Cellar/codex/[^/]+/bin/codex$"),
        ("codex", r"/extensions/openai\.chatgpt-[^/]+/bin/[^/]+/codex$"),
        ("opencode", r"/node_modules/opencode-[^/]+/bin/opencode(?:\.exe)?$"),
        ("opencode", r"/\.opencode/bin/opencode$"),
        ("opencode", r"/Cellar/opencode/[^/]+/bin/opencode$"),
    )
)
"""Native agent binaries: the real path of the executable (/proc/PID/exe)."""
NATIVE += tuple(
    (agent.key, re.compile(pattern)) for agent in AGENTS for pattern in agent.native
)  # the rows of `tokentop.agents` declare the layouts of the agents added since

ENTRY_POINTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple(
    (agent, re.compile(pattern))
    for agent, pattern in (
        ("claude", r"/node_modules/@anthropic-ai/claude-code/"),
        ("codex", r"/node_modules/@openai/codex/"),
        ("gemini", r"/node_modules/@google/gemini-cli/"),
        ("opencode", r"/node_modules/opencode-ai/"),
        ("openclaw", r"/node_modules/openclaw/"),
        ("qwen", r"/node_modules/@qwen-code/qwen-code/"),
        ("cursor-agent", r"/cursor-agent/versions/[^/]+/"),
    )
)
"""Agent packages run by node or bun: the real path of the script on the command line."""
ENTRY_POINTS += tuple(
    (agent.key, re.compile(pattern)) for agent in AGENTS for pattern in agent.entry_points
)

PYTHON_ENTRY_POINTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("aider", re.compile(r"/(?:pipx/venvs|uv/tools)/aider-chat/bin/aider$")),
)
"""Agents installed as Python tools (pipx or uv): the real path of the script."""

TITLES = ("claude", "codex", "gemini", "opencode", "openclaw", "qwen")
"""Process titles an agent sets on itself (node's process.title rewrites argv)."""

JS_RUNTIME = re.compile(r"^(?:node|nodejs|bun)(?:[-_.]?\d+(?:\.\d+)*)?$")
PYTHON = re.compile(r"^(?:python|pypy)(?:\d+(?:\.\d+)*)?$")
NODE_OPTS_WITH_VALUE = frozenset(
    {"-r", "--require", "--import", "--loader", "--experimental-loader", "-C", "--conditions"}
)
DEMO_MODULE = "tokentop.demo.agent"


def agent_install(exe: str, cmdline: Sequence[str], cwd: str = "", *, demo: bool = False) -> str:
    """The agent a process runs when it is a known install ("" when it is not).

    `exe` is the executable's real path, `cmdline` its argv and `cwd` its working directory
    (to resolve a relative script). With `demo`, tokentop's own demo agent counts too.
    """
    if not exe:
        return ""
    runtime = os.path.basename(exe)
    if JS_RUNTIME.match(runtime):
        return _js_agent(cmdline, cwd)
    if PYTHON.match(runtime):
        if demo and _runs_module(cmdline, DEMO_MODULE):
            return "demo"
        return _match(PYTHON_ENTRY_POINTS, _script_path(cmdline, cwd, frozenset()))
    return _match(NATIVE, exe)


def _js_agent(cmdline: Sequence[str], cwd: str) -> str:
    title = list(cmdline)
    while title and not title[-1]:
        title.pop()  # a title written over argv leaves the rest of it as empty strings
    if len(title) == 1 and title[0] in TITLES:
        # The agent set its title over its argv only if something was written over: argv
        # `[name]` alone is what `exec -a name node` gives a stock node.
        return title[0] if len(cmdline) > 1 else ""
    return _match(ENTRY_POINTS, _script_path(cmdline, cwd, NODE_OPTS_WITH_VALUE))


def _match(table: Sequence[tuple[str, re.Pattern[str]]], path: str) -> str:
    if not path:
        return ""
    return next((agent for agent, pattern in table if pattern.search(path)), "")


def _script_path(cmdline: Sequence[str], cwd: str, with_value: frozenset[str]) -> str:
    """The real path of the script an interpreter runs: its first argument that is no option."""
    args = list(cmdline[1:])
    if args[:1] == ["run"]:  # bun run FILE
        args = args[1:]
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in with_value:
            skip = True
        elif arg in ("-e", "--eval", "-p", "--print", "-c", "-m"):
            return ""  # code on the command line, not an installed entry point
        elif not arg.startswith("-"):
            return _real(arg, cwd)
    return ""


def _real(path: str, cwd: str) -> str:
    if not os.path.isabs(path):
        if not cwd:
            return ""
        path = os.path.join(cwd, path)
    return os.path.realpath(path)


def _runs_module(cmdline: Sequence[str], module: str) -> bool:
    return any(a == "-m" and b == module for a, b in itertools.pairwise(cmdline))
