"""The contract between the tailer and a format: where files are, and how bytes become events."""

from __future__ import annotations

import os
from _blake2 import blake2b  # the builtin; `hashlib` also loads OpenSSL (~10 ms at startup)
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Annotated, ClassVar, Protocol

import msgspec

from tokentop.model import Event, EventRun

MAX_LINE_BYTES = 16 * 1024 * 1024
"""Lines longer than this are counted as bad without decoding (guards memory on junk files)."""

MAX_COUNT = 10**15
"""Largest token count a record may carry in one field. Real responses stay below 10**7 and
cumulative counters below 10**11; the cap keeps every per-response count far inside the
ledger's int64 arrays and SQLite's INTEGER, however hostile the file."""

Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_COUNT)]
"""A token count. Null, negative, bool, float or over `MAX_COUNT` fails the decode, so the
line is counted as bad with the reason."""

MAX_TIMESTAMP = 253402128000.0
"""9999-12-30T00:00:00Z: later instants may not be printable. An aware datetime late on
9999-12-31 can stand for a Unix time that no UTC or local datetime holds, and printing
one raised (year 10000 is out of range)."""

DECODE_ERRORS = (
    msgspec.DecodeError,
    msgspec.ValidationError,
    RecursionError,
)
"""What decoding an untrusted line may raise. msgspec raises RecursionError for JSON nested
deeper than the interpreter's recursion limit, even inside a skipped or Raw field; such a
line is bad, never fatal."""


class FileParser(msgspec.Struct, tag_field="kind"):
    """Per-file parse state. A Struct so the cache can persist it next to the file's offset.

    `feed` receives only complete lines (the tailer keeps partial ones), may be called many
    times, and must give the same events whatever way the bytes are split into calls.
    """

    path: str
    lines: int = 0
    bad_lines: int = 0
    last_error: str = ""

    def feed(self, data: bytes, out: list[Event]) -> None:
        raise NotImplementedError

    def feed_runs(self, data: bytes, out: list[Event | EventRun]) -> None:
        """`feed`, where a parser may give runs (EventRun) for the ledger to count in bulk."""
        self.feed(data, out)  # type: ignore[arg-type]

    def bad(self, reason: str, count: int = 1) -> None:
        """Count a line that could not be used; the reason is kept for display."""
        self.bad_lines += count
        self.last_error = name_text(reason[:200])


class Source(Protocol):
    """One agent format: its roots on disk and a parser factory."""

    name: ClassVar[str]
    """Agent name; also the SessionKey.agent of its events."""
    # A source may also set `suffixes: tuple[str, ...]` (file endings to discover; the
    # engine defaults to (".jsonl",)).

    def roots(self) -> list[Path]:
        """Directories to scan and watch; missing ones are skipped by the caller."""
        ...

    def is_transcript(self, path: Path) -> bool:
        """Whether a file under a root is one of this source's transcripts."""
        ...

    def new_parser(self, path: Path) -> FileParser: ...


