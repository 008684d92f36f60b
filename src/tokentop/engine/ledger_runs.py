"""Counting a run (`EventRun`: a session's responses, tool calls and results read in one go)
in bulk, with the same result as counting its events one by one.

A cold scan reads most lines as runs. One by one, each response cost the ledger ~2 µs of
Python (dedupe, slot, model totals, minute, pace, timeline...). In bulk, what can be summed
is summed (keys into the dedupe dict and slot columns by C code, tokens per model, the pace
entries that would stay), and what depends on order (costs added to a model's and a minute's
float sums, the model timeline, first and last times) is kept in order, in locals.

Bulk counting applies when it is provably the same as one by one: every response key and
call id new (fresh tables only: a ledger with sealed or cached tables counts one by one),
each result after its call in the run or of a call from elsewhere (then counted one by one,
after: its effects do not depend on the run's).
"""

from __future__ import annotations

import math
import sys
from array import array
from collections import Counter
from typing import TYPE_CHECKING

from tokentop.engine.ledger_state import KINDS, ModelAcc, RecentCall, SessionState, ToolAcc
from tokentop.engine.ledger_state import call_mark as mark_of
from tokentop.engine.pace import add_run as add_pace_run
from tokentop.model import (
    RECENT_TOOLS,
    Call,
    EventRun,
    Response,
    Result,
    SessionKey,
    TokenCounts,
    ToolResult,
)

if TYPE_CHECKING:
    from tokentop.engine.dedupe_tables import DedupeTables
    from tokentop.engine.rates import CostFn, RateCards

MAX_TS = 2.0**40
"""As ledger.MAX_TS: times beyond go to minute 0 (and no pace)."""


