"""Listing: which sessions the table lists, in what order, and which are tagged.

Pure view state over the last judgement (no Textual, no policy): a filter keypress or a sort
key only re-filters and re-sorts what the watchdog already judged.
"""

from __future__ import annotations

from tokentop.policy.watchdog import Judgement
from tokentop.render.overview import since, split_hidden
from tokentop.ui.views.rows import (
    SORTS,
    Listed,
    RowView,
    SortName,
    descending,
    row_view,
    search_text,
    sort_value,
)


class Listing:
    def __init__(self, hide_after_h: float) -> None:
        self.hide_after_h = hide_after_h
        self.sort: SortName = "burn"
        self.sort_reversed = False
        self.tagged: set[str] = set()
        self.show_all = False
        """`a`: list sessions older than hide_after_h too."""
        self.needle = ""
        self.listed: dict[str, Listed] = {}
        self.hidden = 0
        """Sessions judged but not listed: quiet for longer than hide_after_h."""
        self.now = 0.0
        """The judgement's time, which the LAST column counts from."""

    @property
    def descending(self) -> bool:
        return descending(self.sort, self.sort_reversed)

    def take(self, judgement: Judgement, now: float) -> None:
        """List the judged sessions, reusing the memos of those judged alike last time."""
        hide_after = 0.0 if self.show_all else self.hide_after_h * 3600
        shown, self.hidden = split_hidden(judgement.sessions, now, hide_after)
        self.now = judgement.snapshot.taken_at
        listed: dict[str, Listed] = {}
        for j in shown:
            key = str(j.session.key)
            old = self.listed.get(key)
            if old is not None and old.same(j):
                old.judged = j
                listed[key] = old
            else:
                listed[key] = Listed(j)
        self.listed = listed

    def shown(self) -> list[Listed]:
        """The listed sessions that match the filter, in the sort's order."""
        needle = self.needle.strip().lower()
        shown = [m for m in self.listed.values() if self._matches(m, needle)]
        shown.sort(key=lambda m: sort_value(m.session, m.use, self.sort), reverse=self.descending)
        return shown

    def row(self, m: Listed) -> RowView:
        """The row's view, memoised; only its LAST cell moves with the clock alone."""
        tagged = m.row_key in self.tagged
        if m.row is None or m.row.tagged != tagged:
            m.row = row_view(m.session, m.use, m.status, tagged, m.judged.flags, self.now)
        elif (last := since(self.now, m.session.last_response_ts)) != m.row.last:
            m.row = m.row._replace(last=last)
        return m.row

    @staticmethod
    def _matches(m: Listed, needle: str) -> bool:
        if not needle:
            return True
        if not m.search:
            m.search = f"{m.status} {search_text(m.session)}"
        return needle in m.search

    def step_sort(self, step: int) -> None:
        self.sort = SORTS[(SORTS.index(self.sort) + step) % len(SORTS)]

    def tagged_listed(self) -> list[Listed]:
        return [m for key, m in self.listed.items() if key in self.tagged]

    def live(self) -> list[Listed]:
        return [m for m in self.listed.values() if m.status == "live"]
