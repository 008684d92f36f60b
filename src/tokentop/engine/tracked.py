"""A file being followed (its source, tailer and parser), and what tells a cached parser's
type and whether a followed file changed, without reading it."""

from __future__ import annotations

import operator
import os
from functools import reduce
from typing import Any

import msgspec

from tokentop.engine.tail import Tailer
from tokentop.model import FileHealth
from tokentop.sources.base import FileParser, Source
from tokentop.sources.wholefile import WholeFileParser


class Tracked:
    """A file being followed: its source, tailer and parser."""

    __slots__ = ("parser", "source", "tailer")

    def __init__(self, source: Source, tailer: Tailer, parser: FileParser) -> None:
        self.source = source
        self.tailer = tailer
        self.parser = parser

    def health(self) -> FileHealth:
        p = self.parser
        return FileHealth(
            p.path, self.source.name, self.tailer.state.offset, p.lines, p.bad_lines, p.last_error
        )


_DECODERS: dict[tuple[type[FileParser], ...], msgspec.msgpack.Decoder[Any]] = {}


def parser_decoder() -> msgspec.msgpack.Decoder[Any]:
    """Decodes any parser by its tag: one decoder for every cached file, where asking each
    source for a parser to learn its type costs a warm restart ~10 ms per 1000 files."""
    kinds = tuple(_tagged(FileParser))
    decoder = _DECODERS.get(kinds)
    if decoder is None:
        decoder = _DECODERS[kinds] = msgspec.msgpack.Decoder(reduce(operator.or_, kinds))
    return decoder


def whole_file_kinds() -> set[str]:
    """Parser tags of the files that are rewritten whole (their size says nothing)."""
    return {
        str(k.__struct_config__.tag) for k in _tagged(FileParser) if issubclass(k, WholeFileParser)
    }


def _tagged(cls: type[FileParser]) -> list[type[FileParser]]:
    found: list[type[FileParser]] = []
    for sub in cls.__subclasses__():
        if sub.__struct_config__.tag is not None:
            found.append(sub)
        found += _tagged(sub)
    return found


def unchanged(tailer: Tailer, path: str) -> bool:
    """Same file, fully read, not touched since: one stat instead of open/fstat/read/close
    (warm restarts). A moved mtime sends it to the tailer, which checks its first bytes."""
    state = tailer.state
    if not state.inode or tailer.pending_bytes:
        return False
    try:
        st = os.stat(path)
    except OSError:
        return False
    return (
        st.st_ino == state.inode
        and st.st_dev == state.dev
        and st.st_size == state.offset
        and st.st_mtime_ns == state.mtime_ns
    )
