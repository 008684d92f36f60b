"""A base for the simpler JSON-lines formats: split complete lines, count the bad ones.

Gemini, OpenClaw, LiteLLM proxy logs and generic JSONL have no hot-path needs like Claude
Code's multi-GB corpora, so they share this loop; each subclass decodes one line at a time
into its own narrow Structs. A line that raises a msgspec error is counted as bad (with its
line number and the reason) and the next line goes on.
"""

from __future__ import annotations

from tokentop.model import Event
from tokentop.sources.base import DECODE_ERRORS, MAX_LINE_BYTES, FileParser, bad_reason

__all__ = ["DECODE_ERRORS", "JsonLinesParser"]


class JsonLinesParser(FileParser):
    """Feeds each complete, non-blank line to `line`; state lives in Struct fields."""

    offset: int = 0
    """Bytes fed so far: with the line start, a stable key for records without an id."""

    def feed(self, data: bytes, out: list[Event]) -> None:
        pos = 0
        find = data.find
        while (end := find(b"\n", pos)) >= 0:
            start, pos = pos, end + 1
            self.lines += 1
            if end - start > MAX_LINE_BYTES:
                self.bad(f"line {self.lines}: over {MAX_LINE_BYTES} bytes, skipped")
                continue
            raw = data[start:end].strip()
            if not raw:
                continue
            try:
                self.line(raw, self.offset + start, out)
            except DECODE_ERRORS as exc:
                self.bad(f"line {self.lines}: {bad_reason(exc)}")
        self.offset += pos

    def line(self, raw: bytes, offset: int, out: list[Event]) -> None:
        """Handle one line that starts at byte `offset` of the file."""
        raise NotImplementedError
