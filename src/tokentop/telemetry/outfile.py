"""Gemini CLI's telemetry `outfile`: the same records it would export, appended to a file.

Gemini CLI writes each log record and each metrics export as a JSON object indented by two
spaces, so every object ends with a line holding just `}`. The file is tailed (complete
lines only, offsets kept, truncation restarts it); an object is decoded when its closing
line arrives, mapped like OTLP (agents.py, metrics.py) and routed through the same hub, so
a session also read from its chat files counts once.

The records are the SDK's own objects serialised: attributes are a plain object, times are
`[seconds, nanoseconds]` pairs, and the metric temporality is the JS enum (0 delta,
1 cumulative).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import msgspec

from tokentop.engine.tail import Tailer, TailState
from tokentop.telemetry.hub import TelemetryHub
from tokentop.telemetry.otlp import MAX_ATTRIBUTES, Attrs, LogItem, PointItem, clean

MAX_OBJECT = 4 * 1024 * 1024
"""A record longer than this (a huge logged prompt) is skipped and counted as bad."""
POLL_S = 0.5
_JS_TEMPORALITY = {0: "delta", 1: "cumulative"}


class OutfileFollower:
    """Tails one outfile on its own thread and hands what it finds to the hub."""

    def __init__(self, path: Path, hub: TelemetryHub) -> None:
        self.path = path
        self.hub = hub
        self.tailer = Tailer(TailState(path=str(path)))
        self.lines: list[bytes] = []
        self.size = 0
        self.objects = 0
        self.bad = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> None:
        """Read what was appended since the last poll."""
        while True:
            result = self.tailer.read_new()
            if result.reset:
                self.lines, self.size = [], 0
            for line in result.data.splitlines():
                self._line(line)
            if not result.more:
                return

    def _line(self, line: bytes) -> None:
        self.size += len(line) + 1
        if self.size <= MAX_OBJECT:
            self.lines.append(line)
        if line.rstrip() != b"}":
            return
        blob, too_big = b"\n".join(self.lines), self.size > MAX_OBJECT
        self.lines, self.size = [], 0
        if too_big:
            self._bad(f"a record over {MAX_OBJECT} bytes was skipped")
            return
        try:
            self.handle(msgspec.json.decode(blob))
        except (msgspec.DecodeError, ValueError, TypeError) as exc:
            self._bad(f"unreadable record: {str(exc)[:100]}")

    def _bad(self, message: str) -> None:
        self.bad += 1
        with self.hub.lock:
            self.hub.stats.bad_records += 1
            self.hub.stats.last_error = f"{self.path.name}: {message}"

    def handle(self, doc: Any) -> None:
        if not isinstance(doc, dict):
            return
        self.objects += 1
        if isinstance(doc.get("scopeMetrics"), list):
            self.hub.accept_points(points(doc), "")
        elif isinstance(doc.get("attributes"), dict):
            self.hub.accept_logs([log_item(doc)], "")

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="tokentop-outfile", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while True:
            try:
                self.poll()
            except Exception as exc:  # a dead follower would hide the file's sessions
                self._bad(f"read failed: {exc!r}")
            if self._stop.wait(POLL_S):
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def log_item(doc: dict[str, Any]) -> LogItem:
    attrs = flat(doc.get("attributes"))
    name = attrs.get("event.name")
    body = doc.get("body") or doc.get("_body")
    text = name if isinstance(name, str) and name else body if isinstance(body, str) else ""
    return LogItem(clean(text), seconds(doc.get("hrTime")), attrs, resource(doc))


def points(doc: dict[str, Any]) -> list[PointItem]:
    res = resource(doc)
    found = []
    for scope in _list(doc.get("scopeMetrics")):
        for metric in _list(scope.get("metrics")):
            descriptor = metric.get("descriptor")
            name = descriptor.get("name") if isinstance(descriptor, dict) else None
            temporality = _JS_TEMPORALITY.get(metric.get("aggregationTemporality", -1))
            if not isinstance(name, str) or temporality is None:
                continue
            for p in _list(metric.get("dataPoints")):
                value = p.get("value")
                if isinstance(value, int | float) and not isinstance(value, bool):
                    start, end = nanos(p.get("startTime")), nanos(p.get("endTime"))
                    attrs = flat(p.get("attributes"))
                    found.append(PointItem(clean(name), temporality, start, end, value, attrs, res))
    return found


def resource(doc: dict[str, Any]) -> Attrs:
    """The resource's attributes, wherever this SDK version keeps them."""
    res = doc.get("resource")
    if not isinstance(res, dict):
        return {}
    for field in ("attributes", "_attributes", "_memoizedAttributes"):
        if isinstance(res.get(field), dict):
            return flat(res[field])
    raw = res.get("_rawAttributes")
    if isinstance(raw, list):
        return flat({p[0]: p[1] for p in raw if isinstance(p, list) and len(p) == 2})
    return {}


def flat(value: Any) -> Attrs:
    """Scalar attributes only, bounded like OTLP's."""
    out: Attrs = {}
    if not isinstance(value, dict):
        return out
    for key, item in list(value.items())[:MAX_ATTRIBUTES]:
        if isinstance(item, str):
            out[clean(str(key))] = clean(item)
        elif isinstance(item, bool | int | float):
            out[clean(str(key))] = item
    return out


def seconds(pair: Any) -> float:
    return nanos(pair) / 1e9


def nanos(pair: Any) -> int:
    """`[seconds, nanoseconds]` -> Unix nanoseconds; anything else is 0."""
    if isinstance(pair, list) and len(pair) == 2 and all(_small(x) for x in pair):
        return int(pair[0]) * 1_000_000_000 + int(pair[1])
    return 0


def _small(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x < 2**40


def _list(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
