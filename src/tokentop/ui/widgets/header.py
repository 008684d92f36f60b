"""HeaderTotals: today's spend, the burn right now, live sessions, what needs attention, and
the vendors' usage windows (official with their age, or computed)."""

from __future__ import annotations

from typing import NamedTuple

from rich.text import Text
from textual.widgets import Static

from tokentop.engine.coldscan import ScanProgress
from tokentop.render import figures as fmt
from tokentop.render.overview import ListedTotal, Totals, WindowFigure


class HeaderState(NamedTuple):
    """What the header shows besides the totals."""

    sort: str
    descending: bool
    refresh_s: float
    filter_text: str
    tagged: int
    read_only: bool
    errors_key: str
    progress: ScanProgress | None = None
    show_all: bool = False
    show_all_key: str = "a"


class HeaderTotals(Static):
    """Two lines: money and rates, then view state and warnings; then one line per vendor
    window figure known (official with its age, or computed). A line too long for the
    screen ends in an ellipsis."""

    def show(
        self, totals: Totals, state: HeaderState, windows: tuple[WindowFigure, ...] = ()
    ) -> None:
        lines = [money_line(totals), state_line(totals, state)]
        lines += [window_line(figure) for figure in windows]
        self.update(Text("\n").join(lines))


LEVEL_STYLES = {"ok": "bold", "warn": "bold yellow", "over": "bold red"}


def window_line(figure: WindowFigure) -> Text:
    """`Claude  5h 42% ↻17:40 · 7d 12% ↻Fri 15:00  (official, 2m ago)`."""
    line = Text.assemble((f"{figure.vendor:<7}", "bold"))
    for i, (text, level) in enumerate(figure.items):
        line.append(" · " if i else "", "dim")
        line.append(text, LEVEL_STYLES.get(level, ""))
    age = f", {figure.age} ago" if figure.age else ""
    line.append(f"  ({figure.kind}{age})", "italic dim")
    return line


class ListedTotalLine(Static):
    """Under the table: what the listed rows add up to (after the filter)."""

    def show(self, total: ListedTotal) -> None:
        self.update(listed_line(total))


def listed_line(t: ListedTotal) -> Text:
    mark = "≈" if t.estimated else ""
    cost = fmt.usd(t.cost, not t.cost_is_lower_bound)
    per_hour = fmt.usd(t.usd_per_hour, not t.rate_is_lower_bound)
    noun = "session" if t.sessions == 1 else "sessions"
    return Text.assemble(
        ("Σ ", "dim"),
        (f"{t.sessions} {noun}", "bold"),
        "  ",
        f"{mark}{fmt.compact(t.tokens)} tok",
        "  ",
        f"{mark}{cost}",
        ("   burn ", "dim"),
        (f"{fmt.compact(t.tokens_per_min)}/m {per_hour}/h", "cyan"),
    )


def money_line(t: Totals) -> Text:
    mark = "≈" if t.estimated else ""
    cost = mark + fmt.usd(t.cost, not t.cost_is_lower_bound)
    per_hour = fmt.usd(t.usd_per_hour, not t.rate_is_lower_bound)
    return Text.assemble(
        ("tokentop", "bold"),
        "  today ",
        (f"{mark}{fmt.compact(t.tokens)} tok", "bold"),
        " ",
        (cost, "bold"),
        "   now ",
        (f"{fmt.compact(t.tokens_per_min)} tok/min", "bold cyan"),
        " ",
        (f"{per_hour}/h", "bold cyan"),
        "   live ",
        (str(t.live), "bold green"),
        f" of {t.listed}",
    )


def state_line(t: Totals, s: HeaderState) -> Text:
    line = Text.assemble(
        ("sort ", "dim"),
        f"{s.sort}{'▼' if s.descending else '▲'}",
        ("   refresh ", "dim"),
        f"{s.refresh_s:g}s",
    )
    if s.filter_text:
        line.append_text(Text.assemble(("   filter ", "dim"), (repr(s.filter_text), "bold")))
    if s.tagged:
        line.append_text(Text.assemble("   ", (f"{s.tagged} tagged", "bold")))
    if s.show_all:
        line.append("   all sessions", "bold")
    elif t.hidden:
        line.append(f"   {t.hidden} older hidden ({s.show_all_key})", "bold")
    if t.bad_lines:
        where = f"{t.bad_files} file{'s' if t.bad_files != 1 else ''}"
        warning = f"   ⚠ {t.bad_lines} unparseable lines in {where} ({s.errors_key})"
        line.append(warning, "bold yellow")

    if s.progress is not None:
        line.append_text(progress_text(s.progress))
    if s.read_only:
        line.append("   READ-ONLY", "bold reverse")
    return line


def progress_text(p: ScanProgress) -> Text:
    """`reading history 120/1000 files 95 MB/859 MB ~6 s left`: older sessions still to come."""
    mb = 1024 * 1024
    eta = p.eta_s
    left = f" ~{eta:.0f} s left" if eta is not None else ""
    return Text(
        f"   reading history {p.files_done}/{p.files_total} files "
        f"{p.bytes_done / mb:.0f}/{p.bytes_total / mb:.0f} MB{left}",
        "bold magenta",
    )
