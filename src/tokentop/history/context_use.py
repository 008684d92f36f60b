"""Top token consumers: which tools and files pulled the most context into a session.

Transcripts record billed tokens per response, not per tool result, so this is an estimate:
each tool result is charged to the tool (and the file, when the call named one) that
produced it. Tokenizing every result cost most of a first `report` (24 of 36 s on an 859 MB
history), so only a sample is tokenized: the results read while a `Calibration` (shared by
every session a recorder summarises) has seen fewer than `SAMPLE_BYTES`; every later result
counts its JSON bytes at the tokens per byte measured on that sample. Results are never
decoded past the sample (msgspec keeps them raw), and only lines holding tool calls or
results are decoded, at most `max_bytes` per session.
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
"""A longer sampled result is tokenized on this prefix and scaled by its full length."""
SAMPLE_BYTES = 512 * 1024
"""Result bytes (as JSON) tokenized per Calibration: ~20 ms of tiktoken, enough for a
stable tokens-per-byte ratio; everything after is counted at that ratio."""
READ_BYTES = 1024 * 1024
_MARKERS = (b'"tool_', b"_call")
"""Claude's "tool_use" and "tool_result", Codex's function_call(_output) and custom_tool_call:
two plain byte searches per line (a regex alternation scans several times slower)."""
_PATCH_FILE = re.compile(r"^\*\*\* (?:Update|Add|Delete) File: (.+)$", re.MULTILINE)


class Calibration:
    """Tokens per JSON byte of tool results, measured on the first `SAMPLE_BYTES` seen."""

    def __init__(self, tokenizer: Tokenizer, sample_bytes: int = SAMPLE_BYTES) -> None:
        self.tokenizer = tokenizer
        self.sample_bytes = sample_bytes
        self.bytes = 0
        self.tokens = 0

    def count(self, raw: msgspec.Raw) -> int:
        """Estimated tokens of one result given as its raw JSON."""
        if self.bytes >= self.sample_bytes and self.bytes:
            return round(len(raw) * self.tokens / self.bytes)
        try:
            text = _text(msgspec.json.decode(raw))
        except (msgspec.DecodeError, RecursionError):
            text = ""
        sample = text[:TOKENIZE_CHARS]
        counted = self.tokenizer.count(sample)
        if len(sample) < len(text):
            counted = round(counted * len(text) / len(sample))
        self.bytes += len(raw)
        self.tokens += counted
        return counted


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
    input: msgspec.Raw = msgspec.Raw(b"null")
    tool_use_id: str = ""
    content: msgspec.Raw = msgspec.Raw(b"null")


class _PathInput(msgspec.Struct):
    """The fields of a tool's input that name a file (the rest, a file's text, is skipped)."""

    file_path: Any = None
    notebook_path: Any = None
    path: Any = None


class _Message(msgspec.Struct):
    content: list[_Block] | str | None = None


class _Payload(msgspec.Struct):
    type: str = ""
    name: str = ""
    call_id: str = ""
    arguments: str = ""
    input: Any = None
    output: msgspec.Raw = msgspec.Raw(b"null")


class _Line(msgspec.Struct):
    type: str = ""
    message: _Message | None = None
    payload: _Payload | None = None


_DECODER = msgspec.json.Decoder(_Line)
_PATH_INPUT = msgspec.json.Decoder(_PathInput)


class _Tally:
    """Accumulates estimated tokens per tool and per file."""

    def __init__(self, calibration: Calibration) -> None:
        self.calibration = calibration
        self.calls: dict[str, tuple[str, str]] = {}
        self.tools: dict[str, list[int]] = {}
        self.files: dict[str, list[int]] = {}

    def call(self, call_id: str, tool: str, path: str) -> None:
        self.calls[call_id] = (tool or "?", path)

    def result(self, call_id: str, raw: msgspec.Raw) -> None:
        tool, path = self.calls.pop(call_id, ("?", ""))
        tokens = self.calibration.count(raw)
        for table, name in ((self.tools, tool), (self.files, path)):
            if name:
                acc = table.setdefault(name, [0, 0])
                acc[0] += tokens
                acc[1] += 1


def top_consumers(
    paths: Iterable[str],
    tokenizer: Tokenizer | Calibration,
    top: int = 8,
    max_bytes: int = MAX_SCAN_BYTES,
) -> Consumers:
    """Estimate the top `top` tools and files by tokens of tool results in these transcripts.

    Pass the same `Calibration` for every session of a run, so only its first results are
    tokenized; a bare tokenizer gets a calibration of its own."""
    calibration = tokenizer if isinstance(tokenizer, Calibration) else Calibration(tokenizer)
    tally = _Tally(calibration)
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
        calibration.tokenizer.name,
        scanned,
        partial,
    )


def _top(
    kind: Literal["tool", "file"], table: dict[str, list[int]], n: int
) -> tuple[Consumer, ...]:
    ranked = sorted(table.items(), key=lambda kv: (-kv[1][0], kv[0]))[:n]
    return tuple(Consumer(kind, name, tokens, calls) for name, (tokens, calls) in ranked)


def _marked_lines(path: Path, budget: int) -> Iterator[bytes]:
    """Lines that may hold a tool call or result, until `budget` bytes have been read.

    Read in chunks, with plain byte searches: most bytes are tool results."""
    used = 0
    carry = b""
    tool, call = _MARKERS
    with path.open("rb", buffering=0) as fh:
        while used < budget and (chunk := fh.read(min(READ_BYTES, budget - used))):
            data = carry + chunk if carry else chunk
            pos, find = 0, data.find
            while (end := find(b"\n", pos)) >= 0:
                used += end + 1 - pos
                if used > budget:
                    return
                if find(tool, pos, end) >= 0 or find(call, pos, end) >= 0:
                    yield data[pos:end]
                pos = end + 1
            carry = data[pos:]
        if carry and used + len(carry) <= budget and (tool in carry or call in carry):
            yield carry


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
            tally.result(block.tool_use_id, block.content)


def _codex_item(tally: _Tally, item: _Payload) -> None:
    if item.type == "function_call":
        tally.call(item.call_id, _shell_name(item.name, item.arguments), "")
    elif item.type == "custom_tool_call":
        patch = item.input if isinstance(item.input, str) else ""
        files = _PATCH_FILE.findall(patch)
        tally.call(item.call_id, item.name, files[0].strip() if len(files) == 1 else "")
    elif item.type in ("function_call_output", "custom_tool_call_output"):
        tally.result(item.call_id, item.output)


def _input_path(raw: msgspec.Raw) -> str:
    """The file a tool call names, decoding only the input's path fields."""
    if memoryview(raw)[:1].tobytes() != b"{":
        return ""
    try:
        found = _PATH_INPUT.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return ""
    for value in (found.file_path, found.notebook_path, found.path):
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
