"""Helpers shared by the Gemini/OpenClaw/opencode/LiteLLM/generic source tests."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import msgspec
import tiktoken

from tokentop.engine.engine import Engine
from tokentop.model import Event, LedgerSnapshot, SessionSnapshot, TokenCounts, UsageEvent
from tokentop.pricing import PriceTable
from tokentop.sources.base import FileParser, Source
from tokentop.tokens import TiktokenTokenizer


def usage(events: Iterable[Event]) -> list[UsageEvent]:
    return [e for e in events if isinstance(e, UsageEvent)]


def dedupe_sum(events: Iterable[Event]) -> TokenCounts:
    """What the ledger counts: per dedupe key the largest recorded copy (an estimate only
    while nothing was recorded), then the sum."""
    best: dict[str, UsageEvent] = {}
    for event in usage(events):
        kept = best.get(event.dedupe_key)
        if (
            kept is None
            or (kept.estimated and not event.estimated)
            or (kept.estimated == event.estimated and event.tokens.total > kept.tokens.total)
        ):
            best[event.dedupe_key] = event
    return sum((e.tokens for e in best.values()), TokenCounts())


def feed_split(
    parser: FileParser, data: bytes, cuts: Sequence[int], persist: bool = False
) -> tuple[FileParser, list[Event]]:
    """Feed `data` in pieces cut at `cuts`, as the tailer would: only complete lines per
    call (the remainder is carried). With `persist`, the parser goes through the cache's
    msgpack round trip between calls."""
    out: list[Event] = []
    carry = b""
    start = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        chunk = carry + data[start:cut]
        start = max(start, cut)
        last = chunk.rfind(b"\n")
        if last < 0:
            carry = chunk
            continue
        parser.feed(chunk[: last + 1], out)
        carry = chunk[last + 1 :]
        if persist:
            parser = msgspec.msgpack.decode(msgspec.msgpack.encode(parser), type=type(parser))
    return parser, out


def engine_for(*sources: Source) -> Engine:
    return Engine(list(sources), PriceTable.default().cost, workers=1)


def by_id(snap: LedgerSnapshot) -> dict[str, SessionSnapshot]:
    return {s.key.session_id: s for s in snap.sessions}


def tiny_tokenizer() -> TiktokenTokenizer:
    """A byte-level encoding (one token per byte, `ab` merged into one), built here: tests
    never download an encoding. "abab x" counts 4: ab, ab, " ", x."""
    ranks = {bytes([b]): b for b in range(256)}
    ranks[b"ab"] = 256
    encoding = tiktoken.Encoding(
        name="tiny", pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens={}
    )
    return TiktokenTokenizer(encoding)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path
