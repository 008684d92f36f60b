"""Counter points -> TelemetryUsage, one per session, model and export.

Points of one export that share their attributes apart from `type` (and the cost counter,
which has no `type`) form one group: one response-like usage with every kind and the cost.

Temporality, read from each metric:
- **delta**: each point is an increment, so each group is its own usage, keyed by its time
  window (a retried export repeats the key and is counted once).
- **cumulative**: each point is a running total since its series' `start`, so a group keeps
  one key per latest start of its series (an agent restart starts them all anew), and its
  usage carries the running totals; the ledger keeps the largest
  copy of a key and adds only the difference, which is the differencing per series, and it
  survives a restart because the ledger's state is cached. A restarted series (new start)
  is a new key.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from tokentop.model import TokenCounts
from tokentop.telemetry.agents import (
    BadRecord,
    TelemetryUsage,
    identity,
    point_kind,
    point_value,
    text,
)
from tokentop.telemetry.otlp import PointItem

AGENT_OF = {"claude_code": "claude", "gemini_cli": "gemini"}
MAX_SERIES = 100_000
"""Cumulative groups remembered; the oldest are forgotten first (a fleet has far fewer)."""

Group = tuple[str, str, str, str, int, int]
"""(agent, session id, model, host and attribute signature, 0, time or 0 when cumulative)."""


class Cumulative:
    """The latest (start, value) of each kind of each cumulative group, so a usage always
    carries the whole group even when an export holds only some of its series."""

    def __init__(self) -> None:
        self.values: dict[Group, dict[str, tuple[int, float]]] = {}

    def merge(
        self, group: Group, kinds: dict[str, tuple[int, float]]
    ) -> dict[str, tuple[int, float]]:
        known = self.values.pop(group, {})
        known.update(kinds)
        self.values[group] = known
        if len(self.values) > MAX_SERIES:
            del self.values[next(iter(self.values))]
        return known


def usages(points: Iterable[PointItem], cumulative: Cumulative) -> tuple[list[TelemetryUsage], int]:
    """Usage per group, and how many points were bad."""
    groups: dict[Group, dict[str, tuple[int, float]]] = {}
    meta: dict[Group, PointItem] = {}
    bad = 0
    for point in points:
        kind = point_kind(point)
        if kind is None:
            continue
        try:
            group = _group(point)
            value = point_value(point, kind)
        except BadRecord:
            bad += 1
            continue
        kinds = groups.setdefault(group, {})
        start, old = kinds.get(kind, (point.start, 0.0))
        kinds[kind] = (max(start, point.start), old + value)
        meta[group] = point
    out = []
    for group, kinds in groups.items():
        if group[5] == 0:
            kinds = cumulative.merge(group, kinds)
        values = {kind: value for kind, (_, value) in kinds.items()}
        start = max(start for start, _ in kinds.values())
        out.append(_usage(group, values, start, meta[group]))
    return out, bad


def _group(point: PointItem) -> Group:
    agent = AGENT_OF.get(point.metric.split(".", 1)[0], "")
    sid = text(point.attrs, "session.id") or text(point.resource, "session.id")
    if not agent or not sid:
        raise BadRecord(f"{point.metric} point without a session id")
    rest = sorted((k, str(v)) for k, v in point.attrs.items() if k != "type")
    signature = "|".join(f"{k}={v}" for k, v in rest)
    host = text(point.resource, "host.name")
    # A delta group is one export's window. A cumulative group is keyed by its series'
    # latest start (in _usage): each instrument and attribute set starts at its own time.
    window = point.time if point.temporality == "delta" else 0
    return (agent, sid, text(point.attrs, "model"), f"{host}|{signature}", 0, window)


def _usage(group: Group, kinds: dict[str, float], start: int, point: PointItem) -> TelemetryUsage:
    agent, sid, model, signature, _, window = group
    if window:
        start = 0
    cache = int(kinds.get("cache_read", 0))
    raw_input = int(kinds.get("input", 0))
    if agent == "gemini":  # Gemini's prompt count includes the cached tokens
        raw_input = max(0, raw_input - cache)
    tokens = TokenCounts(
        input=raw_input + int(kinds.get("tool", 0)),
        output=int(kinds.get("output", 0)),
        cache_read=cache,
        cache_write_5m=int(kinds.get("cache_write_5m", 0)),
        reasoning=int(kinds.get("reasoning", 0)),
    )
    cost = kinds.get("cost")
    digest = hashlib.blake2b(signature.encode(), digest_size=8).hexdigest()
    key = f"{agent}:otelm:{sid}:{digest}:{start}:{window}"
    host, user = identity(point.attrs, point.resource)
    return TelemetryUsage(
        agent, sid, "metrics", key, point.time / 1e9, model, tokens, cost, "", host, user
    )
