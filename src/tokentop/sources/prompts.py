"""A session's first user prompt, read from the start of its transcript (for jobs).

A recurring job sends the same prompt every run ("pick one task from the roadmap, build it,
commit"), so sessions sharing a cwd and the fingerprint of their first prompt are one job
(history/jobs.py). Only the formats that record the user's own words are read:

- Claude Code: the first `type:"user"` record that is not `isMeta` and carries text (a string,
  or `text` blocks; a record of tool results only is not a prompt);
- Codex: the first `event_msg` of type `user_message` (its `message`), else the first user
  `response_item` whose text is not Codex's own context (`<environment_context>`,
  `<user_instructions>`, AGENTS.md);
- OpenClaw: the first `message` whose role is `user` (a string or `text` blocks); a cron run's
  begins with `[cron:<jobId> <job name>]`.

Untrusted bytes: at most MAX_HEAD_BYTES of the file are read, lines over MAX_LINE_BYTES are
skipped, and the text is cut to MAX_PROMPT_CHARS. Other agents' sessions have no prompt here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import msgspec

from tokentop.files import read_bounded
from tokentop.sources.base import DECODE_ERRORS, MAX_LINE_BYTES

FIRST_READ = 16 << 10
MAX_HEAD_BYTES = 256 << 10
"""The prompt opens a transcript; a file whose first 256 KiB hold none has none we read."""
MAX_PROMPT_CHARS = 4000
_CODEX_CONTEXT = ("<environment_context>", "<user_instructions>", "# AGENTS.md", "<permissions")


class _Block(msgspec.Struct, gc=False):
    type: str = ""
    text: str = ""


Content = str | list[_Block] | None


class _Message(msgspec.Struct, gc=False):
    role: str = ""
    content: Content = None


class _ClaudeRecord(msgspec.Struct, gc=False):
    type: str = ""
    isMeta: bool | None = None
    message: _Message | None = None


class _CodexPayload(msgspec.Struct, gc=False):
    type: str = ""
    role: str = ""
    message: str | None = None
    content: list[_Block] | None = None


class _CodexRecord(msgspec.Struct, gc=False):
    type: str = ""
    payload: _CodexPayload | None = None


class _OpenClawRecord(msgspec.Struct, gc=False):
    type: str = ""
    message: _Message | None = None


_CLAUDE = msgspec.json.Decoder(_ClaudeRecord)
_CODEX = msgspec.json.Decoder(_CodexRecord)
_OPENCLAW = msgspec.json.Decoder(_OpenClawRecord)


def text_of(content: Content) -> str:
    if isinstance(content, str):
        return content
    return "\n".join(b.text for b in content or () if b.type in ("text", "input_text") and b.text)


def _claude(line: bytes) -> str:
    rec = _CLAUDE.decode(line)
    if rec.type != "user" or rec.isMeta or rec.message is None:
        return ""
    return text_of(rec.message.content)


def _codex(line: bytes) -> str:
    rec = _CODEX.decode(line)
    p = rec.payload
    if p is None:
        return ""
    if rec.type == "event_msg" and p.type == "user_message":
        return p.message or ""
    if rec.type == "response_item" and p.type == "message" and p.role == "user":
        text = text_of(p.content)
        return "" if text.lstrip().startswith(_CODEX_CONTEXT) else text
    return ""


def _openclaw(line: bytes) -> str:
    rec = _OPENCLAW.decode(line)
    if rec.type != "message" or rec.message is None or rec.message.role != "user":
        return ""
    return text_of(rec.message.content)


READERS: dict[str, Callable[[bytes], str]] = {
    "claude": _claude,
    "codex": _codex,
    "openclaw": _openclaw,
}
"""Agents whose transcripts record the user's prompt, and how to find it in a line."""


def first_prompt(agent: str, path: str) -> str:
    """The session's first user prompt in `path` ("" when none is found or readable)."""
    reader = READERS.get(agent)
    if reader is None:
        return ""
    size = FIRST_READ
    while True:  # the prompt is nearly always in the first lines: read more only if not
        head, whole = _head(path, size)
        for line in _lines(head, whole):
            try:
                text = reader(line).strip()
            except DECODE_ERRORS:
                continue
            if text:
                return text[:MAX_PROMPT_CHARS]
        if whole or size >= MAX_HEAD_BYTES:
            return ""
        size *= 4


def main_file(session_id: str, files: Sequence[str]) -> str:
    """The session's own transcript among its files (not a subagent's): the one named after
    the session, else the first listed."""
    own = [f for f in files if session_id and session_id in os.path.basename(f)]
    plain = [f for f in own if "subagents" not in f]
    return (plain or own or list(files) or [""])[0]


def _head(path: str, size: int) -> tuple[bytes, bool]:
    """The file's first `size` bytes, and whether that is all of it; nothing if it is not a
    regular file (a FIFO planted at a transcript path must not hang the reader)."""
    got = read_bounded(path, size)
    return (got[0], got[1] <= size) if got is not None else (b"", True)


def _lines(head: bytes, whole: bool) -> list[bytes]:
    """Complete lines (the last one too when the file ends there without a newline)."""
    lines = head.split(b"\n")
    if not whole:
        lines = lines[:-1]  # cut by the read: its end comes with the next, bigger read
    return [line for line in lines if 0 < len(line) <= MAX_LINE_BYTES]
