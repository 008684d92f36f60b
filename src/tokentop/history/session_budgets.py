"""Budgets set for one session with `b`, as the hook, `guard` and `run` read them.

The app writes them with `Store.set_budget`. Reading is kept apart from store.py so that the
hook, which runs on every tool call, pays for sqlite3 only, not for the store's imports.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping
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
    import sqlite3  # only when there is a store: the hook runs on every tool call

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


class LiveBudgets(Mapping[str, Budget]):
    """The stored budgets, read again at most every `ttl_s`: a `guard` or `run` that runs for
    hours sees a budget set with `b` within seconds, for one small read per `ttl_s`."""

    def __init__(self, path: Path | None = None, ttl_s: float = 2.0) -> None:
        self.path = path
        self.ttl_s = ttl_s
        self._read_at = -math.inf
        self._budgets: dict[str, Budget] = {}

    def _fresh(self) -> dict[str, Budget]:
        now = time.monotonic()
        if now - self._read_at >= self.ttl_s:
            self._budgets = read_budgets(self.path)
            self._read_at = now
        return self._budgets

    def __getitem__(self, key: str) -> Budget:
        return self._fresh()[key]

    def get(self, key: str, default: Budget | None = None) -> Budget | None:  # type: ignore[override]
        """Asked per session every second: a miss costs no KeyError."""
        return self._fresh().get(key, default)

    def __iter__(self) -> Iterator[str]:
        return iter(self._fresh())

    def __len__(self) -> int:
        return len(self._fresh())
