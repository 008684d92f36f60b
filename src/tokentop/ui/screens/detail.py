"""SessionDetail: one session's burn chart, tokens by kind and model, tools, process and files."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import ClassVar, NamedTuple

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import Static

from tokentop.history.git_output import GitValue, per_commit
from tokentop.history.reconcile import Reconciliation
from tokentop.model import FileHealth, SessionKey, SessionSnapshot
from tokentop.policy.budgets import BudgetUse
from tokentop.processes.protocols import ProcessInfo
from tokentop.quantities import plural
from tokentop.render import figures as fmt
from tokentop.render.text import command_line, safe
from tokentop.ui import keys
from tokentop.ui.views.history_rows import LABEL_STYLES
from tokentop.ui.views.rows import (
    Status,
    approx,
    budget_text,
    cost_text,
    eta_text,
    project_name,
    short_model,
    tokens_text,
)
from tokentop.ui.widgets.footer import KeyFooter

CHART_HEIGHT = 5
DETAIL_IDS = frozenset({"pause-resume", "terminate", "kill", "budget"})
"""Keys that act on the shown session from the details too."""
KINDS = ("input", "output", "cache_read", "cache_write_5m", "cache_write_1h", "reasoning")


class DetailView(NamedTuple):
    """Everything the detail screen shows, gathered by the app on each snapshot."""

    session: SessionSnapshot
    use: BudgetUse
    status: Status
    files: Sequence[FileHealth]
    now: float
    reasons: Sequence[str] = ()
    """Why the policy's detectors flag this session, if they do."""
    git: GitValue | None = None
    """What git says the session produced so far; None until git has answered."""
    reconciliation: Reconciliation | None = None
    """The same session as a transcript and in proxy logs, when both were found."""


