"""What the commands that run most often import: each module is start-up time they pay.

The hook runs before every tool call of a Claude Code session, and `sessions --json` is what
scripts poll; both are measured in bench/ (issue #23). These tests keep the modules they no
longer need from creeping back in.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

GEN = Path(__file__).with_name("gen_claude_corpus.py")


def modules_after(code: str, home: Path, stdin: bytes = b"") -> set[str]:
    """The modules loaded once `code` ran in a fresh interpreter with its own HOME."""
    env = {
        "HOME": str(home), "XDG_CACHE_HOME": str(home / "cache"),
        "XDG_CONFIG_HOME": str(home / "config"), "XDG_DATA_HOME": str(home / "data"),
        "XDG_STATE_HOME": str(home / "state"), "PATH": "/usr/bin:/bin",
    }  # fmt: skip
    script = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    done = subprocess.run(
        [sys.executable, "-c", script], input=stdin, env=env, capture_output=True, check=True
    )
    return set(json.loads(done.stdout.splitlines()[-1]))


def test_the_hook_answers_pretooluse_without_cli_parsing_processes_or_a_store(
    tmp_path: Path,
) -> None:
    root = tmp_path / "c"
    argv = [sys.executable, str(GEN), str(root), "--sessions", "1", "--turns", "20"]
    subprocess.run(argv, check=True, capture_output=True)
    transcript = next(root.rglob("*.jsonl"))
    event = {
        "session_id": transcript.stem, "transcript_path": str(transcript), "cwd": "/",
        "hook_event_name": "PreToolUse", "tool_name": "Bash",
    }  # fmt: skip
    code = "import tokentop.commands.hook as h\nh.main([])"
    stdin = json.dumps(event).encode()
    modules_after(code, tmp_path, stdin)  # the first call records the session
    loaded = modules_after(code, tmp_path, stdin)  # warm: what every tool call pays
    assert "tokentop.engine.engine" in loaded  # it did read the transcript
    unneeded = {"argparse", "subprocess", "hashlib", "platformdirs", "tomllib", "sqlite3"}
    unneeded |= {"tokentop.commands.common", "psutil", "importlib.resources"}
    assert loaded & unneeded == set()


def test_sessions_over_an_old_history_never_imports_psutil(tmp_path: Path) -> None:
    """The Watchdog asks about processes only for sessions of the last day."""
    root = tmp_path / "c"
    argv = [sys.executable, str(GEN), str(root), "--sessions", "2", "--turns", "5"]
    subprocess.run(argv, check=True, capture_output=True)
    code = (
        "import io, contextlib\nfrom tokentop.cli import main\n"
        f"with contextlib.redirect_stdout(io.StringIO()):\n"
        f"    main(['sessions', '--json', '--no-cache', '--claude-dir', {str(root)!r}])"
    )
    loaded = modules_after(code, tmp_path)
    assert "tokentop.policy.watchdog" in loaded
    assert "psutil" not in loaded and "hmac" not in loaded