class DirSource:
    """A source whose roots come from agent folders: the ones given, else the agent's
    defaults (`default_dirs`), each mapped to its roots by `roots_in`."""

    name: ClassVar[str]
    layout: ClassVar[str] = "DIR/**/*.jsonl"
    """Where its transcripts sit under a `--KEY-dir`, said when one given holds none."""

    def __init__(self, dirs: list[Path] | None = None, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        folders = dirs if dirs is not None else self.default_dirs(env)
        self._roots = list(dict.fromkeys(r for f in folders for r in self.roots_in(f)))
        self._prefixes = prefixes(self._roots)

    @staticmethod
    def default_dirs(env: Mapping[str, str]) -> list[Path]:
        raise NotImplementedError

    def roots_in(self, folder: Path) -> list[Path]:
        return [folder]

    def roots(self) -> list[Path]:
        return list(self._roots)

    def is_transcript(self, path: Path) -> bool:
        return path.suffix == ".jsonl" and under(str(path), self._prefixes)

    def is_transcript_name(self, name: str) -> bool:
        """`is_transcript` for a name a folder walk found, without building a Path unless
        a subclass has its own `is_transcript`: called for every file found."""
        if type(self).is_transcript is not DirSource.is_transcript:
            return self.is_transcript(Path(name))
        base = os.path.basename(name)
        return base.endswith(".jsonl") and base != ".jsonl" and under(name, self._prefixes)

    def new_parser(self, path: Path) -> FileParser:
        raise NotImplementedError


def prefixes(roots: list[Path]) -> tuple[str, ...]:
    """The roots as string prefixes for `under`."""
    return tuple(os.path.join(str(root), "") for root in roots)


def under(name: str, roots: tuple[str, ...]) -> bool:
    """`Path(name).is_relative_to(root)` for any of `roots` (from `prefixes`), for a path
    as `str(Path)` writes it, without building Paths: called for every file found."""
    return name.startswith(roots) or os.path.join(name, "") in roots


def env_dirs(env: Mapping[str, str], var: str) -> list[Path]:
    """The folders of a comma list in `$var` ("~" is the env's HOME); [] when it is unset."""
    home = env.get("HOME") or str(Path.home())
    listed = (p.strip() for p in env.get(var, "").split(","))
    return [Path(home + p[1:]) if p == "~" or p.startswith("~/") else Path(p) for p in listed if p]


class FileListSource:
    """A source whose roots are files named on the command line, each its own root."""

    name: ClassVar[str]
    parser_type: ClassVar[type[FileParser]]

    def __init__(self, files: list[Path]) -> None:
        self._files = [Path(f) for f in files]

    def roots(self) -> list[Path]:
        return list(self._files)

    def is_transcript(self, path: Path) -> bool:
        return path in self._files

    def new_parser(self, path: Path) -> FileParser:
        return self.parser_type(path=name_text(path))


def walk_files(root: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    """Yield files under `root` ending in one of `suffixes`; unreadable folders are skipped."""
    return map(Path, walk_names(str(root), suffixes))


def walk_names(root: str, suffixes: tuple[str, ...]) -> Iterator[str]:
    """`walk_files` as plain path strings, for callers that skip most of what they find."""
    return Walk(suffixes).names(root)


FileId = tuple[int, int]
"""(st_dev, st_ino): a file whatever path reaches it."""


class Walk:
    """Walks folders for transcripts, following symlinked folders.

    A folder is walked once per name it is reached under, so a symlink loop ends (its
    second round finds every folder inside already walked) while a folder linked under
    another name is still seen by it (a source may care: Gemini's `chats`). A file reached
    by several paths is yielded once: under the first path `wanted` accepts. Entries are
    taken in name order, so every walk picks the same path. Anything that is not a folder is
    yielded (a FIFO or device too: the reader then lists it as unreadable instead of it
    being skipped without a word). Folders that cannot be listed are kept in `unreadable`.
    """

    def __init__(
        self,
        suffixes: tuple[str, ...],
        seen_files: set[FileId] | None = None,
        wanted: Callable[[str], bool] | None = None,
    ) -> None:
        self.suffixes = suffixes
        self.seen_dirs: set[tuple[int, int, str]] = set()
        self.seen_files: set[FileId] = set() if seen_files is None else seen_files
        self.wanted = wanted
        self.unreadable: list[tuple[str, str]] = []

    def names(self, root: str) -> Iterator[str]:
        """Each wanted file under `root` not yielded before."""
        try:
            st = os.stat(root)
        except OSError:
            return
        stack = [(root, st.st_dev)]
        self.seen_dirs.add((st.st_dev, st.st_ino, ""))
        while stack:
            folder, dev = stack.pop()
            try:
                with os.scandir(folder) as listing:
                    entries = sorted(listing, key=_name, reverse=True)
            except OSError as exc:
                self.unreadable.append((folder, exc.strerror or str(exc)))
                continue
            yield from self._files(entries, dev, stack)

    def _files(
        self, entries: list[os.DirEntry[str]], dev: int, stack: list[tuple[str, int]]
    ) -> Iterator[str]:
        for entry in entries:
            try:
                if entry.is_dir():  # follows a symlink
                    self._folder(entry, stack)
                elif entry.name.endswith(self.suffixes):
                    file_id = _stat_id(entry) if entry.is_symlink() else (dev, entry.inode())
                    if file_id in self.seen_files:
                        continue
                    if self.wanted is None or self.wanted(entry.path):
                        self.seen_files.add(file_id)
                        yield entry.path
            except OSError:
                continue  # vanished (or a dangling link) between listing and looking

    def _folder(self, entry: os.DirEntry[str], stack: list[tuple[str, int]]) -> None:
        dev, ino = _stat_id(entry)  # a stat per folder: its device may differ (a mount)
        if (dev, ino, entry.name) not in self.seen_dirs:
            self.seen_dirs.add((dev, ino, entry.name))
            stack.append((entry.path, dev))


def transcript_names(source: Source) -> Callable[[str], bool]:
    """`source.is_transcript` for a path given as a string (what a folder walk finds)."""
    fast: Callable[[str], bool] | None = getattr(source, "is_transcript_name", None)
    return fast if fast is not None else lambda name: source.is_transcript(Path(name))


def _name(entry: os.DirEntry[str]) -> str:
    return entry.name


def _stat_id(entry: os.DirEntry[str]) -> FileId:
    st = entry.stat()  # follows the link
    return st.st_dev, st.st_ino


def iter_marked_lines(data: bytes, markers: tuple[bytes, ...]) -> Iterator[bytes]:
    """Yield each line of `data` that contains any marker, in order, without splitting the rest.

    A cold scan spends most of its time on huge tool-output lines that carry no usage;
    a C-level byte search skips them without decoding.
    """
    if len(markers) == 1:
        spans: Iterator[tuple[int, int]] | list[tuple[int, int]] = _marked_spans(data, markers[0])
    else:
        spans = sorted({span for marker in markers for span in _marked_spans(data, marker)})
    for start, end in spans:
        yield data[start:end]


def _marked_spans(data: bytes, marker: bytes) -> Iterator[tuple[int, int]]:
    find = data.find
    rfind = data.rfind
    pos = find(marker)
    while pos >= 0:
        start = rfind(b"\n", 0, pos) + 1
        end = find(b"\n", pos)
        if end < 0:
            end = len(data)
        yield start, end
        pos = find(marker, end)


def name_text(name: str | os.PathLike[str]) -> str:
    """A file name as text that can always be encoded (JSON, msgpack, SQLite). Control
    characters are left alone: making text safe for a terminal is the display's job.

    Names that are valid UTF-8 are returned as they are. In one that is not, every byte that
    does not decode (kept by Python as a surrogate, `surrogateescape`) is written `\\xNN`
    and every backslash is doubled, so the exact bytes can be recovered.
    """
    text = os.fspath(name)
    try:
        text.encode()
    except UnicodeEncodeError:
        raw = text.encode("utf-8", "surrogateescape") if _escapable(text) else None
        if raw is None:  # a lone surrogate that no file name decodes to
            return text.encode("utf-8", "backslashreplace").decode()
        return raw.replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")
    return text


def _escapable(text: str) -> bool:
    return all(not 0xD800 <= ord(c) <= 0xDFFF or 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def bounded_ts(value: float) -> float:
    """A Unix time read from a file, or 0.0 when it is not finite or outside 1970..9999."""
    return value if 0.0 <= value <= MAX_TIMESTAMP else 0.0


def bad_reason(exc: BaseException) -> str:
    """Why a line failed to decode, in words (a RecursionError's text says nothing useful)."""
    if isinstance(exc, RecursionError):
        return "JSON nested too deep"
    return str(exc)


def parse_iso(value: str) -> float:
    """ISO-8601 timestamp ('Z' or offset) to Unix seconds; 0.0 when unparseable."""
    try:
        return bounded_ts(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
    except (ValueError, AttributeError, OverflowError):
        return 0.0


def short_hash(data: bytes) -> str:
    """Stable 16-hex digest, used to compare tool inputs and outputs without keeping them."""
    return blake2b(data, digest_size=8).hexdigest()


FILE_CHANGING_TOOLS = frozenset(
    {"Edit", "Write", "MultiEdit", "NotebookEdit", "apply_patch", "write_file", "replace", "edit"}
)
"""Tool names that change files; the drift detector looks for them."""
READ_TOOLS = frozenset(
    {
        "Read", "Grep", "Glob", "LS", "WebFetch", "WebSearch", "NotebookRead",  # Claude Code
        "read_file", "read_many_files", "list_directory", "glob", "search_file_content",
        "google_web_search", "web_fetch",  # Gemini CLI, Qwen Code
        "read", "grep", "find", "ls", "web_search", "view", "list",  # OpenClaw, Pi, opencode
    }
)  # fmt: skip
"""Tool names that only read (files, searches, the web): the routing check counts them. A
shell command may read or write, so it never counts as a read."""
