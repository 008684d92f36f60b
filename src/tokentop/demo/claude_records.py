"""The simulated agent's tool calls, and their rendering as Claude Code transcript records.

Shapes follow shared/formats.md §1 and the shared samples: Claude Code writes one line per
content block with a shared message.id/requestId and a growing output_tokens. The Codex
renderer is in demo_codex.py.
"""

from __future__ import annotations

import random
import string
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Record = dict[str, Any]
Batch = tuple[list[Record], float]
"""Records written together in one os.write, and the pause after them (in intervals)."""

CLAUDE_VERSION = "2.0.31"
_ALNUM = string.ascii_letters + string.digits
EDIT_RESULT = (
    "The file {path} has been updated. Here's the result of running `cat -n` on a snippet"
    " of the edited file:\n{snippet}"
)


@dataclass(frozen=True)
class Call:
    """One tool call of the simulated agent and its outcome, independent of the format."""

    thought: str
    tool: str
    """Claude Code tool name: Read, Edit, Write, Bash or Grep."""
    target: str
    """The file path, the shell command or the grep pattern."""
    output: str
    is_error: bool = False
    old: str = ""
    new: str = ""
    """Edit: replaced and replacing text; Write: the whole file."""


@dataclass(frozen=True)
class Usage:
    """Tokens of one API response: `context` was read from cache, `fresh` is new input."""

    context: int
    fresh: int
    output: int
    reasoning: int
    uncached: int


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def random_id(rng: random.Random, prefix: str, length: int) -> str:
    return prefix + "".join(rng.choice(_ALNUM) for _ in range(length))


def random_uuid(rng: random.Random, version: int = 4) -> str:
    """A uuid of the given version (Claude Code uses v4, Codex v7) drawn from `rng`."""
    bits = rng.getrandbits(128)
    bits = (bits & ~(0xF << 76)) | (version << 76)  # version nibble
    bits = (bits & ~(0x3 << 62)) | (0x2 << 62)  # RFC 4122 variant
    return str(uuid.UUID(int=bits))


class ClaudeRecords:
    """Claude Code transcript lines for one session (projects/<escaped-cwd>/<uuid>.jsonl)."""

    def __init__(self, rng: random.Random, cwd: str, model: str, session_id: str) -> None:
        self.rng, self.cwd, self.model, self.session_id = rng, cwd, model, session_id
        self.parent: str | None = None

    def prompt(self, text: str) -> list[Batch]:
        """A user prompt (and, on newer builds, a housekeeping record readers must skip)."""
        user = self._envelope("user", {"role": "user", "content": text})
        snapshot = {
            "type": "file-history-snapshot",
            "messageId": user["uuid"],
            "snapshot": {
                "messageId": user["uuid"],
                "trackedFileBackups": {},
                "timestamp": now_iso(),
            },
            "isSnapshotUpdate": False,
        }
        return [([user, snapshot], 1.0)]

    def call(self, call: Call, usage: Usage) -> list[Batch]:
        """Text block, tool_use block (same message id, final usage), then the tool result."""
        msg_id = random_id(self.rng, "msg_01", 22)
        req_id = random_id(self.rng, "req_011C", 20)
        tool_id = random_id(self.rng, "toolu_01", 22)
        early = min(usage.output, self.rng.randint(1, 12))  # a streaming snapshot of the count
        text = self._assistant(msg_id, req_id, {"type": "text", "text": call.thought}, usage, early)
        tool_use = {
            "type": "tool_use",
            "id": tool_id,
            "name": call.tool,
            "input": _claude_input(call),
        }
        use = self._assistant(msg_id, req_id, tool_use, usage, usage.output)
        return [([text], 0.3), ([use], 0.7), ([self._tool_result(tool_id, call)], 1.0)]

    def reply(self, text: str, usage: Usage) -> list[Batch]:
        """A text-only response that ends the turn."""
        msg_id = random_id(self.rng, "msg_01", 22)
        req_id = random_id(self.rng, "req_011C", 20)
        line = self._assistant(msg_id, req_id, {"type": "text", "text": text}, usage, usage.output)
        return [([line], 1.0)]

    def _envelope(self, kind: str, message: Record, **extra: Any) -> Record:
        record_id = random_uuid(self.rng)
        record: Record = {
            "parentUuid": self.parent,
            "isSidechain": False,
            "userType": "external",
            "cwd": self.cwd,
            "sessionId": self.session_id,
            "version": CLAUDE_VERSION,
            "gitBranch": "main",
            "type": kind,
            "message": message,
            **extra,
            "uuid": record_id,
            "timestamp": now_iso(),
        }
        self.parent = record_id
        return record

    def _assistant(
        self, msg_id: str, req_id: str, block: Record, usage: Usage, output: int
    ) -> Record:
        message = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": [block],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {
                "input_tokens": usage.uncached,
                "cache_creation_input_tokens": usage.fresh,
                "cache_read_input_tokens": usage.context,
                "cache_creation": {
                    "ephemeral_5m_input_tokens": usage.fresh,
                    "ephemeral_1h_input_tokens": 0,
                },
                "output_tokens": output,
                "service_tier": "standard",
            },
        }
        return self._envelope("assistant", message, requestId=req_id)

    def _tool_result(self, tool_id: str, call: Call) -> Record:
        content = f"Exit code 1\n{call.output}" if call.is_error else _claude_result_text(call)
        block = {
            "tool_use_id": tool_id,
            "type": "tool_result",
            "content": content,
            "is_error": call.is_error,
        }
        extra = "Error: " + content if call.is_error else _claude_tool_use_result(call)
        return self._envelope("user", {"role": "user", "content": [block]}, toolUseResult=extra)


def _claude_input(call: Call) -> Record:
    if call.tool == "Bash":
        return {"command": call.target, "description": f"Run {call.target.split()[0]}"}
    if call.tool == "Grep":
        return {"pattern": call.target, "output_mode": "files_with_matches"}
    if call.tool == "Edit":
        return {"file_path": call.target, "old_string": call.old, "new_string": call.new}
    if call.tool == "Write":
        return {"file_path": call.target, "content": call.new}
    return {"file_path": call.target}


def _claude_result_text(call: Call) -> str:
    if call.tool == "Read":
        lines = call.output.splitlines()
        return "\n".join(f"{n:>6}\t{line}" for n, line in enumerate(lines, 1))
    if call.tool == "Edit":
        return EDIT_RESULT.format(path=call.target, snippet=call.output)
    if call.tool == "Write":
        return f"File created successfully at: {call.target}"
    return call.output


def _claude_tool_use_result(call: Call) -> Record:
    if call.tool == "Read":
        lines = call.output.count("\n") + 1
        file = {
            "filePath": call.target,
            "content": call.output,
            "numLines": lines,
            "startLine": 1,
            "totalLines": lines,
        }
        return {"type": "text", "file": file}
    if call.tool == "Edit":
        patch = {
            "oldStart": 1,
            "oldLines": 1,
            "newStart": 1,
            "newLines": 1,
            "lines": [f"-{call.old}", f"+{call.new}"],
        }
        return {
            "filePath": call.target,
            "oldString": call.old,
            "newString": call.new,
            "structuredPatch": [patch],
            "userModified": False,
            "replaceAll": False,
        }
    if call.tool == "Write":
        return {
            "type": "create",
            "filePath": call.target,
            "content": call.new,
            "structuredPatch": [],
        }
    if call.tool == "Grep":
        names = call.output.splitlines()[1:]
        return {"mode": "files_with_matches", "filenames": names, "numFiles": len(names)}
    return {"stdout": call.output, "stderr": "", "interrupted": False, "isImage": False}
