"""`tokentop report --by block`: Claude's 5-hour blocks, computed as ccusage `blocks` does.

JSON carries ccusage's figures under tokentop's names (times in UTC ISO with milliseconds,
as ccusage writes them); the table shows local times, as every report does.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from tokentop.history.blocks import Block, iso_ms
from tokentop.render.figures import compact, duration, usd, when
from tokentop.render.report import aligned, encode_json
from tokentop.render.text import csv_text, md_inline, safe

HEADER = ("block", "state", "length", "responses", "tokens", "cost", "burn", "projected $",
          "projected tok", "left", "models")  # fmt: skip
NOTE = (
    "computed from the transcripts' timestamps by ccusage's rule (5-hour blocks from the first "
    "response's hour); Anthropic's own figures show with `tokentop statusline`"
)


def block_cells(b: Block, now: float) -> list[str]:
    if b.gap:
        return [when(b.start), "gap", duration(b.end - b.start), *[""] * 8]
    proj, burn = b.projection, b.burn
    last = b.last if b.last is not None else b.start
    return [
        when(b.start),
        "active" if b.active else "",
        duration((now if b.active else last) - b.start),
        str(b.entries),
        compact(b.tokens.total),
        usd(b.cost_usd, b.cost_complete),
        f"{usd(burn.usd_per_hour, b.cost_complete)}/h" if burn is not None else "",
        usd(proj.cost_usd, b.cost_complete) if proj is not None else "",
        compact(proj.tokens) if proj is not None else "",
        duration(max(b.end - now, 0)) if b.active else "",
        ", ".join(b.models),
    ]


def block_dict(b: Block) -> dict[str, Any]:
    t = b.tokens
    return {
        "id": b.id,
        "start": iso_ms(b.start),
        "end": iso_ms(b.end),
        "last_response": iso_ms(b.last) if b.last is not None else None,
        "active": b.active,
        "gap": b.gap,
        "responses": b.entries,
        "tokens": {
            "input": t.input,
            "output": t.output,
            "cache_write": t.cache_write,
            "cache_read": t.cache_read,
            "total": t.total,
        },
        "cost_usd": b.cost_usd,
        "cost_complete": b.cost_complete,
        "models": list(b.models),
        "burn": b.burn,
        "projection": b.projection,
    }


def render_blocks(
    fmt: str, blocks: Sequence[Block], now: float, since: float | None, bad_lines: int
) -> str:
    if fmt == "json":
        doc = {"by": "block", "since": since, "computed": NOTE, "bad_lines": bad_lines,
               "blocks": [block_dict(b) for b in blocks]}  # fmt: skip
        return encode_json(doc)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(HEADER)
        w.writerows([csv_text(c) for c in block_cells(b, now)] for b in blocks)
        return buf.getvalue()
    if not blocks:
        return "no Claude Code responses in the transcripts\n"
    if fmt == "md":
        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += [
            "| " + " | ".join(md_inline(c) for c in block_cells(b, now)) + " |" for b in blocks
        ]
        return "# tokentop report — 5-hour blocks\n\n" + "\n".join(lines) + f"\n\n_{NOTE}._\n"
    table = [[h.upper() for h in HEADER]] + [[safe(c) for c in block_cells(b, now)] for b in blocks]
    return aligned(table) + NOTE + "\n"
