"""The session table's view model: one RowView of plain strings per session.

Rows are compared as tuples, so the table touches only the cells whose text changed.
No Textual here (rich only measures cells); the widgets turn RowViews into styled cells.
"""

from __future__ import annotations

import functools
import re
import socket
from collections.abc import Callable, Iterator
from typing import Literal, NamedTuple

from rich.cells import cell_len, set_cell_size

from tokentop.config import Config
from tokentop.history.summary import base_name
from tokentop.model import SessionSnapshot
from tokentop.policy.budgets import BudgetUse, Level
from tokentop.policy.watchdog import Judged, SessionState
from tokentop.render import figures as fmt
from tokentop.render.overview import flags_text, since
from tokentop.render.text import safe

Status = SessionState
STATUS_LABELS = {"terminated": "term"}
"""A state too wide for the column, shortened (the details and history spell it out)."""
SortName = Literal["burn", "cost", "tokens", "budget", "recent", "project", "agent"]
SORTS: tuple[SortName, ...] = ("burn", "cost", "tokens", "budget", "recent", "project", "agent")
TEXT_SORTS = frozenset({"project", "agent"})
"""Text columns sort A→Z by default; numbers sort largest first."""
SPARK_WIDTH = 10
BAR_WIDTH = 6


class Column(NamedTuple):
    key: str
    label: str
    width: int
    sort: SortName | None = None


COLUMNS: tuple[Column, ...] = (
    Column("status", "STATUS", 8),
    Column("last", "LAST", 5, "recent"),
    Column("agent", "AGENT", 8, "agent"),  # opencode, openclaw, litellm: never cut
    Column("project", "PROJECT", 12, "project"),
    Column("models", "MODEL", 13),
    Column("tokens", "TOKENS", 6, "tokens"),
    Column("cost", "COST", 8, "cost"),
    Column("burn", "BURN", 15, "burn"),
    Column("spark", "LAST 10m", SPARK_WIDTH),
    Column("budget", "BUDGET", BAR_WIDTH + 5, "budget"),
    Column("eta", "ETA", 5),
    Column("flags", "FLAGS", 6),
)
GAP = 2
"""Spaces between columns (1 when that makes everything fit, as at 120 columns)."""
DROP_FIRST = ("spark", "models")
"""Below that width these go first (after HOST narrows to 8): the sparkline, then the model."""
NARROW = (("budget", 6), ("burn", 7), ("project", 10), ("cost", 7), ("last", 4))
"""Then these narrow: BUDGET to its percent, BURN to tokens/min, PROJECT down to 10, and COST
(a lower bound of $1,000 or more is cut), LAST (3h, 12d: never more than 4 wide)."""
DROP_LAST = ("host",)
"""Then HOST goes, before BUDGET, ETA and FLAGS (the details and the filter still have it)."""
GROW = (("project", 24), ("models", 16))
"""Width left over goes to PROJECT, then MODEL, up to these."""


class Layout(NamedTuple):
    """The columns shown at one width, and the gap between them."""

    columns: tuple[Column, ...]
    gap: int

    @property
    def width(self) -> int:
        return 1 + sum(c.width for c in self.columns) + self.gap * len(self.columns)


def layout_for(width: int, with_host: bool = False) -> Layout:
    """All columns when they fit, with a gap of 2, else of 1 (120 columns); else drop, then
    narrow, then drop HOST, keeping BUDGET, ETA and FLAGS on an 80-column terminal. PROJECT
    and MODEL take back any width left over."""
    layout = Layout(columns(with_host), GAP)
    for step in _squeezes():
        if layout.width <= width:
            break
        layout = step(layout)
    for key, most in GROW:
        column = next((c for c in layout.columns if c.key == key), None)
        room = width - layout.width
        if column is not None and room > 0 and column.width < most:
            layout = _resized(layout, key, min(most, column.width + room))
    return layout


def _squeezes() -> Iterator[Callable[[Layout], Layout]]:
    """Each way to make a layout narrower, in the order they are tried."""
    yield functools.partial(_with_gap, gap=1)
    yield functools.partial(_resized, key="host", width=8)
    for key in DROP_FIRST:
        yield functools.partial(_without, key=key)
    for key, narrow in NARROW:
        yield functools.partial(_resized, key=key, width=narrow)
    for key in DROP_LAST:
        yield functools.partial(_without, key=key)