class SessionDetail(Screen[None]):
    """The selected session in depth; updated live while open."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "app.pop_screen", "Back", id="back"),
        *keys.bindings(DETAIL_IDS),
    ]

    def __init__(self, key: SessionKey) -> None:
        super().__init__()
        self.key = key
        self.process_text: Text = Text("looking for its process…", style="dim")

    def compose(self) -> ComposeResult:
        yield Static(id="detail-title")
        yield Static(id="burn-chart")
        with Horizontal(id="detail-body"):
            with VerticalScroll(classes="detail-column"):
                yield Static(id="detail-tokens", classes="panel")
                yield Static(id="detail-models", classes="panel")
                yield Static(id="detail-reconciliation", classes="panel")
                yield Static(id="detail-timeline", classes="panel")
            with Vertical(classes="detail-column"):
                yield Static(id="detail-findings", classes="panel")
                yield Static(id="detail-commits", classes="panel")
                yield Static(id="detail-process", classes="panel")
                yield Static(id="detail-tools", classes="panel")
                yield Static(id="detail-files", classes="panel")
        yield KeyFooter()

    def show(self, view: DetailView) -> None:
        s = view.session
        self.query_one("#detail-title", Static).update(title_text(view))
        chart = burn_chart(s, self.size.width - 16)
        self.query_one("#burn-chart", Static).update(chart)
        self._panel("#detail-tokens", "Tokens by kind", tokens_table(s))
        self._panel("#detail-models", "By model", models_table(s))
        self._panel("#detail-timeline", "Model timeline", timeline_text(s, view.now))
        self._panel("#detail-tools", "Tools", tools_table(s, view.now))
        self._panel("#detail-files", "Files", files_table(s, view.files))
        self._panel("#detail-process", "Process", self.process_text)
        self._panel("#detail-commits", "Commits", commits_table(s, view.git, view.now))
        recon = self.query_one("#detail-reconciliation", Static)
        recon.display = view.reconciliation is not None
        if view.reconciliation is not None:
            body = reconciliation_table(view.reconciliation)
            self._panel("#detail-reconciliation", "Transcript vs proxy", body)
        findings = self.query_one("#detail-findings", Static)
        findings.display = bool(view.reasons)
        if view.reasons:
            reasons = "\n".join(safe(r) for r in view.reasons)
            self._panel("#detail-findings", "Detected", Text(reasons, "yellow"))

    def show_process(self, ref: ProcessInfo | None) -> None:
        self.process_text = process_text(ref)
        self._panel("#detail-process", "Process", self.process_text)

    def _panel(self, selector: str, title: str, body: RenderableType) -> None:
        self.query_one(selector, Static).update(Group(Text(title, style="bold underline"), body))


def title_text(view: DetailView) -> Text:
    s, use = view.session, view.use
    budget = budget_text(use) or "no budget"
    eta = eta_text(use)
    return Text.assemble(
        (safe(project_name(s.cwd)), "bold"),
        f"  {safe(str(s.key))}  ",
        (view.status, "bold"),
        f"  {safe(s.cwd)}" + (f" ({safe(s.branch)})" if s.branch else ""),
        "\n",
        f"{tokens_text(s)} tokens  {cost_text(s)}  budget {budget}",
        f"  ETA {eta}" if eta else "",  # before the rest: an 80-column line ends about here
        f"   {s.responses} responses  started {fmt.duration(view.now - s.first_ts)} ago, ",
        f"last activity {fmt.duration(view.now - s.last_ts)} ago",
    )


def burn_chart(s: SessionSnapshot, width: int) -> Group:
    """One column group per minute, stretched to the width, zero at the bottom."""
    heading = Text.assemble(
        ("Burn (tokens/min)  ", "bold underline"),
        f"now {fmt.compact(s.tokens_per_min)}/m  {fmt.cost(s.usd_per_hour, s.unpriced_models)}/h",
    )
    series = list(s.burn_series)[-max(width, 1) :]
    if not series:
        return Group(heading, Text("no activity in the last minutes", style="dim"))
    stretch = max(1, min(6, width // len(series)))
    columns = [v for v in series for _ in range(stretch)]
    label = f"max {fmt.compact(max(series))}/m"
    lines = [
        Text.assemble((f"{label if i == 0 else '':>12} ", "dim"), (row, "cyan"))
        for i, row in enumerate(fmt.bar_chart(columns, CHART_HEIGHT))
    ]
    start = f"-{len(series)}m"
    axis = " " * 13 + start + "now".rjust(len(columns) - len(start))
    return Group(heading, *lines, Text(axis, style="dim"))


def tokens_table(s: SessionSnapshot) -> Table | Group:
    table = Table("kind", "tokens", "share", box=None, header_style="dim")
    total = s.tokens.total or 1
    for kind in KINDS:
        count: int = getattr(s.tokens, kind)
        if count:
            table.add_row(kind, fmt.compact(count), fmt.percent(count / total))
    table.add_row(Text("total", style="bold"), Text(tokens_text(s), style="bold"))
    if s.estimated:
        return Group(table, Text("≈ some tokens estimated with a tokenizer", style="dim"))
    return table


def models_table(s: SessionSnapshot) -> Table:
    table = Table("model", "tokens", "resp", "cost", box=None, header_style="dim")
    for m in sorted(s.models, key=lambda m: -m.tokens.total):
        tokens = approx(fmt.compact(m.tokens.total), s.estimated)
        cost = approx(fmt.usd(m.cost_usd), s.estimated) if m.cost_usd is not None else None
        price = Text("no price", "yellow") if cost is None else cost
        table.add_row(Text(safe(short_model(m.model))), tokens, str(m.responses), price)
    return table


def reconciliation_table(r: Reconciliation) -> Group:
    """Both totals of one session and the difference (proxy − transcript)."""
    how = {"session_id": "session id", "request_id": "request id"}.get(
        r.matched_by, "time window, model and cwd"
    )
    table = Table("", "tokens", "cost", "responses", box=None, header_style="dim")
    table.add_row(
        f"transcript ({r.transcript.agent})",
        fmt.compact(r.transcript_tokens.total),
        fmt.usd(r.transcript_cost_usd),
        str(r.transcript_responses),
    )
    table.add_row(
        f"proxy ({r.proxy.agent})",
        fmt.compact(r.proxy_tokens.total),
        fmt.usd(r.proxy_cost_usd),
        str(r.proxy_responses),
    )
    delta = r.delta_tokens.total
    style = "bold yellow" if delta or abs(r.delta_cost_usd) >= 0.005 else "green"
    table.add_row(
        Text("difference", style=style),
        Text(signed(delta, fmt.compact), style=style),
        Text(signed(r.delta_cost_usd, fmt.usd), style=style),
        Text(signed(r.proxy_responses - r.transcript_responses, str), style=style),
    )
    if r.unconfirmed_responses:
        table.add_row(
            Text("unconfirmed telemetry (not counted)", style="bold red"),
            fmt.compact(r.unconfirmed_tokens.total),
            fmt.usd(r.unconfirmed_cost_usd),
            str(r.unconfirmed_responses),
        )
    matched = Text(f"matched by {how}: {safe(str(r.proxy))}", style="dim")
    return Group(matched, table, verdict(delta))


def signed(value: float, show: Callable[[float], str]) -> str:
    if value == 0:
        return show(0)
    return ("+" if value > 0 else "−") + show(abs(value))


def verdict(delta_tokens: int) -> Text:
    if delta_tokens > 0:
        return Text("the proxy saw more than the transcript records", style="dim")
    if delta_tokens < 0:
        return Text("the transcript counts more than went through the proxy", style="dim")
    return Text("both agree", style="green")


def timeline_text(s: SessionSnapshot, now: float) -> Text:
    if not s.model_timeline:
        return Text("no model recorded", style="dim")
    parts = [f"{fmt.duration(now - ts)} ago {safe(short_model(m))}" for ts, m in s.model_timeline]
    return Text(" → ".join(parts))


def tools_table(s: SessionSnapshot, now: float) -> Group:
    summary = Text(f"{plural(s.tool_calls, 'call')}, {plural(s.tool_errors, 'error')}", style="dim")
    top = sorted(s.tools, key=lambda t: -t.calls)[:6]
    counts = ", ".join(
        f"{safe(t.name)} {t.calls}" + (f" ({t.errors}✗)" if t.errors else "") for t in top
    )
    recent = Table("ago", "tool", "result", "input", box=None, header_style="dim")
    for call in list(s.recent_tools)[-8:][::-1]:
        result = (
            Text("…", "dim")
            if call.is_error is None
            else Text("error", "bold red")
            if call.is_error
            else Text("ok", "green")
        )
        name, digest = Text(safe(call.name)), Text(safe(call.input_hash[:8]))
        recent.add_row(fmt.duration(now - call.timestamp), name, result, digest)
    return Group(summary, Text(counts), recent)


def files_table(s: SessionSnapshot, health: Sequence[FileHealth]) -> Table:
    by_path = {f.path: f for f in health}
    table = Table("lines", "bad", "file", box=None, header_style="dim")
    for path in s.files:
        f = by_path.get(path)
        lines = str(f.lines) if f else "?"
        bad = Text(str(f.bad_lines), "bold red") if f and f.bad_lines else Text("0", "dim")
        where = Text(safe(path))
        if f and f.last_error:
            where.append(f"\n{safe(f.last_error)}", style="yellow")
        table.add_row(lines, bad, where)
    return table


COMMITS_LISTED = 5


def commits_table(s: SessionSnapshot, git: GitValue | None, now: float) -> Group | Text:
    """Commits authored in the session's window, and the spend per commit so far."""
    if git is None:
        return Text("asking git…", style="dim")
    if git.status != "ok":
        return Text(safe(git.status), style="dim")
    label = Text(git.label, style=LABEL_STYLES.get(git.label, ""))
    dollars = per_commit(s.cost_usd, len(git.commits))
    head = Text.assemble(
        label,
        f"  {len(git.commits)} commit{'' if len(git.commits) == 1 else 's'}",
        (f"  {fmt.usd(dollars)}/commit", "bold") if dollars is not None else "",
        f"  {plural(git.files_changed, 'file')}  +{git.lines_added} −{git.lines_removed}",
        ("  uncommitted changes" if git.dirty else "", "yellow"),
        (f"  on {safe(git.branch)}" if git.branch else "", "dim"),
    )
    if not git.commits:
        return head
    table = Table("ago", "commit", "lines", "subject", box=None, header_style="dim")
    for c in sorted(git.commits, key=lambda c: -c.author_ts)[:COMMITS_LISTED]:
        lines = f"+{c.added} −{c.removed}"
        sha, subject = Text(safe(c.sha[:7])), Text(safe(c.subject))
        table.add_row(fmt.duration(now - c.author_ts), sha, lines, subject)
    return Group(head, table)


def process_text(ref: ProcessInfo | None) -> Text:
    if ref is None:
        return Text(
            "no process mapped: start the agent with `tokentop run -- …` or install the hook",
            style="yellow",
        )
    guessed = ref.how == "heuristic" or not ref.confident
    guess = "  (a guess: check the command; never acted on by itself)" if guessed else ""
    return Text.assemble(
        ("pid ", "dim"),
        (str(ref.pid), "bold"),
        ("  mapped by ", "dim"),
        ref.how,
        (guess, "yellow"),
        "\n",
        command_line(ref.cmdline, 200),
    )
