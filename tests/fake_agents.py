"""Realistic fake agent installs in a temp dir, laid out as the real installers lay them out.

tokentop recognises agents by install layout (`tokentop.processes.installs`), not by name, so a test
agent must look like one: the native Claude Code binary in `…/claude/versions/<v>` behind a
`~/.local/bin/claude` symlink, Codex's vendored binary, or node running a package's entry
point through the npm bin symlink. The "binaries" are copies of `sleep`; the npm packages are
small JavaScript files run by a real `node`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

NODE = shutil.which("node") or shutil.which("nodejs")
needs_node = pytest.mark.skipif(NODE is None, reason="node is not installed here")

SLEEPER = "setTimeout(() => {}, 600000);\n"
APPENDER = (
    "const fs = require('fs');\n"
    "const fd = fs.openSync(process.argv[2], 'a');\n"
    "setInterval(() => fs.fstatSync(fd), 1000);\n"
)
"""Holds the file named by its first argument open for append, as Codex holds its rollout."""
SHELL = (
    "const r = require('child_process').spawnSync('/bin/sh', ['-c', process.argv[2]],"
    " {stdio: 'inherit'});\nprocess.exit(r.status === null ? 1 : r.status);\n"
)
"""Runs its first argument through a shell, as Claude Code runs a hook command."""
WRAPPER = (
    "const {spawn} = require('child_process');\n"
    "const child = spawn(process.argv[2], process.argv.slice(3), {stdio: 'inherit'});\n"
    "child.on('exit', (code) => process.exit(code === null ? 1 : code));\n"
)
"""Codex's npm wrapper: spawns the vendored native binary and waits for it."""


def copy_of_sleep(path: Path) -> Path:
    sleep = shutil.which("sleep")
    assert sleep is not None
    path.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(sleep, path)
    return path


def native_claude(home: Path, version: str = "2.0.14") -> Path:
    """The native installer's layout; returns the `~/.local/bin/claude` symlink to run."""
    binary = copy_of_sleep(home / ".local" / "share" / "claude" / "versions" / version)
    link = home / ".local" / "bin" / "claude"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(binary)
    return link


def native_codex(prefix: Path) -> Path:
    """Codex's vendored binary inside the npm package (what `codex` runs under node)."""
    vendor = "lib/node_modules/@openai/codex/vendor/x86_64-unknown-linux-musl/codex/codex"
    return copy_of_sleep(prefix / vendor)


def npm_package(prefix: Path, package: str, entry: str, bin_name: str, body: str) -> Path:
    """`npm install -g` under `prefix`: the entry point in node_modules and a bin symlink to
    it; returns the bin path (run it as `node BIN`, as its `#!/usr/bin/env node` does)."""
    script = prefix / "lib" / "node_modules" / package / entry
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text("#!/usr/bin/env node\n" + body)
    script.chmod(0o755)
    link = prefix / "bin" / bin_name
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(os.path.relpath(script, link.parent))
    return link


def npm_claude(prefix: Path, body: str = SLEEPER) -> list[str]:
    """argv of Claude Code installed with npm: node running @anthropic-ai/claude-code/cli.js."""
    assert NODE is not None
    link = npm_package(prefix, "@anthropic-ai/claude-code", "cli.js", "claude", body)
    return [NODE, str(link)]


def npm_codex(prefix: Path, body: str = APPENDER) -> list[str]:
    """argv of Codex's npm entry point (node running @openai/codex/bin/codex.js)."""
    assert NODE is not None
    return [NODE, str(npm_package(prefix, "@openai/codex", "bin/codex.js", "codex", body))]


@contextlib.contextmanager
def running_native_claude(folder: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A native Claude Code install in `folder`, running (as its own process group) for the
    block: the agent an escalation may act on."""
    from tokentop.processes.finding import launch

    popen, _ = launch([str(native_claude(folder)), "120"])
    try:
        yield popen
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(popen.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            popen.wait(timeout=5)
