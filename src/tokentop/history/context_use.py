"""Top token consumers: which tools and files pulled the most context into a session.

Transcripts record billed tokens per response, not per tool result, so this is an estimate:
each tool result's text is counted with the tokenizer from `tokens.py` and charged to the
tool (and the file, when the call named one) that produced it. It stays cheap and bounded:
only lines holding tool calls or results are decoded, at most `max_bytes` are read per
session, and a long result is tokenized on a prefix and scaled by its length.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, Literal

import msgspec

from tokentop.tokens import Tokenizer

MAX_SCAN_BYTES = 32 * 1024 * 1024
"""Transcript bytes read per session at most; past this the estimate says it is partial."""
TOKENIZE_CHARS = 8000
"""A longer result is tokenized on this prefix and scaled by its full length."""
TOKENIZE_BUDGET = 2_000_000
"""Characters tokenized per session at most; past this, counts use the measured tokens/char."""
_MARKERS = (b'"tool_use"', b'"tool_result"', b"function_call", b"custom_tool_call")
_PATCH_FILE = re.compile(r"^\*\*\* (?:Update|Add|Delete) File: (.+)$", re.MULTILINE)
_PATH_KEYS = ("file_path", "notebook_path", "path")


class Consumer(msgspec.Struct, frozen=True):
    kind: Literal["tool", "file"]
    name: str
    tokens: int
    """Estimated tokens of the results charged to this tool or file."""
    calls: int


class Consumers(msgspec.Struct, frozen=True):
    """The largest consumers, labelled as an estimate made with `tokenizer`."""

    tools: tuple[Consumer, ...]
    files: tuple[Consumer, ...]
    tokenizer: str
    bytes_scanned: int
    partial: bool
    """True when the byte budget ran out or a file could not be read."""
    estimate: bool = True


class _Block(msgspec.Struct):
    type: str = ""
    id: str = ""
    name: str = ""
    input: Any = None
    tool_use_id: str = ""
    content: Any = None


class _Message(msgspec.Struct):
    content: list[_Block] | str | None = None


class _Payload(msgspec.Struct):
    type: str = ""
    name: str = ""
    call_id: str = ""
    arguments: str = ""
    input: Any = None
    output: Any = None


class _Line(msgspec.Struct):
    type: str = ""
    message: _Message | None = None
    payload: _Payload | None = None


_DECODER = msgspec.json.Decoder(_Line)


class _Tally:
    """Accumulates estimated tokens per tool and per file."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.calls: dict[str, tuple[str, str]] = {}
        self.tools: dict[str, list[int]] = {}
        self.files: dict[str, list[int]] = {}
        self.chars = 0
        self.tokens = 0

    def call(self, call_id: str, tool: str, path: str) -> None:
        self.calls[call_id] = (tool or "?", path)

    def result(self, call_id: str, text: str) -> None:
        tool, path = self.calls.pop(call_id, ("?", ""))
        tokens = self.count(text)
        for table, name in ((self.tools, tool), (self.files, path)):
            if name:
                acc = table.setdefault(name, [0, 0])
                acc[0] += tokens
                acc[1] += 1

    def count(self, text: str) -> int:
        if self.chars >= TOKENIZE_BUDGET:
            return round(len(text) * self.tokens / self.chars)
        sample = text[:TOKENIZE_CHARS]
        counted = self.tokenizer.count(sample)
        self.chars += len(sample)
        self.tokens += counted
        return counted if len(sample) == len(text) else round(counted * len(text) / len(sample))


def top_consumers(
    paths: Iterable[str], tokenizer: Tokenizer, top: int = 8, max_bytes: int = MAX_SCAN_BYTES
) -> Consumers:
    """Estimate the top `top` tools and files by tokens of tool results in these transcripts."""
    tally = _Tally(tokenizer)
    scanned, partial = 0, False
    for path in paths:
        try:
            for line in _marked_lines(Path(path), max_bytes - scanned):
                scanned += len(line)
                _feed(tally, line)
        except OSError:
            partial = True
        if scanned >= max_bytes:
            partial = True
            break
    return Consumers(
        _top("tool", tally.tools, top),
        _top("file", tally.files, top),
        tokenizer.name,
        scanned,
        partial,
    )


def _top(
    kind: Literal["tool", "file"], table: dict[str, list[int]], n: int
) -> tuple[Consumer, ...]:
    ranked = sorted(table.items(), key=lambda kv: (-kv[1][0], kv[0]))[:n]
    return tuple(Consumer(kind, name, tokens, calls) for name, (tokens, calls) in ranked)


def _marked_lines(path: Path, budget: int) -> Iterator[bytes]:
    """Lines that may hold a tool call or result, until `budget` bytes have been read."""
    used = 0
    with path.open("rb") as fh:
        for line in fh:
            used += len(line)
            if used > budget:
                return
            if any(m in line for m in _MARKERS):
                yield line


def _feed(tally: _Tally, line: bytes) -> None:
    try:
        record = _DECODER.decode(line)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return  # the source parser counts bad lines; an estimate just skips them
    if record.message is not None and isinstance(record.message.content, list):
        _claude_blocks(tally, record.message.content)
    elif record.payload is not None:
        _codex_item(tally, record.payload)


def _claude_blocks(tally: _Tally, blocks: list[_Block]) -> None:
    for block in blocks:
        if block.type == "tool_use":
            tally.call(block.id, block.name, _input_path(block.input))
        elif block.type == "tool_result":
            tally.result(block.tool_use_id, _text(block.content))


def _codex_item(tally: _Tally, item: _Payload) -> None:
    if item.type == "function_call":
        tally.call(item.call_id, _shell_name(item.name, item.arguments), "")
    elif item.type == "custom_tool_call":
        patch = item.input if isinstance(item.input, str) else ""
        files = _PATCH_FILE.findall(patch)
        tally.call(item.call_id, item.name, files[0].strip() if len(files) == 1 else "")
    elif item.type in ("function_call_output", "custom_tool_call_output"):
        tally.result(item.call_id, _text(item.output))


def _input_path(tool_input: Any) -> str:
    if isinstance(tool_input, dict):
        for key in _PATH_KEYS:
            value = tool_input.get(key)
            if isinstance(value, str) and value:
                return value
    return ""


def _shell_name(name: str, arguments: str) -> str:
    """ "shell (rg)" for a shell call running rg, so shell output is split by program."""
    try:
        args = msgspec.json.decode(arguments) if arguments else None
    except msgspec.DecodeError:
        return name
    command = args.get("command") if isinstance(args, dict) else None
    script = command[-1] if isinstance(command, list) and command else command
    if isinstance(script, str) and script.split():
        return f"{name} ({script.split()[0]})"
    return name


def _text(content: Any) -> str:
    """The text of a tool result: a string, a list of text blocks, or an object with output."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(_text(part) for part in content)
    if isinstance(content, dict):
        for key in ("text", "output", "content"):
            if key in content:
                return _text(content[key])
    return ""
