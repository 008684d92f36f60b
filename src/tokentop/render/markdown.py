"""One session summary as Markdown, fit to paste into a daily report (`tokentop summary`).

Figures read as in the app (render/figures.py): an unpriced part makes a cost "≥$x"."""

from __future__ import annotations

from collections.abc import Iterable

from tokentop.history.context_use import Consumer, Consumers
from tokentop.history.git_output import GitValue
from tokentop.history.routing import Route
from tokentop.history.summary import SessionSummary
from tokentop.quantities import plural
from tokentop.render.figures import compact, duration, usd, when
from tokentop.render.text import md_code, md_inline

TOOLS_LISTED = 6


def cell(text: str) -> str:
    """Untrusted text safe inside a Markdown table cell (escaped, one line, pipes literal)."""
    return md_inline(text)


def summary_markdown(
    s: SessionSummary, heading: str = "##", route: Route | None = None, flags: Iterable[str] = ()
) -> str:
    """The whole summary: headline facts as a list, then the tables that have content.
    With a `route`, the cheapest-model arithmetic; `flags` are routing flags (history/routing)."""
    parts = [
        f"{heading} {md_inline(s.project) or '(no project)'} · {md_inline(s.agent)} "
        f"{md_code(s.session_id[:8])} · {s.label}"
    ]
    facts = _facts(s)
    if route is not None and route.cheapest_models:
        facts.insert(3, _cheapest(route))
    facts += [f"- **Flag:** {flag}: {FLAG_TEXT.get(flag, flag)}" for flag in flags]
    parts.append("\n".join(facts))
    parts += _models(s, heading)
    if s.consumers is not None:
        parts += _consumers(s.consumers, heading)
    parts += _events(s, heading)
    if s.git is not None and s.git.commits:
        parts += _commits(s.git, heading)
    return "\n\n".join(parts) + "\n"


def _facts(s: SessionSummary) -> list[str]:
    span = f"{when(s.start)} → {when(s.end, '%H:%M')}"
    lines = [
        f"- **When:** {span} ({duration(s.end - s.start)}; active {duration(s.active_s)}) · "
        f"recorded as {s.end_reason}",
        f"- **Where:** {md_code(s.cwd or '?')}" + (f" on {md_code(s.branch)}" if s.branch else ""),
        f"- **Spend:** {usd(s.cost_usd, not s.unpriced_models)} · {_tokens(s)}",
        f"- **Burn:** peak {compact(s.peak_tokens_per_min)} tok/min, "
        f"mean {compact(s.mean_tokens_per_min)} tok/min over {s.responses} responses",
        f"- **Budget:** {_budget(s)}",
        f"- **Output:** {_output(s.git, s.cost_usd)}",
        f"- **Tools:** {_tools(s)}",
    ]
    if s.unpriced_models:
        names = ", ".join(md_inline(m) for m in s.unpriced_models)
        lines.append(f"- **Unpriced models:** {names} (cost is a floor)")
    if s.estimated:
        lines.append("- Some token counts were estimated with a tokenizer.")
    return lines


FLAG_TEXT = {
    "premium-low-output": "a premium model for little output (few output tokens per response, "
    "no commits, mostly reads)",
}


def _cheapest(route: Route) -> str:
    models = ", ".join(md_code(m) for m in route.cheapest_models)
    floor = "" if route.complete else " (part of it unpriced)"
    return (
        f"- **Cheapest:** the same tokens on {models}: {usd(route.cheapest_usd)}{floor} "
        f"(arithmetic from the price table, not a claim that model could have done the work)"
    )


def _tokens(s: SessionSummary) -> str:
    t = s.tokens
    kinds = [
        ("input", t.input),
        ("output", t.output),
        ("cache read", t.cache_read),
        ("cache write", t.cache_write),
        ("reasoning", t.reasoning),
    ]
    detail = ", ".join(f"{name} {compact(n)}" for name, n in kinds if n)
    return f"{compact(t.total)} tokens" + (f" ({detail})" if detail else "")


