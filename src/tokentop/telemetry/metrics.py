"""Counter points -> TelemetryUsage, one per session, model and export.

Points of one export that share their attributes apart from `type` (and the cost counter,
which has no `type`) form one group: one response-like usage with every kind and the cost.

Temporality, read from each metric:
- **delta**: each point is an increment, so each group is its own usage, keyed by its time
  window (a retried export repeats the key and is counted once).
- **cumulative**: each point is a running total since `start`, so a group keeps one key per
  series start, and its usage carries the running totals; the ledger keeps the largest
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
"""(agent, session id, model, attribute signature, start, time or 0 when cumulative)."""


class Cumulative:
    """The latest value of each cumulative series, so a group is always whole."""

    def __init__(self) -> None:
        self.values: dict[Group, dict[str, float]] = {}

    def merge(self, group: Group, kinds: dict[str, float]) -> dict[str, float]:
        known = self.values.pop(group, {})
        known.update(kinds)
        self.values[group] = known
        if len(self.values) > MAX_SERIES:
            del self.values[next(iter(self.values))]
        return known


def usages(points: Iterable[PointItem], cumulative: Cumulative) -> tuple[list[TelemetryUsage], int]:
    """Usage per group, and how many points were bad."""
    groups: dict[Group, dict[str, float]] = {}
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
        kinds[kind] = kinds.get(kind, 0.0) + value
        meta[group] = point
    out = []
    for group, kinds in groups.items():
        if group[5] == 0:
            kinds = cumulative.merge(group, kinds)
        out.append(_usage(group, kinds, meta[group]))
    return out, bad


def _group(point: PointItem) -> Group:
    agent = AGENT_OF.get(point.metric.split(".", 1)[0], "")
    sid = text(point.attrs, "session.id") or text(point.resource, "session.id")
    if not agent or not sid:
        raise BadRecord(f"{point.metric} point without a session id")
    rest = sorted((k, str(v)) for k, v in point.attrs.items() if k != "type")
    signature = "|".join(f"{k}={v}" for k, v in rest)
    host = text(point.resource, "host.name")
    window = point.time if point.temporality == "delta" else 0
    return (agent, sid, text(point.attrs, "model"), f"{host}|{signature}", point.start, window)


def _usage(group: Group, kinds: dict[str, float], point: PointItem) -> TelemetryUsage:
    agent, sid, model, signature, start, window = group
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
