"""Plain data for JSON / NDJSON output and the text table; shared by every headless command.

Every name that may come from the file system goes through `name_text`: a name that is not
valid UTF-8 is written with its undecodable bytes as `\\xNN` (backslashes doubled), so the
JSON can always be encoded and the exact bytes recovered.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from tokentop.history.reconcile import by_session, reconcile
from tokentop.model import FileHealth, LedgerSnapshot, RateLimits, SessionSnapshot
from tokentop.policy.watchdog import Judged, Judgement
from tokentop.quantities import plural
from tokentop.render.figures import compact, cost, eta, percent, project_name, usd
from tokentop.render.overview import flags_text, listed_total
from tokentop.render.text import cells, fit_cells, pad_cells, safe
from tokentop.sources.base import name_text


def iso(ts: float) -> str | None:
    """A Unix time as ISO-8601 UTC; None when unknown, or past what a datetime holds (the
    sources bound times, and one such value must not cost the whole output)."""
    try:
        stamp = datetime.fromtimestamp(ts, UTC) if ts else None
    except (ValueError, OverflowError, OSError):
        return None
    return stamp.isoformat(timespec="milliseconds").replace("+00:00", "Z") if stamp else None


def session_dict(s: SessionSnapshot, files: dict[str, FileHealth] | None = None) -> dict[str, Any]:
    """One session as JSON-ready data. Cost of unpriced models is reported as unknown, not 0."""
    files = files or {}
    return {
        "agent": s.key.agent,
        "session_id": name_text(s.key.session_id),
        "host": s.host or None,
        "project": name_text(project_name(s.cwd)),
        "cwd": name_text(s.cwd),
        "branch": s.branch,
        "parent": name_text(s.parent) or None,
        "first_activity": iso(s.first_ts),
        "last_activity": iso(s.last_ts),
        "tokens": s.tokens.as_dict(),
        "cost_usd": round(s.cost_usd, 6),
        "cost_complete": not s.unpriced_models,
        "unpriced_models": list(s.unpriced_models),
        "models": [
            {
                "model": m.model,
                "tokens": m.tokens.as_dict(),
                "cost_usd": None if m.cost_usd is None else round(m.cost_usd, 6),
                "responses": m.responses,
            }
            for m in s.models
        ],
        "responses": s.responses,
        "burn": {
            "tokens_per_min": round(s.tokens_per_min, 1),
            "usd_per_hour": round(s.usd_per_hour, 4),
        },
        "tool_calls": s.tool_calls,
        "tool_errors": s.tool_errors,
        "estimated": s.estimated,
        "bad_lines": s.bad_lines,
        "files": [_file_entry(name_text(f), files) for f in s.files],
        "rate_limits": limits_dict(s.limits),
    }


def limits_dict(limits: RateLimits | None) -> dict[str, Any] | None:
    """The vendor's own windows as the session last recorded them (null: none recorded)."""
    if limits is None:
        return None
    windows = [
        {
            "name": w.name,
            "used_percent": w.used_pct,
            "window_minutes": w.window_min or None,
            "resets_at": iso(w.resets_at),
        }
        for w in limits.windows
    ]
    return {"observed_at": iso(limits.observed_at), "plan": limits.plan or None, "windows": windows}


def judged_dict(j: Judged, files: dict[str, FileHealth] | None = None) -> dict[str, Any]:
    """A session as the Watchdog judged it: its record plus its state, budget, the share of
    it used and the ETA (the same figures the app shows; burn is zero unless live)."""
    use = j.use
    budget = use.budget
    return {
        **session_dict(j.session, files),
        "state": j.state,
        "budget": {"usd": budget.usd, "tokens": budget.tokens, "from": use.origin}
        if budget.is_set
        else None,
        "budget_used": None if use.fraction is None else round(use.fraction, 6),
        "budget_used_is_lower_bound": use.lower_bound,
        "eta_s": None if use.eta_s is None else round(use.eta_s, 1),
        "flags": flags_text(j.session, use, j.flags),
    }


def _file_entry(name: str, files: dict[str, FileHealth]) -> dict[str, Any]:
    health = files.get(name)
    return file_dict(health) if health is not None else {"path": name}


def file_dict(f: FileHealth) -> dict[str, Any]:
    return {
        "path": name_text(f.path),
        "agent": f.agent,
        "bytes_read": f.bytes_read,
        "lines": f.lines,
        "bad_lines": f.bad_lines,
        "last_error": name_text(f.last_error) or None,
    }


def sessions_list(judgement: Judgement) -> list[dict[str, Any]]:
    """Sessions oldest first, as judged (see `session_records`)."""
    return list(session_records(judgement))


def session_records(judgement: Judgement) -> Iterator[dict[str, Any]]:
    """Sessions oldest first, as judged, one record at a time (a history of thousands of
    sessions is printed without holding every record); one seen both in a transcript and in
    proxy logs also carries a `reconciliation` object (see reconcile.py)."""
    snap = judgement.snapshot
    files = {name_text(f.path): f for f in snap.files}
    ordered = sorted(judgement.sessions, key=lambda j: (j.session.last_ts, str(j.session.key)))
    pairs = by_session(reconcile(snap))
    for j in ordered:
        row = judged_dict(j, files)
        if j.session.key in pairs:
            row["reconciliation"] = pairs[j.session.key].as_dict()
        yield row


def orphan_bad_files(snap: LedgerSnapshot) -> list[FileHealth]:
    """Files with bad lines that belong to no session (e.g. a binary file in a root)."""
    owned = {name_text(f) for s in snap.sessions for f in s.files}
    return [f for f in snap.files if f.bad_lines and name_text(f.path) not in owned]


def text_table(judgement: Judgement) -> str:
    """A plain table for `tokentop sessions` without --json: the app's figures, newest first,
    and under them what they add up to (the app's Σ line)."""
    rows = [("AGENT", "SESSION", "PROJECT", "STATE", "TOKENS", "COST", "TOK/MIN", "BUDGET", "ETA")]
    for j in sorted(judgement.sessions, key=lambda j: -j.session.last_ts):
        s, use = j.session, j.use
        rows.append(
            (
                safe(s.key.agent),
                safe(name_text(s.key.session_id))[:12],
                fit_cells(safe(name_text(project_name(s.cwd))), 24) or "-",
                j.state,
                compact(s.tokens.total),
                cost(s.cost_usd, s.unpriced_models),
                compact(s.tokens_per_min) if s.tokens_per_min else "-",
                percent(use.fraction) if use.fraction is not None else "-",
                eta(use.eta_s),
            )
        )
    if len(rows) > 2:
        total = listed_total(judgement.sessions)
        burn = compact(total.tokens_per_min) if total.tokens_per_min else "-"
        rows.append(
            ("Σ", plural(total.sessions, "session"), "", "", compact(total.tokens),
             usd(total.cost, not total.cost_is_lower_bound), burn, "", "")
        )  # fmt: skip
    widths = [max(cells(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ("  ".join(pad_cells(c, w) for c, w in zip(r, widths, strict=True)) for r in rows)
    return "\n".join(line.rstrip() for line in lines)
