"""Claude Code transcript lines as narrow records: only the fields tokentop reads.

msgspec skips every undeclared field (text, thinking, tool output) without building it, so a
line costs little more than reading its bytes. A buffer of whole lines is decoded with one
call when that is provably the same as decoding each line (`decode_whole`), because a call
per line cost more than the decoding itself on a cold scan (0.3 s of 1 s on 859 MB).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import ClassVar
from zlib import crc32

import msgspec

from tokentop.sources.base import DECODE_ERRORS, MAX_LINE_BYTES, MAX_TIMESTAMP, Count, bounded_ts

# Fields are declared in the order Claude Code writes them: msgspec tries the next declared
# field first when matching keys, which saves a few percent on the hot path.


class CacheSplit(msgspec.Struct, gc=False):
    ephemeral_5m_input_tokens: Count = 0
    ephemeral_1h_input_tokens: Count = 0


class Usage(msgspec.Struct, gc=False):
    input_tokens: Count = 0
    cache_creation_input_tokens: Count = 0
    cache_read_input_tokens: Count = 0
    cache_creation: CacheSplit | None = None
    output_tokens: Count = 0


class Block(msgspec.Struct, gc=False):
    """A content block; text and thinking bodies are never decoded, tool bodies stay Raw."""

    tool_use_id: str = ""
    type: str = ""
    id: str = ""
    name: str = ""
    input: msgspec.Raw = msgspec.Raw(b"null")
    content: msgspec.Raw = msgspec.Raw(b"null")
    is_error: bool | None = None


class Message(msgspec.Struct, gc=False):
    id: str | None = None
    model: str | None = None
    content: list[Block] | str | None = None
    usage: Usage | None = None


class RecordBase(msgspec.Struct, gc=False):
    isSidechain: bool | None = None
    cwd: str | None = None
    sessionId: str | None = None
    gitBranch: str | None = None
    type: str = ""
    message: Message | None = None
    uuid: str | None = None
    costUSD: float | None = None
    requestId: str | None = None


class Record(RecordBase, gc=False):
    timestamp: datetime | None = None
    """Parsed by msgspec in C; a line whose timestamp does not parse is retried loosely."""


class LooseRecord(RecordBase, gc=False):
    timestamp: str | None = None


class Envelope(msgspec.Struct, gc=False):
    """Fallback view of a line whose body did not fit `Record` (e.g. a new record type)."""

    type: str = ""
    sessionId: str | None = None
    timestamp: str | None = None
    cwd: str | None = None
    gitBranch: str | None = None
    message: ClassVar[None] = None
    """Not a field: lets the parser's loop pass an envelope over like a record without one."""


RECORD = msgspec.json.Decoder(Record)
LOOSE = msgspec.json.Decoder(LooseRecord)
ENVELOPE = msgspec.json.Decoder(Envelope)
AnyRecord = Record | LooseRecord
KNOWN_TYPES = frozenset({"assistant", "user"})
_OPEN, _CLOSE = ord("{"), ord("}")


def decode_whole(data: bytes) -> list[Record] | None:
    """Every line of `data` (whole lines, each ending in a newline) as a Record, or None
    unless each line is one object that decodes: the caller then decodes line by line.

    msgspec's `decode_lines` reads whitespace-separated values, so a value may span lines
    or two may share one. Not here: every line starts with `{` and ends with `}`, and
    inside a value `}` can never be followed by whitespace and `{` (nor a string hold a raw
    newline), so each newline ends a value; with as many values as lines, each line holds
    exactly one, the one a per-line decode would give.
    """
    find = data.find
    lines = pos = 0
    while (end := find(b"\n", pos)) >= 0:
        if data[pos] != _OPEN or data[end - 1] != _CLOSE or end - pos > MAX_LINE_BYTES:
            return None
        lines += 1
        pos = end + 1
    if pos != len(data):
        return None
    try:
        records = RECORD.decode_lines(data)
    except DECODE_ERRORS:
        return None
    return records if len(records) == lines else None


def output_hash(raw: bytes) -> str:
    """Fingerprint of a tool output: crc32 and length, 16 hex digits.

    Outputs are most of a transcript's bytes (often MBs); crc32 runs at ~3 GB/s where
    blake2b manages ~0.6, and equality within one session is all the loop detector needs.
    """
    return (crc32(raw) << 32 | (len(raw) & 0xFFFFFFFF)).to_bytes(8).hex()


def epoch(value: datetime | str | None) -> float:
    """Unix seconds of a record timestamp (naive times taken as UTC); 0.0 when unparseable
    or out of range (a time late on 9999-12-31 at a negative offset is past what a datetime
    can print: `bounded_ts`)."""
    if type(value) is datetime and value.tzinfo is not None:
        ts = value.timestamp()
        return ts if 0.0 <= ts <= MAX_TIMESTAMP else 0.0
    if value is None:
        return 0.0
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return 0.0
    return bounded_ts(value.replace(tzinfo=value.tzinfo or UTC).timestamp())
