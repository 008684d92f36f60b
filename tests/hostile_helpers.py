"""Hostile input for every source: the variants of a sample line that must count as bad, and
trees of the fixture transcripts with those variants mixed in (see test_hostile_*.py)."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tokentop.engine.engine import Engine
from tokentop.model import LedgerSnapshot, TokenCounts
from tokentop.pricing import PriceTable
from tokentop.sources.base import Source
from tokentop.sources.claude_code import ClaudeCodeSource
from tokentop.sources.cline import ClineSource
from tokentop.sources.codex import CodexSource
from tokentop.sources.copilot import CopilotSource
from tokentop.sources.gemini import GeminiSource
from tokentop.sources.generic import GenericJsonlSource
from tokentop.sources.kimi import KimiSource
from tokentop.sources.litellm import LiteLLMSource
from tokentop.sources.openclaw import OpenClawSource
from tokentop.sources.opencode import OpencodeSource
from tokentop.sources.pi import PiSource
from tokentop.sources.qwen import QwenSource

FIXTURES = Path(__file__).parent / "fixtures"
DEPTH = 5000
"""Deeper than the interpreter's recursion limit (1000): msgspec raises RecursionError."""

OUT_OF_RANGE = [b"9223372036854775808", b"18446744073709551617", b"10000000000000000"]
OUT_OF_RANGE += [b"99999999999999999999999999999", b"-1", b"true", b"1.5", b"1e400"]


def deep(depth: int = DEPTH) -> bytes:
    return b"[" * depth + b"]" * depth


def hostile_variants(line: bytes, field: bytes) -> list[bytes]:
    """Copies of `line` that must each be a bad line: its first `field` count out of range
    (>= 2**63, over the cap, negative, bool, float), or JSON nested DEPTH deep at the top and
    next to the count."""
    pattern = re.compile(rb'("' + re.escape(field) + rb'"\s*:\s*)(-?\d+)')
    match = pattern.search(line)
    assert match is not None, (field, line[:200])
    start, end = match.span(2)
    out = [line[:start] + value + line[end:] for value in OUT_OF_RANGE]
    out.append(b'{"zz":' + deep() + b"," + line.lstrip()[1:])
    key_at = match.start(1)
    out.append(line[:key_at] + b'"zz":' + deep() + b"," + line[key_at:])
    return out


@dataclass(frozen=True)
class Case:
    """One source: its fixture files, the count field its usage lines carry, and how to
    build the source (and its `sessions` CLI options) over a copy of them."""

    name: str
    fixture: Path
    """A folder copied as the agent's folder, or a single file (a FileListSource)."""
    field: bytes
    make: Callable[[Path], Source]
    option: str
    whole_file: str = ""
    """Suffix of the files read whole (a hostile one is a separate, bad document)."""

    def root(self, tmp: Path) -> Path:
        return tmp / self.name / self.fixture.name


CASES = [
    Case("claude", FIXTURES / "claude/projects", b"output_tokens",
         lambda p: ClaudeCodeSource([p]), "--claude-dir"),
    Case("codex", FIXTURES / "codex", b"input_tokens", lambda p: CodexSource([p]), "--codex-dir"),
    Case("gemini", FIXTURES / "gemini/written", b"output",
         lambda p: GeminiSource([p]), "--gemini-dir"),
    Case("gemini-json", FIXTURES / "gemini/samples", b"output",
         lambda p: GeminiSource([p]), "--gemini-dir", whole_file=".json"),
    Case("openclaw", FIXTURES / "openclaw/written", b"output",
         lambda p: OpenClawSource([p]), "--openclaw-dir"),
    Case("opencode", FIXTURES / "opencode/samples", b"output",
         lambda p: OpencodeSource([p]), "--opencode-dir", whole_file=".json"),
    Case("litellm", FIXTURES / "litellm/written.jsonl", b"completion_tokens",
         lambda p: LiteLLMSource([p]), "--proxy-log"),
    Case("jsonl", FIXTURES / "generic/usage.jsonl", b"output_tokens",
         lambda p: GenericJsonlSource([p]), "--jsonl"),
    Case("pi", FIXTURES / "pi/samples/agent", b"output", lambda p: PiSource([p]), "--pi-dir"),
    Case("copilot", FIXTURES / "copilot/samples", b"outputTokens",
         lambda p: CopilotSource([p]), "--copilot-dir"),
    Case("cline", FIXTURES / "cline/samples/data", b"inputTokens",
         lambda p: ClineSource([p]), "--cline-dir", whole_file=".messages.json"),
    Case("qwen", FIXTURES / "qwen/samples", b"promptTokenCount",
         lambda p: QwenSource([p]), "--qwen-dir"),
    Case("kimi", FIXTURES / "kimi/samples/kimi-code", b"inputOther",
         lambda p: KimiSource([p]), "--kimi-dir"),
]  # fmt: skip
"""Goose, Crush and Kilo read SQLite rows, not lines: test_source_db_agents.py feeds them
hostile values."""


def copy_fixture(case: Case, tmp: Path) -> Path:
    root = case.root(tmp)
    root.parent.mkdir(parents=True, exist_ok=True)
    if case.fixture.is_dir():
        shutil.copytree(case.fixture, root)
    else:
        shutil.copy(case.fixture, root)
    return root


def usage_files(case: Case, root: Path) -> list[Path]:
    """The copied files that hold at least one count of `case.field`."""
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    source = case.make(root)
    roots = source.roots()
    needle = b'"' + case.field + b'"'
    return [
        p
        for p in files
        if needle in p.read_bytes()
        and source.is_transcript(p)
        and any(p == r or p.is_relative_to(r) for r in roots)
    ]


def make_hostile(case: Case, root: Path) -> int:
    """Mix hostile variants into the copied tree; returns how many bad records it added."""
    added = 0
    for path in usage_files(case, root):
        if case.whole_file and path.name.endswith(case.whole_file):
            stem = path.name.removesuffix(case.whole_file)
            for i, doc in enumerate(hostile_variants(path.read_bytes(), case.field)):
                path.with_name(f"{stem}-hostile{i}{case.whole_file}").write_bytes(doc)
                added += 1
            continue
        lines = path.read_bytes().splitlines(keepends=True)
        out: list[bytes] = []
        for line in lines:
            out.append(line)
            if re.search(rb'"' + case.field + rb'"\s*:\s*-?\d', line):
                variants = hostile_variants(line.rstrip(b"\n"), case.field)
                out += [v + b"\n" for v in variants]
                added += len(variants)
        path.write_bytes(b"".join(out))
    return added


def engine(case: Case, root: Path, cache_dir: Path | None = None) -> Engine:
    return Engine([case.make(root)], PriceTable.default().cost, workers=1, cache_dir=cache_dir)


def totals(snap: LedgerSnapshot) -> TokenCounts:
    return sum((s.tokens for s in snap.sessions), TokenCounts())


def clean_totals(case: Case, tmp: Path) -> tuple[TokenCounts, int]:
    """Totals and bad lines of an unmodified copy of the fixture."""
    root = copy_fixture(case, tmp / "clean")
    e = engine(case, root)
    e.scan()
    snap = e.snapshot()
    return totals(snap), snap.bad_lines
