"""A run (EventRun: a session's responses, tool calls and results read in one go) counted in
bulk leaves the ledger exactly as its events counted one by one: sessions, snapshots and
dedupe tables, whatever the run holds (repeats, results before their calls, a call of an
earlier run answered, estimates' absence, file-changing calls, unpriced models, times out
of order or missing) and whatever the ledger held before."""

from __future__ import annotations

from array import array
from typing import Any

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tokentop.engine.ledger import Ledger
from tokentop.model import (
    RUN_CALL,
    RUN_RESPONSE,
    RUN_RESULT,
    EventRun,
    SessionKey,
    TokenCounts,
)
from tokentop.pricing import PriceTable

KEY = SessionKey("claude", "s1")
OTHER = SessionKey("claude", "s2")
T0 = 1_763_640_000.0
MODELS = ["claude-sonnet-4-5-20250929", "claude-opus-4-1-20250805", "no-such-model"]
TOOLS = ["Bash", "Read", "Edit", "Write"]
COST = PriceTable.default().cost


def tiered(model: str, tokens: TokenCounts) -> float | None:
    """A long-context tier past 1000 input tokens (the rate cards' slow path)."""
    base = COST(model, tokens)
    return None if base is None else base * (2 if tokens.input > 1000 else 1)


tiered.linear_limit = lambda model: 1000  # type: ignore[attr-defined]


def response(draw: Any, session: SessionKey) -> tuple[Any, ...]:
    key = draw(st.sampled_from([f"claude:m{i}" for i in range(40)]))
    ts = draw(st.sampled_from([0.0, -5.0, T0 - 200.0, T0, T0 + 1, T0 + 30, T0 + 59.5, T0 + 61]))
    tokens = [draw(st.integers(0, 3)) * draw(st.sampled_from([1, 700])) for _ in range(5)]
    cost = draw(st.sampled_from([None, None, None, 0.25]))
    cwd, branch = draw(st.sampled_from(["", "/w"])), draw(st.sampled_from(["", "main", "dev"]))
    model = draw(st.sampled_from(MODELS))
    return (key, ts, model, *tokens, cost, cwd, branch, False, "req", session)


@st.composite
def runs(draw: Any) -> EventRun:
    """A run as the parser builds it: a result pairs with an earlier unanswered call."""
    run = EventRun(KEY)
    open_calls: dict[str, int] = {}
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from([RUN_RESPONSE, RUN_RESPONSE, RUN_CALL, RUN_RESULT]))
        run.order.append(kind)
        if kind == RUN_RESPONSE:
            other = draw(st.integers(0, 30)) == 0
            run.responses.append(response(draw, OTHER if other else KEY))
            run.mixed |= other
        elif kind == RUN_CALL:
            call_id = draw(st.sampled_from([f"c{i}" for i in range(30)]))
            ts = draw(st.sampled_from([0.0, T0, T0 + 10, T0 - 100]))
            name = draw(st.sampled_from(TOOLS))
            open_calls[call_id] = len(run.calls)
            run.calls.append((call_id, ts, name, f"in-{call_id}", name in ("Edit", "Write"),
                              len(run.responses)))  # fmt: skip
        else:
            call_id = draw(st.sampled_from([f"c{i}" for i in range(30)]))
            error, paired = draw(st.booleans()), open_calls.pop(call_id, -1)
            run.results.append((call_id, T0 + 5, error, f"out-{call_id}", paired, len(run.calls)))
    return run


def state(ledger: Ledger) -> tuple[object, ...]:
    """Sessions, snapshot and dedupe tables (call ids as a mapping: the order in which they
    were first seen is no count)."""
    sessions = msgspec.msgpack.encode(ledger.state.sessions)
    packed = ledger._tables.packed_tables()
    marks = [packed.call_marks[i] for i in array("I", packed.call_mark_idx)]
    digests = [packed.call_digests[i : i + 16] for i in range(0, len(packed.call_digests), 16)]
    calls = dict(zip(digests, marks, strict=True))
    packed.call_digests, packed.call_marks, packed.call_mark_idx = b"", [], b""
    return sessions, ledger.snapshot(T0 + 90), msgspec.msgpack.encode(packed), calls


@settings(
    max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
)
@given(first=runs(), second=runs(), cost=st.sampled_from([COST, tiered]), arrival=st.booleans())
def test_a_run_counts_in_bulk_as_its_events_one_by_one(
    first: EventRun, second: EventRun, cost: Any, arrival: bool
) -> None:
    bulk, one_by_one = Ledger(cost), Ledger(cost)
    now = T0 + 40 if arrival else 0.0
    for run in (first, second):
        bulk.apply([run], "f1", now)
        one_by_one.apply(run.events(), "f1", now)
        assert state(bulk) == state(one_by_one)


def test_a_plain_run_is_counted_in_bulk() -> None:
    """The bulk path is taken for what a cold scan reads (else the property above proves
    little): responses, a call and its result, a second call."""
    run = EventRun(KEY)
    for i in range(3):
        run.order.append(RUN_RESPONSE)
        run.responses.append(
            (f"claude:m{i}", T0 + i, MODELS[0], 1, 2, 3, 4, 0, None, "/w", "main", False, "", KEY)
        )
    run.order += bytes([RUN_CALL, RUN_RESULT, RUN_CALL])
    run.calls += [("c1", T0, "Edit", "h1", True, 2), ("c2", T0 + 3, "Bash", "h2", False, 3)]
    run.results.append(("c1", T0 + 1, True, "o1", 0, 1))
    ledger = Ledger(COST)
    assert ledger._count_run(run, "f1") == 6
    snap = ledger.snapshot(T0 + 10).sessions[0]
    assert (snap.responses, snap.tool_calls, snap.tool_errors) == (3, 2, 1)
    assert snap.responses_since_change == 1 and snap.tokens_since_change == 10
    assert [(t.name, t.is_error, t.output_hash) for t in snap.recent_tools] == [
        ("Edit", True, "o1"),
        ("Bash", None, ""),
    ]