def _with_gap(layout: Layout, gap: int) -> Layout:
    return layout._replace(gap=gap)


def header_label(column: Column, sort: SortName, descending: bool) -> str:
    """A column's title, with the sort's marker when it orders the rows (htop style); a
    title as wide as its column gives up its last letter for the marker (TOKEN▼)."""
    if column.sort != sort:
        return column.label[: column.width]
    return column.label[: column.width - 1] + ("▼" if descending else "▲")


def _without(layout: Layout, key: str) -> Layout:
    return layout._replace(columns=tuple(c for c in layout.columns if c.key != key))


def _resized(layout: Layout, key: str, width: int) -> Layout:
    return layout._replace(
        columns=tuple(c._replace(width=width) if c.key == key else c for c in layout.columns)
    )


def fit(value: str, width: int, key: str) -> str:
    """A cell cut to its column's width in terminal cells (a CJK character or an emoji takes
    two): BUDGET keeps its percent, BURN whole words, names an …."""
    if cell_len(value) <= width:
        return value
    if key == "budget":
        return value.rsplit(" ", 1)[-1][-width:]
    if key == "burn":
        words = value.split(" ")
        kept = words[0]
        for word in words[1:]:
            if cell_len(kept) + 1 + cell_len(word) > width:
                break
            kept += " " + word
        return set_cell_size(kept, width).rstrip()
    if key in ("project", "models", "agent", "host"):
        return set_cell_size(value, width - 1).rstrip() + "…"
    return set_cell_size(value, width).rstrip()


def pad(value: str, width: int, right: bool = False) -> str:
    """`value` (already fitted) padded to `width` cells, on the left when `right`."""
    room = " " * max(0, width - cell_len(value))
    return room + value if right else value + room


HOST_COLUMN = Column("host", "HOST", 12)
"""Shown after AGENT once sessions come from more than one machine (telemetry)."""


def columns(with_host: bool) -> tuple[Column, ...]:
    if not with_host:
        return COLUMNS
    at = [c.key for c in COLUMNS].index("agent") + 1
    return (*COLUMNS[:at], HOST_COLUMN, *COLUMNS[at:])


@functools.cache
def local_host() -> str:
    """This machine's name, shown for local sessions in the HOST column."""
    return socket.gethostname()


FLAG_LEGEND = (
    ("O", "over budget"),
    ("W", "budget warning"),
    ("E", "unparseable lines in this session's files (details: enter)"),
    ("?", "a model has no price, so cost is a lower bound"),
    ("≈", "tokens estimated with a tokenizer, not recorded"),
    ("L", "loop: the same tool call or error over and over (reason in details)"),
    ("D", "drift: many responses without changing a file"),
    ("R", "runaway: a burn rate above the policy's limit for minutes"),
    ("S", "stall: silent for minutes while its process still runs"),
)


class RowView(NamedTuple):
    """What one table row shows, as plain text plus the two facts that pick its colours."""

    status: str
    last: str
    agent: str
    project: str
    models: str
    tokens: str
    cost: str
    burn: str
    spark: str
    budget: str
    eta: str
    flags: str
    level: Level
    tagged: bool
    host: str = ""


def project_name(cwd: str) -> str:
    """The cwd's last folder, bounded and escaped (a transcript's cwd is untrusted)."""
    return safe(base_name(cwd)) or "?"


_DATE_SUFFIX = re.compile(r"-\d{8}$")


def short_model(model: str) -> str:
    """claude-sonnet-4-5-20250929 -> sonnet-4-5: the part that tells models apart. The vendor
    stays when the family name does not follow it (claude-3-5-sonnet is not "3-5-sonnet")."""
    rest = model.removeprefix("claude-")
    return _DATE_SUFFIX.sub("", rest if rest[:1].isalpha() else model)


def models_text(session: SessionSnapshot) -> str:
    """The latest model, plus how many others the session used."""
    names = [m for _, m in session.model_timeline] or [m.model for m in session.models]
    if not names:
        return "?"
    others = len({*names} - {names[-1]})
    return short_model(names[-1]) + (f" +{others}" if others else "")


def burn_text(session: SessionSnapshot) -> str:
    if session.tokens_per_min <= 0 and session.usd_per_hour <= 0:
        return "—"
    per_hour = fmt.per_hour(session.usd_per_hour, session.unpriced_models)
    return f"{fmt.compact(session.tokens_per_min)}/m {per_hour}/h"


