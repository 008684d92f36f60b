"""Generic JSONL, so anything can be piped in: `tokentop --jsonl FILE` (repeatable).

One JSON object per line (fields other than these are ignored):

| field | required | meaning |
|---|---|---|
| `session` | yes | session id (string) |
| `timestamp` | yes | ISO-8601 string, or Unix seconds (milliseconds if above 1e12) |
| `model` | no | model name, used for pricing |
| `input_tokens` | no | uncached input tokens |
| `output_tokens` | no | output tokens (reasoning excluded) |
| `cache_read_tokens`, `cache_write_tokens`, `reasoning_tokens` | no | the other billed kinds |
| `text` | no | response text; counted as output with the tokenizer when no counts are given |
| `input_text` | no | prompt text; counted as input likewise |
| `cost_usd` | no | recorded cost; otherwise the price table prices the tokens |
| `id` | no | call id: a line whose id was seen counts once, at its largest total |
| `agent` | no | label shown as the agent (default `jsonl`) |
| `cwd` | no | working directory shown as the project |

Counted figures from text are marked `estimated`. Lines without `id` are keyed by file and
byte offset, which is stable for an appended file; give an `id` if the file is rewritten.
"""

from __future__ import annotations

from typing import ClassVar

import msgspec

from tokentop import tokens as tokens_mod
from tokentop.model import Event, SessionKey, TokenCounts, UsageEvent
from tokentop.sources.base import Count, FileListSource, FileParser, bounded_ts, parse_iso
from tokentop.sources.jsonlines import JsonLinesParser

AGENT = "jsonl"


class _Line(msgspec.Struct, gc=False):
    session: str
    timestamp: float | str
    model: str = ""
    input_tokens: Count | None = None
    output_tokens: Count | None = None
    cache_read_tokens: Count | None = None
    cache_write_tokens: Count | None = None
    reasoning_tokens: Count | None = None
    text: str | None = None
    input_text: str | None = None
    cost_usd: float | None = None
    id: str | None = None
    agent: str | None = None
    cwd: str = ""


_LINE = msgspec.json.Decoder(_Line)


def epoch(value: float | str) -> float:
    if isinstance(value, str):
        return parse_iso(value)
    return bounded_ts(value / 1000.0 if value > 1e12 else float(value))


class GenericFileParser(JsonLinesParser, tag="jsonl"):
    """Stateless per line (beyond the offset), so any split of the file parses the same."""

    def line(self, raw: bytes, offset: int, out: list[Event]) -> None:
        rec = _LINE.decode(raw)
        ts = epoch(rec.timestamp)
        if not rec.session or ts <= 0:
            raise msgspec.ValidationError("`session` and a valid `timestamp` are required")
        counts = TokenCounts(
            input=rec.input_tokens or 0,
            output=rec.output_tokens or 0,
            cache_read=rec.cache_read_tokens or 0,
            cache_write_5m=rec.cache_write_tokens or 0,
            reasoning=rec.reasoning_tokens or 0,
        )
        estimated = not counts.total and bool(rec.text or rec.input_text)
        if estimated:
            count = tokens_mod.get_tokenizer().count
            counts = TokenCounts(input=count(rec.input_text or ""), output=count(rec.text or ""))
        if not counts.total:
            return
        session = SessionKey(rec.agent or AGENT, rec.session)
        key = f"{AGENT}:{rec.session}:{rec.id}" if rec.id else f"{AGENT}:{self.path}#{offset}"
        out.append(
            UsageEvent(
                session,
                key,
                ts,
                rec.model,
                counts,
                rec.cwd,
                cost_usd=rec.cost_usd,
                estimated=estimated,
            )
        )


class GenericJsonlSource(FileListSource):
    """JSONL files given by path; each is its own root."""

    name: ClassVar[str] = AGENT
    parser_type: ClassVar[type[FileParser]] = GenericFileParser
