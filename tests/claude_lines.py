"""Realistic Claude Code transcript lines for the hook and run tests (shapes as in the samples).

Also usable as a script: `python claude_lines.py` is the tiny agent of the `tokentop run`
test: it appends one tool-using response per tick under $CLAUDE_CONFIG_DIR, in its own cwd,
until it is stopped.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def envelope(session_id: str, cwd: str, kind: str, message: dict[str, Any]) -> dict[str, Any]:
    return {
        "parentUuid": None,
        "isSidechain": False,
        "userType": "external",
        "cwd": cwd,
        "sessionId": session_id,
        "version": "2.0.31",
        "gitBranch": "main",
        "type": kind,
        "message": message,
        "uuid": str(uuid.uuid4()),
        "timestamp": _now(),
    }


def response(
    session_id: str, cwd: str, tokens: int, command: str = "pytest -q", error: str = ""
) -> list[str]:
    """One response calling Bash (usage adds up to `tokens`), then the tool's result."""
    tool_id = "toolu_01" + uuid.uuid4().hex[:22]
    usage = {
        "input_tokens": 10,
        "cache_creation_input_tokens": tokens // 4,
        "cache_read_input_tokens": tokens - 10 - tokens // 4 - 100,
        "output_tokens": 100,
        "service_tier": "standard",
    }
    message = {
        "id": "msg_01" + uuid.uuid4().hex[:22],
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5-20250929",
        "content": [
            {"type": "tool_use", "id": tool_id, "name": "Bash", "input": {"command": command}}
        ],
        "stop_reason": None,
        "usage": usage,
    }
    use = envelope(session_id, cwd, "assistant", message)
    use["requestId"] = "req_011C" + uuid.uuid4().hex[:20]
    result = {
        "tool_use_id": tool_id,
        "type": "tool_result",
        "content": error or "ok",
        "is_error": bool(error),
    }
    done = envelope(session_id, cwd, "user", {"role": "user", "content": [result]})
    return [json.dumps(use), json.dumps(done)]


def write_transcript(path: Path, session_id: str, cwd: str, responses: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    prompt = envelope(session_id, cwd, "user", {"role": "user", "content": "Fix the tests."})
    lines = [json.dumps(prompt)] + [line for r in responses for line in r]
    path.write_text("\n".join(lines) + "\n")
    return path


def escape_cwd(cwd: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "-", cwd)


def run_agent(tick: float, tokens: int, resume: str = "") -> int:
    """The tiny agent: a new session file in the Claude layout, one response per tick; or,
    given a session id, more responses appended to that session's existing file (as
    `codex resume <id>` does to its rollout); given "resume", to this cwd's latest session."""
    root = Path(os.environ["CLAUDE_CONFIG_DIR"])
    cwd = os.getcwd()
    if resume == "resume":  # the latest session of this cwd, as `codex resume --last` picks
        folder = root / "projects" / escape_cwd(cwd)
        path = max(folder.glob("*.jsonl"), key=lambda p: p.stat().st_mtime)
        session_id = path.stem
    elif resume:
        [path] = (root / "projects").glob(f"*/{resume}.jsonl")
        session_id = resume
    else:
        session_id = str(uuid.uuid4())
        path = root / "projects" / escape_cwd(cwd) / f"{session_id}.jsonl"
        write_transcript(path, session_id, cwd, [])
    for turn in range(10_000):
        with path.open("a") as fh:
            fh.write("\n".join(response(session_id, cwd, tokens, f"step {turn}")) + "\n")
        time.sleep(tick)
    return 0


if __name__ == "__main__":
    sys.exit(run_agent(float(sys.argv[1]), int(sys.argv[2]), *sys.argv[3:4]))