def budget_text(use: BudgetUse) -> str:
    if use.fraction is None:
        return ""
    mark = "≥" if use.lower_bound else ""
    return f"{fmt.bar(use.fraction, BAR_WIDTH)} {mark}{fmt.percent(use.fraction)}"


def eta_text(use: BudgetUse) -> str:
    """Time left at the current pace; the Watchdog gives none unless the session is live."""
    return fmt.eta(use.eta_s, "")


def approx(text: str, estimated: bool) -> str:
    """Figures built on tokenizer estimates are marked ≈ wherever they are shown."""
    return f"≈{text}" if estimated else text


def tokens_text(session: SessionSnapshot) -> str:
    return approx(fmt.compact(session.tokens.total), session.estimated)


def cost_text(session: SessionSnapshot) -> str:
    return approx(fmt.cost(session.cost_usd, session.unpriced_models), session.estimated)


def row_view(
    session: SessionSnapshot,
    use: BudgetUse,
    status: Status,
    tagged: bool,
    detected: str = "",
    now: float = 0.0,
) -> RowView:
    return RowView(
        STATUS_LABELS.get(status, status),
        since(now, session.last_response_ts) if now else "",
        safe(session.key.agent),
        project_name(session.cwd),
        safe(models_text(session)),
        tokens_text(session),
        cost_text(session),
        burn_text(session),
        fmt.sparkline(session.burn_series, SPARK_WIDTH),
        budget_text(use),
        eta_text(use),
        flags_text(session, use, detected),
        use.level,
        tagged,
        session.host or local_host(),
    )


def search_text(session: SessionSnapshot) -> str:
    """Everything the filter matches against, lower-cased."""
    models = " ".join(m.model for m in session.models)
    parts = (str(session.key), session.cwd, session.branch, models, session.host or local_host())
    return " ".join(parts).lower()


def sort_value(session: SessionSnapshot, use: BudgetUse, sort: SortName) -> tuple[object, ...]:
    """A key for `sort`; the session key last keeps equal rows in a stable order."""
    tie = str(session.key)
    if sort == "burn":
        return (session.tokens_per_min, session.usd_per_hour, session.last_ts, tie)
    if sort == "cost":
        return (session.cost_usd, tie)
    if sort == "tokens":
        return (session.tokens.total, tie)
    if sort == "budget":
        return (use.fraction if use.fraction is not None else -1.0, tie)
    if sort == "recent":
        return (session.last_ts, tie)
    if sort == "project":
        return (project_name(session.cwd).lower(), tie)
    return (session.key.agent, tie)


def descending(sort: SortName, reverse: bool) -> bool:
    return (sort not in TEXT_SORTS) != reverse


class Listed:
    """A listed session as the watchdog judged it; its row and search text are memos."""

    __slots__ = ("judged", "row", "row_key", "search")

    def __init__(self, judged: Judged) -> None:
        self.row_key = str(judged.session.key)
        self.judged = judged
        self.row: RowView | None = None
        self.search = ""

    @property
    def session(self) -> SessionSnapshot:
        return self.judged.session

    @property
    def use(self) -> BudgetUse:
        return self.judged.use

    @property
    def status(self) -> Status:
        return self.judged.state

    def same(self, judged: Judged) -> bool:
        """Judged alike (the engine hands back the same object for a quiet session)."""
        old = self.judged
        if old is judged:  # the Watchdog reuses a quiet session's judgement too
            return True
        if old.session is not judged.session and old.session != judged.session:
            return False
        return (old.state, old.use, old.flags) == (judged.state, judged.use, judged.flags)


def empty_text(
    total: int, shown: int, listed: bool, config: Config, show_all_key: str, roots: list[str]
) -> str:
    """Why the table is empty: a filter, hide_after_h, or no session at all yet."""
    if shown:
        return ""
    if listed:
        return "No session matches the filter (escape clears it)."
    if total:
        hours = f"{config.hide_after_h:g}"
        return (
            f"{total} session(s), none active in the last {hours} h (hide_after_h). "
            f"Press {show_all_key} to show them."
        )
    where = "\n".join(f"  {r.replace(':', '  ', 1)}" for r in roots)
    return (
        "No agent sessions found yet. tokentop is watching:\n"
        f"{where}\nStart an agent, or try `tokentop demo`."
    )
