"""The one way figures read, in the app, the tables, the NDJSON-adjacent text, Markdown and
`run`'s status line: counts, money, durations, times and project names (no Textual here).
`compact` and `usd` live in quantities.py, below the policy, whose reasons show them too.

Money: "$1.23", "$0.004", "$1,234" above a thousand (a narrow cell), "-" for no figure. A cost
with an unpriced part is a lower bound, "≥$1.23"; with nothing priced it is unknown, "?".
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

from tokentop.model import SessionKey, base_name
from tokentop.quantities import compact as compact
from tokentop.quantities import usd as usd

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def cost(amount: float, unpriced: Sequence[str]) -> str:
    """A cost that never pretends: "?" when nothing is priced, "≥" when part is unpriced."""
    return usd(amount, not unpriced)


def per_hour(amount: float, unpriced: Sequence[str]) -> str:
    """A $/h rate as a narrow cell shows it: whole dollars from $10 ("$49", "$1,320"), so
    "60.1k/m $49/h" fits BURN's 15 columns; else as `cost`."""
    if amount >= 10:
        text = f"${amount:,.0f}"
        return text if not unpriced else f"≥{text}"
    return cost(amount, unpriced)


def when(ts: float, fmt: str = "%Y-%m-%d %H:%M") -> str:
    """Local time ("-" for none): a report is read by the person whose day it was."""
    return time.strftime(fmt, time.localtime(ts)) if ts else "-"


def project_name(cwd: str) -> str:
    """A session's project as every view names it: its cwd's last part (POSIX or Windows),
    cut to a column's width; "" for none. Escaping is the caller's (terminal or JSON)."""
    return base_name(cwd)


def short_session(text: str) -> str:
    """A session key's text ("agent:id") with its id cut to 8 characters, as tables show
    it; text that is no key is left as it is."""
    key = SessionKey.parse(text)
    return text if key is None else f"{key.agent}:{key.session_id[:8]}"


def sparkline(series: Sequence[float], width: int) -> str:
    """The last `width` values as block characters, scaled to the largest of them."""
    tail = list(series)[-width:]
    if not tail:
        return " " * width
    top = max(tail)
    if top <= 0:
        return (SPARK_BLOCKS[0] * len(tail)).rjust(width)
    steps = len(SPARK_BLOCKS) - 1
    blocks = "".join(SPARK_BLOCKS[round(v / top * steps)] if v > 0 else " " for v in tail)
    return blocks.rjust(width)


def bar(fraction: float, width: int) -> str:
    """A bar of `width` cells filled to `fraction` (capped at full), with eighth-cell steps."""
    capped = min(max(fraction, 0.0), 1.0)
    eighths = round(capped * width * 8)
    full, part = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[part] if part else ""
    return ("█" * full + partial).ljust(width)


def duration(seconds: float) -> str:
    """45s, 12m, 3h05, 1d22h, 12d: at most 5 characters (the ETA column's width); under
    ten days the hours stay (a report's active time of 1d22h is not "1d"); "∞" for unbounded."""
    if math.isinf(seconds):
        return "∞"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}"
    days, hours = s // 86400, s % 86400 // 3600
    return f"{days}d{hours:02d}h" if days < 10 else f"{days}d"


def eta(seconds: float | None, none: str = "-") -> str:
    """Time to a budget: `none` when there is no ETA (not live, not burning), "over" once
    the budget is reached."""
    if seconds is None:
        return none
    return "over" if seconds <= 0 else duration(seconds)


def percent(fraction: float) -> str:
    """At most 5 characters, however tiny the budget was: ">999%" beyond that."""
    if math.isinf(fraction):
        return "∞%"
    return f"{fraction * 100:.0f}%" if fraction < 9.995 else ">999%"


def bar_chart(series: Sequence[float], height: int) -> list[str]:
    """Rows (top first) of a column chart from zero to the largest value, one column per
    value, in eighth-block steps so small rates stay visible."""
    top = max(series, default=0)
    if top <= 0:
        return [" " * len(series)] * (height - 1) + [SPARK_BLOCKS[0] * len(series)]
    levels = [round(v / top * height * 8) for v in series]
    rows: list[str] = []
    for row in range(height - 1, -1, -1):
        floor = row * 8
        rows.append("".join(_column_cell(level - floor) for level in levels))
    return rows


def _column_cell(eighths: int) -> str:
    if eighths <= 0:
        return " "
    return "█" if eighths >= 8 else " ▁▂▃▄▅▆▇"[eighths]
