"""Picking the Codex rollout lines worth decoding, without decoding the others.

A cold scan reads GBs of rollouts, mostly message, reasoning and tool-output lines that carry
nothing tokentop reads. Codex (serde, compact JSON) writes `timestamp`, `type`, then
`payload` whose own `type` comes first, so a record's kind sits in a line's first ~100
bytes. Long lines are therefore judged by their head in one newline pass; short lines, where
per-line Python costs more than searching, by a C-level search per marker. Both paths apply
the same `wanted` test, so they pick exactly the same lines and any split of the bytes gives
the same result.
"""

from __future__ import annotations

from typing import NamedTuple

from tokentop.sources.base import iter_marked_lines

MARKERS = (b'"session_meta"', b'"turn_context"', b'"token_count"', b'_call"', b'_call_output"')
"""A line without one of these carries nothing the Codex parser reads."""
HEAD_BYTES = 160
HEAD_SCAN_MIN_LINE = 512
"""Average line length from which reading line heads beats one search pass per marker."""
_NESTING = (b'event_msg"', b'response_item"')
_NESTED = (b'event_msg","payload":{"type":"', b'response_item","payload":{"type":"')
_TOOL_KINDS = (b"function_call", b"custom_tool_call", b"local_shell_call")
_TOP_WANTED = (b'session_meta"', b'turn_context"', *_TOOL_KINDS)
"""Envelope kinds, plus the bare response items of very old rollouts."""
_INNER_WANTED = (b'token_count"', *_TOOL_KINDS)


class Selection(NamedTuple):
    needed: list[bytes]
    """Lines to decode, in file order, without their newline."""
    lines: int
    junk: int
    """Lines not starting with `{`: binary or text junk, blank lines."""
    overlong: int
    """Object lines longer than the limit; never decoded."""


def select_lines(data: bytes, first: bool, limit: int) -> Selection:
    """Split complete lines into those to decode and counts of bad ones.

    `first` says `data` starts at byte 0 of the file, whose first line may be a very old
    header (`{"id", "timestamp", "instructions"}`) that carries no marker.
    """
    if not data:
        return Selection([], 0, 0, 0)
    lines = data.count(b"\n") + (not data.endswith(b"\n"))
    if len(data) >= lines * HEAD_SCAN_MIN_LINE:
        return _by_heads(data, lines, first, limit)
    return _by_markers(data, lines, first, limit)


def wanted(data: bytes, start: int, end: int, first: bool) -> bool:
    """Whether the object line `data[start:end]` holds a record the parser reads."""
    head = data[start : min(end, start + HEAD_BYTES)]
    at = head.find(b'"type":"')
    if at < 0:  # the bare header of a very old rollout, or another layout
        return first or _has_marker(data, start, end)
    kind = head[at + 8 :]
    for nested in _NESTED:
        if kind.startswith(nested):
            return kind[len(nested) :].startswith(_INNER_WANTED)
    if kind.startswith(_TOP_WANTED):
        return True
    return kind.startswith(_NESTING) and _has_marker(data, start, end)


def _by_heads(data: bytes, lines: int, first: bool, limit: int) -> Selection:
    needed: list[bytes] = []
    find, size = data.find, len(data)
    pos = junk = overlong = 0
    while pos < size:
        end = find(b"\n", pos)
        end = size if end < 0 else end
        if not data.startswith(b"{", pos):
            junk += 1
        elif end - pos > limit:
            overlong += 1
        elif wanted(data, pos, end, first):
            needed.append(data[pos:end])
        first = False
        pos = end + 1
    return Selection(needed, lines, junk, overlong)


def _by_markers(data: bytes, lines: int, first: bool, limit: int) -> Selection:
    junk = lines - data.count(b"\n{") - data.startswith(b"{")
    needed = _unmarked_header(data, limit) if first else []
    for line in iter_marked_lines(data, MARKERS):
        if len(line) <= limit and line.startswith(b"{") and wanted(line, 0, len(line), False):
            needed.append(line)
    return Selection(needed, lines, junk, _count_overlong(data, limit))


def _unmarked_header(data: bytes, limit: int) -> list[bytes]:
    """The first line, when it is wanted although it has no marker (a very old header)."""
    end = data.find(b"\n")
    end = len(data) if end < 0 else end
    if end > limit or not data.startswith(b"{") or _has_marker(data, 0, end):
        return []
    return [data[:end]] if wanted(data, 0, end, True) else []


def _has_marker(data: bytes, start: int, end: int) -> bool:
    return any(data.find(marker, start, end) >= 0 for marker in MARKERS)


def _count_overlong(data: bytes, limit: int) -> int:
    """Object lines over `limit` bytes, found by jumping `limit` bytes at a time."""
    pos, size, count = 0, len(data), 0
    while size - pos > limit:
        newline = data.rfind(b"\n", pos, pos + limit + 1)
        if newline >= 0:
            pos = newline + 1
            continue
        end = data.find(b"\n", pos)
        count += data.startswith(b"{", pos)
        pos = size if end < 0 else end + 1
    return count
