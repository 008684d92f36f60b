"""`tokentop run`'s status on stderr: what the Watchdog's judgement of the linked sessions
says (their state, spend, budget and burn), never `run`'s own arithmetic, so a session the
app shows paused with no burn reads the same here."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, TextIO

from tokentop.render.text import safe

if TYPE_CHECKING:
    from tokentop.policy.watchdog import Judgement

STATUS_EVERY_S = 2.0
"""Status lines: at most one per this many seconds (on a terminal or in a log)."""


class StatusLine:
    """The status on stderr, one whole line at a time: at most one per STATUS_EVERY_S while
    it changes, notes (warnings, actions) at once. Never a line rewritten in place: the agent
    writes to the same terminal, and its output would land after a half-line of ours."""

    def __init__(self, err: TextIO, *, enabled: bool) -> None:
        self.err = err
        self.enabled = enabled
        self.last = ""
        self.last_at = -STATUS_EVERY_S

    def show(self, judgement: Judgement, process: str) -> None:
        """The linked sessions as judged (state and burn are the Watchdog's: a paused
        session burns nothing); the agent's process state until one is linked."""
        if not self.enabled:
            return
        state = judgement.sessions[-1].state if judgement.sessions else process
        text = safe(status_text(judgement, state))
        if text != self.last and time.monotonic() - self.last_at >= STATUS_EVERY_S:
            self._line(text)
            self.last_at = time.monotonic()
            self.last = text  # a change held back is printed once its turn comes

    def note(self, text: str) -> None:
        if self.enabled:
            self._line(f"tokentop: {safe(text)}")

    def finish(self, text: str) -> None:
        if self.enabled:
            self._line(safe(text))

    def _line(self, text: str) -> None:
        self.err.write(text + "\n")
        self.err.flush()


def status_text(judgement: Judgement, state: str) -> str:
    """One status line: the linked sessions' tokens and cost against the first one's budget,
    and their burn, all as the Watchdog judged them; `state` says how they stand."""
    if not judgement.sessions:
        return f"tokentop: agent {state}, no transcript linked yet"
    from tokentop.quantities import spent_of
    from tokentop.render.figures import compact as short
    from tokentop.render.figures import usd

    sessions = [j.session for j in judgement.sessions]
    tokens = sum(s.tokens.total for s in sessions)
    cost = sum(s.cost_usd for s in sessions)
    rate = judgement.burn_tokens_per_min  # the rows' sum: zero unless live
    budget = judgement.sessions[0].use.budget
    spent = f"{short(tokens)} tok" + (
        f" of {short(budget.tokens)}" if budget.tokens is not None else ""
    )
    complete = not any(s.unpriced_models for s in sessions)
    money = usd(cost, complete) if budget.usd is None else spent_of(cost, budget.usd, complete)
    name = str(sessions[-1].key)[:20]
    return f"tokentop: {name} {state} · {spent} · {money} · {short(rate)} tok/min"
