"""The one sanitizer for text from transcripts, logs and telemetry before a person sees it.

Agents and proxy clients write those files, so a cwd, a model name or a session id can carry
terminal escapes (OSC 52 writes the clipboard, OSC 2 the window title), bidi overrides that
reorder what is read, or lone surrogates from undecodable file names. Each such character is
shown as a readable escape (`\\x1b`, `\\u202e`, `\\udcff`) instead of reaching the terminal.
JSON output keeps the exact text: its encoder escapes control characters itself.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from collections.abc import Sequence

UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Controls (C0, DEL, C1), format characters (bidi overrides and isolates, zero-width joiners,
tags), surrogates, and the line/paragraph separators that break a line like a newline."""


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def safe(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every unsafe character escaped; printable text comes back unchanged.

    keep_newlines: leave "\\n" as is, for multi-line text whose lines tokentop lays out.
    """
    if text.isprintable():
        return text  # the common case, in C; isprintable() is False for every unsafe category
    return "".join(
        char if (keep_newlines and char == "\n") or not _is_unsafe(char) else _escape(char)
        for char in text
    )


def md_inline(text: str) -> str:
    """Untrusted text for running Markdown (a table cell, a list item): escaped, one line, and
    with the characters that would end a table cell or start markup made literal."""
    out = safe(text)
    for char in "\\|*_[]<>`":
        out = out.replace(char, "\\" + char)
    return out


def md_code(text: str, *, in_table: bool = False) -> str:
    """Untrusted text as a Markdown code span, fenced by more backticks than it contains
    (in a table, a pipe must be escaped even inside a code span)."""
    out = safe(text).replace("|", "\\|") if in_table else safe(text)
    fence = "`" * (_longest_run(out, "`") + 1)
    pad = " " if out.startswith("`") or out.endswith("`") else ""
    return f"{fence}{pad}{out}{pad}{fence}"


def _longest_run(text: str, char: str) -> int:
    longest = run = 0
    for c in text:
        run = run + 1 if c == char else 0
        longest = max(longest, run)
    return longest


CSV_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def csv_text(text: str) -> str:
    """Untrusted text for a CSV cell: escaped, and never read as a formula by a spreadsheet."""
    out = safe(text)
    return "'" + out if out.startswith(CSV_FORMULA_STARTS) else out


def _is_unsafe(char: str) -> bool:
    return char != " " and unicodedata.category(char) in UNSAFE_CATEGORIES


def _json_escape(match: re.Match[str]) -> str:
    char = match[0]
    if not _is_unsafe(char):
        return char
    code = ord(char)
    if code < 0x10000:
        return f"\\u{code:04x}"
    high, low = divmod(code - 0x10000, 0x400)
    return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"


@functools.cache
def _beyond_ascii() -> re.Pattern[str]:
    return re.compile("[^\x00-\x7e]")  # compiled on first use: the hook never needs it


def json_for_terminal(blob: bytes) -> bytes:
    """Encoded JSON that decodes to the same values, with the characters the encoder leaves
    raw (DEL, C1 controls, format characters, line separators) written as `\\u` escapes."""
    if blob.isascii() and b"\x7f" not in blob:
        return blob
    return _beyond_ascii().sub(_json_escape, blob.decode()).encode()


def path_text(path: str) -> str:
    """A file name as valid Unicode: bytes that were not UTF-8 (kept as lone surrogates by
    surrogateescape) become `\\xff` text, so an encoder can write the name at all."""
    if path.isascii():
        return path
    return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def command_line(cmdline: Sequence[str], width: int = 80) -> str:
    """A process's command line as one escaped line, shortened for a dialog."""
    text = safe(" ".join(cmdline)) or "(command unknown)"
    return text if len(text) <= width else text[: width - 1] + "…"


def cells(text: str) -> int:
    """How many terminal cells `text` takes: two for wide (CJK, most emoji), none for marks
    and format characters (a variation selector, a zero-width joiner), one otherwise."""
    return sum(_char_cells(c) for c in text)


def _char_cells(char: str) -> int:
    if unicodedata.east_asian_width(char) in "WF":
        return 2
    return 0 if unicodedata.category(char) in ("Mn", "Me", "Cf") else 1


def fit_cells(text: str, width: int) -> str:
    """`text` cut to `width` cells, ending in "…" when cut."""
    if cells(text) <= width:
        return text
    kept, used = [], 0
    for char in text:
        size = _char_cells(char)
        if used + size > width - 1:
            break
        kept.append(char)
        used += size
    return "".join(kept) + "…"


def pad_cells(text: str, width: int) -> str:
    """`text` padded with spaces to `width` cells."""
    return text + " " * max(0, width - cells(text))