def _budget(s: SessionSummary) -> str:
    limits = []
    if s.budget_usd is not None:
        limits.append(usd(s.budget_usd))
    if s.budget_tokens is not None:
        limits.append(f"{compact(s.budget_tokens)} tokens")
    if not limits:
        return "none set"
    used = "" if s.budget_used_pct is None else f" — {s.budget_used_pct:.0f}% used"
    return " / ".join(limits) + used


def _output(git: GitValue | None, cost: float) -> str:
    if git is None:
        return "not assessed"
    if git.status != "ok":
        changed = "; files were changed" if git.file_changes else ""
        return f"{md_inline(git.status)}{changed}"
    if not git.commits:
        what = (
            "the worktree has uncommitted changes"
            if git.dirty
            else "files were changed but not committed"
            if git.file_changes
            else "no file changes"
        )
        return f"no commits in the session's window; {what}"
    text = (
        f"{plural(len(git.commits), 'commit')}, {plural(git.files_changed, 'file')}, "
        f"+{git.lines_added} −{git.lines_removed} lines · {usd(git.usd_per_commit)}/commit"
    )
    if git.surviving is not None:
        text += (
            f" · {git.surviving}/{len(git.commits)} surviving"
            f" ({usd(git.usd_per_surviving_commit)}/surviving commit,"
            f" checked {when(git.survival_checked_at)})"
        )
    return text


def _tools(s: SessionSummary) -> str:
    if not s.tool_calls:
        return "none"
    listed = ", ".join(f"{md_inline(t.name)} {t.calls}" for t in s.tools[:TOOLS_LISTED])
    more = ", …" if len(s.tools) > TOOLS_LISTED else ""
    errors = f" ({s.tool_errors} failed)" if s.tool_errors else ""
    return f"{plural(s.tool_calls, 'call')}{errors}: {listed}{more}"


def _table(header: Iterable[str], rows: Iterable[Iterable[str]]) -> str:
    """A Markdown table of cells that are already Markdown (untrusted parts escaped)."""
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _models(s: SessionSummary, heading: str) -> list[str]:
    if not s.models:
        return []
    rows = [
        (
            cell(m.model),
            compact(m.tokens.total),
            usd(m.cost_usd) if m.cost_usd is not None else "unpriced",
            str(m.responses),
            f"{m.timeline_share * 100:.0f}%",
        )
        for m in s.models
    ]
    header = ("model", "tokens", "cost", "responses", "share of timeline")
    return [f"{heading}# Models", _table(header, rows)]


def _consumers(c: Consumers, heading: str) -> list[str]:
    if not c.tools and not c.files:
        return []
    note = f"estimate: tool-result text counted with {c.tokenizer}"
    if c.partial:
        note += f"; only the first {compact(c.bytes_scanned)}B of transcript read"
    rows = [_consumer_row(x) for x in (*c.tools, *c.files)]
    table = _table(("kind", "name", "~tokens", "results"), rows)
    return [f"{heading}# Top token consumers ({note})", table]


def _consumer_row(c: Consumer) -> tuple[str, str, str, str]:
    name = md_code(c.name, in_table=True) if c.kind == "file" else cell(c.name)
    return (c.kind, name, compact(c.tokens), str(c.calls))


def _events(s: SessionSummary, heading: str) -> list[str]:
    lines = [
        f"- {when(e.timestamp, '%H:%M:%S')} **{md_inline(e.detector)}** "
        f"(policy: {md_inline(e.action)}): {md_inline(e.reason)}"
        for e in s.events
    ]
    lines += [
        f"- {when(a.timestamp, '%H:%M:%S')} **{md_inline(a.action)}** by "
        f"{md_inline(a.origin or '?')} ({'ok' if a.ok else 'failed'}): "
        f"{md_inline(a.reason or a.message)}"
        for a in s.actions
    ]
    return [f"{heading}# Detector events and actions", "\n".join(lines)] if lines else []


def _commits(git: GitValue, heading: str) -> list[str]:
    lines = [
        f"- {md_code(c.sha[:10])} {md_inline(c.subject)} "
        f"(+{c.added} −{c.removed}, {plural(len(c.files), 'file')})"
        for c in git.commits
    ]
    return [f"{heading}# Commits", "\n".join(lines)]
