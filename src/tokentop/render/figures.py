"""Short human forms of numbers for narrow table cells (no Textual here, so easy to test)."""

from __future__ import annotations

import math
from collections.abc import Sequence

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


def compact(n: float) -> str:
    """1234 -> 1.2k, 2_500_000 -> 2.5M; at most 5 characters for counts below 1e15."""
    value = abs(n)
    for limit, suffix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= limit:
            scaled = n / limit
            return f"{scaled:.1f}{suffix}" if abs(scaled) < 100 else f"{scaled:.0f}{suffix}"
    return f"{n:.0f}"


def usd(amount: float) -> str:
    if amount >= 1000:
        return f"${amount:,.0f}"
    return f"${amount:.2f}" if amount >= 0.01 or amount == 0 else f"${amount:.3f}"


def cost(amount: float, unpriced: Sequence[str]) -> str:
    """A cost that never pretends: "?" when nothing is priced, "≥" when part is unpriced."""
    if not unpriced:
        return usd(amount)
    return "?" if amount <= 0 else f"≥{usd(amount)}"


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
    """45s, 12m, 3h05, 2d; "∞" for unbounded."""
    if math.isinf(seconds):
        return "∞"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}"
    return f"{s // 86400}d"


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
