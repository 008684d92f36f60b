"""Budgets set for one session with `b`, as the hook, `guard` and `run` read them.

The app writes them with `Store.set_budget`. Reading is kept apart from store.py so that the
hook, which runs on every tool call, pays for sqlite3 only, not for the store's imports.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import msgspec

from tokentop.config import Budget
from tokentop.dirs import user_dir


def read_budgets(path: Path | None = None) -> dict[str, Budget]:
    """The stored budgets by "agent:session_id", read without creating or migrating the
    store; {} when there is no store or no such table yet (an older store)."""
    target = path or user_dir("data") / "tokentop.db"
    if not target.is_file():
        return {}
    try:
        conn = sqlite3.connect(f"{target.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
        try:
            rows = conn.execute("SELECT session, usd, tokens FROM budget_overrides").fetchall()
        finally:
            conn.close()
    except sqlite3.Error:
        return {}
    return budget_rows(rows)


def budget_rows(rows: list[Any]) -> dict[str, Budget]:
    """Rows of (session, usd, tokens) as Budgets; a row that is not one is skipped."""
    found: dict[str, Budget] = {}
    for session, usd, tokens in rows:
        try:
            found[str(session)] = msgspec.convert({"usd": usd, "tokens": tokens}, Budget)
        except msgspec.ValidationError:
            continue
    return found
