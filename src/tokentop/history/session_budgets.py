"""Budgets set for one session (`b` in an app, `tokentop run --budget`), as every front-end
reads them: the app, `watch`, `sessions`, `guard`, `run` and the hook.

Writers use `Store.set_budget`. Reading is kept apart from store.py so that the hook, which
runs on every tool call, pays for sqlite3 only, not for the store's imports.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from tokentop.config import Budget, SessionBudget
from tokentop.dirs import user_dir

_QUERIES = (
    "SELECT session, usd, tokens, origin, set_at FROM budget_overrides",
    "SELECT session, usd, tokens, 'app', set_at FROM budget_overrides",  # before origin
)


def read_budgets(path: Path | None = None) -> dict[str, SessionBudget]:
    """The stored budgets by "agent:session_id", read without creating or migrating the
    store; {} when there is no store or no such table yet (an older store)."""
    target = path or user_dir("data") / "tokentop.db"
    if not target.is_file():
        return {}
    import sqlite3  # only when there is a store: the hook runs on every tool call

    try:
        conn = sqlite3.connect(f"{target.resolve().as_uri()}?mode=ro", uri=True, timeout=1.0)
    except sqlite3.Error:
        return {}
    try:
        for query in _QUERIES:
            try:
                return budget_rows(conn.execute(query).fetchall())
            except sqlite3.OperationalError:
                continue  # no origin column yet (or no table): the next query, or none
        return {}
    except sqlite3.Error:
        return {}
    finally:
        conn.close()


def budget_rows(rows: list[Any]) -> dict[str, SessionBudget]:
    """Rows of (session, usd, tokens, origin, set_at) as SessionBudgets; a row that is not
    one is skipped."""
    found: dict[str, SessionBudget] = {}
    for session, usd, tokens, origin, set_at in rows:
        try:
            budget = msgspec.convert({"usd": usd, "tokens": tokens}, Budget)
            found[str(session)] = SessionBudget(budget, str(origin), float(set_at or 0.0))
        except (msgspec.ValidationError, TypeError, ValueError):
            continue
    return found


class LiveBudgets(Mapping[str, SessionBudget]):
    """The stored budgets, read again at most every `ttl_s`: a `guard` or `run` that runs for
    hours sees a budget set with `b` within seconds, for one small read per `ttl_s`."""

    def __init__(self, path: Path | None = None, ttl_s: float = 1.0) -> None:
        self.path = path
        self.ttl_s = ttl_s
        self._read_at = -math.inf
        self._budgets: dict[str, SessionBudget] = {}

    def invalidate(self) -> None:
        """Read again at the next look-up (this process just wrote one)."""
        self._read_at = -math.inf

    def _fresh(self) -> dict[str, SessionBudget]:
        now = time.monotonic()
        if now - self._read_at >= self.ttl_s:
            self._budgets = read_budgets(self.path)
            self._read_at = now
        return self._budgets

    def __getitem__(self, key: str) -> SessionBudget:
        return self._fresh()[key]

    def get(self, key: str, default: SessionBudget | None = None) -> SessionBudget | None:  # type: ignore[override]
        """Asked per session every second: a miss costs no KeyError."""
        return self._fresh().get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._fresh())

    def __len__(self) -> int:
        return len(self._fresh())