class RunCounting:
    """The ledger's bulk path (a mixin: the ledger provides the attributes below)."""

    cost_fn: CostFn
    _tables: DedupeTables
    _rates: RateCards
    _first_fresh: int
    _arrival: float
    _last_sid: int

    def _session(self, key: SessionKey, path: str = "") -> SessionState:
        raise NotImplementedError

    def _tool_result(self, event: ToolResult, path: str = "") -> int:
        raise NotImplementedError

    def _count_run(self, run: EventRun, path: str) -> int | None:
        """Count `run` in bulk; None (nothing counted) if it must be counted one by one."""
        tables = self._tables
        if tables.old or run.mixed:
            return None
        keys = [r[0] for r in run.responses]
        if len(set(keys)) != len(keys) or not tables.seen.keys().isdisjoint(keys):
            return None
        ids = [c[0] for c in run.calls]
        unpaired = [r for r in run.results if r[4] < 0]
        known = {r[0] for r in unpaired}
        if len(set(ids)) != len(ids) or not known.isdisjoint(ids):
            return None
        if not tables.calls.keys().isdisjoint(ids):
            return None
        if not run.calls and not any(r[3] or r[4] or r[5] or r[6] or r[7] for r in run.responses):
            return sum(self._answer(run.session, result, path) for result in run.results)
        session = self._session(run.session, path)  # made by the first event counted
        counted, totals = self._run_responses(session, run.responses)
        return counted + self._run_calls(session, run, totals, path)

    def _answer(self, key: SessionKey, result: Result, path: str) -> int:
        """A result whose call is not in its run, counted on its own."""
        call_id, ts, error, output_hash, _, _ = result
        return self._tool_result(ToolResult(key, call_id, ts, error, output_hash), path)

    def _run_responses(
        self, session: SessionState, responses: list[Response]
    ) -> tuple[int, list[int]]:
        """Every response new: slots, model totals, minutes, pace, times (see the module).
        Returns how many were counted, and each one's tokens (0: not counted). One flat
        loop with the session's figures in locals: it runs once per response of a cold scan.
        """
        tables = self._tables
        models, rates, arrival = tables.models, self._rates, self._arrival
        timeline = session.timeline
        minute, minute_tokens, minute_cost = _minute_of(session)
        low, high = minute * 60.0, minute * 60.0 + 60.0
        first_ts, last_ts, cwd, branch = session.first_ts, session.last_ts, session.cwd, ""
        kept: list[str] = []
        tokens: list[int] = []
        costs: list[float] = []
        model_at: list[int] = []
        totals: list[int] = []
        paced: list[tuple[float, float, float]] = []
        sums: dict[str, list[float]] = {}
        model_now, at_now, acc = "", -1, [0.0]
        for key, ts, model, ti, to, tr, w5, w1, cost, rcwd, rbranch, _, _, _ in responses:
            total = ti + to + tr + w5 + w1
            if not (ti or to or tr or w5 or w1):
                totals.append(0)
                continue
            kept.append(key)
            totals.append(total)
            if rcwd and not cwd:
                cwd = rcwd
            if rbranch:
                branch = rbranch
            if model != model_now:
                model_now, at_now = model, models.of(model)
                acc = sums.get(model) or sums.setdefault(model, _start(session.by_model, model))
            if cost is None:
                unit, limit = rates[model]
                if unit is None:
                    pass
                elif ti + tr + w5 + w1 > limit:
                    cost = self.cost_fn(model, TokenCounts(ti, to, tr, w5, w1))
                else:
                    cost = ti * unit[0] + to * unit[1] + tr * unit[2] + w5 * unit[3] + w1 * unit[4]
            model_at.append(at_now)
            tokens += (ti, to, tr, w5, w1, 0)
            acc[0] += ti
            acc[1] += to
            acc[2] += tr
            acc[3] += w5
            acc[4] += w1
            acc[5] += 1
            if cost is None:
                costs.append(math.nan)
                acc[7] = 1
                cost = 0.0
            else:
                costs.append(cost)
                acc[6] += cost
            if not 0 < ts <= MAX_TS:
                ts = arrival or ts
            if not timeline or timeline[-1][1] != model:
                session.note_model(ts, model)
            if ts > last_ts:
                last_ts = ts
            if ts and (ts < first_ts or not first_ts):
                first_ts = ts
            if low <= ts < high:  # the minute of the one before: the usual case
                minute_tokens += total
                minute_cost += cost
            else:
                _set_minute(session, minute, minute_tokens, minute_cost)
                session.add_minute(int(ts // 60) if -MAX_TS <= ts <= MAX_TS else 0, total, cost)
                minute, minute_tokens, minute_cost = _minute_of(session)
                low, high = minute * 60.0, minute * 60.0 + 60.0
            if 0 < ts <= MAX_TS:
                paced.append((ts, total, cost))
        _set_minute(session, minute, minute_tokens, minute_cost)
        session.first_ts, session.last_ts, session.cwd = first_ts, last_ts, cwd
        if branch:
            session.branch = branch
        for model, model_sums in sums.items():
            _finish(session.by_model[model], model_sums)
        add_pace_run(session.pace, paced)
        self._add_slots(kept, tokens, costs, model_at)
        return len(kept), totals

    def _add_slots(
        self, keys: list[str], tokens: list[int], costs: list[float], model_at: list[int]
    ) -> None:
        """The responses' slots (fresh tables), in one go."""
        tables = self._tables
        fresh = tables.fresh
        first = self._first_fresh + len(fresh.cost)
        tables.seen.update(zip(keys, range(first, first + len(keys)), strict=True))
        fresh.tokens.extend(tokens)
        fresh.cost.extend(costs)
        fresh.session.extend(array("I", [self._last_sid]) * len(keys))
        fresh.model.extend(array("I", model_at))

    def _run_calls(self, session: SessionState, run: EventRun, totals: list[int], path: str) -> int:
        """Every call new, each answered by the result paired with it, if any; a result of
        a call from elsewhere is counted where it comes (tools and call ids are kept in the
        order first seen)."""
        calls = run.calls
        answer: list[Result | None] = [None] * len(calls)
        for result in run.results:
            if result[4] >= 0:
                answer[result[4]] = result
        counted = start = 0
        for result in run.results:
            if result[4] < 0:
                self._name_calls(session, calls[start : result[5]], answer[start : result[5]])
                start = result[5]
                counted += self._answer(run.session, result, path)
        self._name_calls(session, calls[start:], answer[start:])
        for ts in (c[1] for c in calls):
            session.touch(ts)
        kept = session.thawed_recent() if len(calls) < RECENT_TOOLS else []
        session.recent, session.recent_frozen = _recent(kept, calls, answer), b""
        changing = [c[5] for c in calls if c[4]]
        _since_change(session, totals, changing[-1] if changing else -1)
        return counted + len(calls) + sum(1 for a in answer if a is not None)

    def _name_calls(
        self, session: SessionState, calls: list[Call], answer: list[Result | None]
    ) -> None:
        """Calls' marks into the dedupe table and their counts into the session's tools."""
        names = [c[2] for c in calls]
        marks = [
            sys.intern(name) if a is None else mark_of(name, int(a[2]))
            for name, a in zip(names, answer, strict=True)
        ]
        self._tables.calls.update(zip((c[0] for c in calls), marks, strict=True))
        tools = session.tools
        errors = Counter(name for name, a in zip(names, answer, strict=True) if a and a[2])
        for name, n in Counter(names).items():
            acc = tools.get(name)
            if acc is None:
                acc = tools[name] = ToolAcc()
            acc.calls += n
            acc.errors += errors.get(name, 0)


def _since_change(session: SessionState, totals: list[int], reset_at: int) -> None:
    """Responses and tokens since the run's last file-changing call (at `reset_at` among
    its responses, whose tokens are `totals`), or added to the session's when none."""
    if reset_at < 0:
        session.responses_since_change += sum(1 for t in totals if t)
        session.tokens_since_change += sum(totals)
    else:
        after = totals[reset_at:]
        session.responses_since_change = sum(1 for t in after if t)
        session.tokens_since_change = sum(after)


def _minute_of(session: SessionState) -> tuple[int, float, float]:
    return session.minute, session.minute_tokens, session.minute_cost


def _set_minute(session: SessionState, minute: int, tokens: float, cost: float) -> None:
    session.minute, session.minute_tokens, session.minute_cost = minute, tokens, cost


def _start(by_model: dict[str, ModelAcc], model: str) -> list[float]:
    """Sums for `model` in this run: 5 token kinds, responses, cost (added in order to the
    model's own), unpriced."""
    acc = by_model.get(model)
    if acc is None:
        acc = by_model[model] = ModelAcc([0] * KINDS)
    return [0, 0, 0, 0, 0, 0, acc.cost, 0]


def _finish(acc: ModelAcc, sums: list[float]) -> None:
    tokens = acc.tokens
    for k in range(5):
        tokens[k] += int(sums[k])
    acc.responses += int(sums[5])
    acc.cost = sums[6]
    acc.unpriced = acc.unpriced or bool(sums[7])


def _recent(
    recent: list[RecentCall],
    calls: list[Call],
    answer: list[Result | None],
) -> list[RecentCall]:
    """The session's last RECENT_TOOLS calls once the run's are added."""
    tail = len(calls) - RECENT_TOOLS
    new = [
        RecentCall(ts, name, input_hash, call_id, -1 if a is None else int(a[2]),
                   "" if a is None else a[3], changing)
        for (call_id, ts, name, input_hash, changing, _), a in zip(
            calls[max(0, tail) :], answer[max(0, tail) :], strict=True
        )
    ]  # fmt: skip
    return (recent + new)[-RECENT_TOOLS:] if tail < 0 else new
