"""Telemetry -> sessions in the engine's ledger, each counted once, never over local truth.

Telemetry is a stranger's word: anyone who can reach the receiver (and holds the token, off
loopback) can send any session id, host name and cost. So, per session (agent + session id):
- **Local truth from local evidence.** A session whose transcript (or proxy log) is read
  here is changed by that file only. Telemetry about it, whatever `host.name` it claims, is
  kept beside it (`View`): a response whose request id is in the transcript confirms it,
  anything else is shown as unconfirmed. Neither is added to the session's counts.
- **Telemetry-only sessions** (no file here) are counted from telemetry. Their host is the
  resource's `host.name`, else the sender's address; this machine's own name (or a loopback
  sender without a name) is shown as "" (here), but it is only a label: a session counted
  from telemetry is never acted on automatically (`SessionSnapshot.from_telemetry`).
- **Waiting:** telemetry that claims this machine waits up to `wait_s` for its transcript
  (the agent writes the transcript before it exports); any telemetry waits for the engine's
  first scan, so a transcript not read yet can't be taken for a missing one.
- **One kind:** the first of events or metrics to arrive for a session is the one counted;
  the other kind describes the same tokens and is dropped (counted in `ignored`).
- **Traces** (GenAI spans of any app, `traces.py`) make sessions keyed by the app's
  `service.name`. They wait for a transcript only when a source read here could have one
  under that agent name. A local app's session may map exactly to its process
  (`processes/exporters.py`): the only telemetry session a policy may act on.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterable

import msgspec

from tokentop.engine.engine import Engine
from tokentop.history.reconcile import Reconciliation
from tokentop.model import (
    TELEMETRY_ORIGIN,
    Event,
    SessionInfo,
    SessionKey,
    TokenCounts,
    ToolCall,
    ToolResult,
    UsageEvent,
)
from tokentop.processes.exporters import Connection, ExporterMap
from tokentop.telemetry.agents import BadRecord, TelemetryUsage, from_log, text
from tokentop.telemetry.genai import agent_label, process_pid, read_call
from tokentop.telemetry.matching import TranscriptIndex
from tokentop.telemetry.metrics import Cumulative, usages
from tokentop.telemetry.otlp import LogItem, PointItem
from tokentop.telemetry.spans import SpanItem
from tokentop.telemetry.traces import TraceBook

MAX_SESSIONS = 100_000
"""Sessions whose kind, user and views are remembered; the oldest are forgotten first."""


class HubStats(msgspec.Struct):
    """Counters shown by `serve` and on /metrics; never silent about what was dropped."""

    requests: int = 0
    records: int = 0
    usages: int = 0
    bad_records: int = 0
    ignored: int = 0
    """Usage not counted: the other kind (events vs metrics) for a session that counts one
    kind, a nested LLM span, a span of a new trace session past the live bound."""
    refused: int = 0
    """Requests answered with a 4xx (malformed, too large, unauthorised)."""
    last_error: str = ""


Told = tuple[TokenCounts, float | None, str, str]
"""What telemetry said of one response: tokens, cost, model, request id."""
MAX_VIEW = 10_000
"""Responses kept per session view (a session has far fewer)."""


class View:
    """What telemetry said about one local session: shown beside it, never counted."""

    __slots__ = ("by_key", "index")

    def __init__(self) -> None:
        self.by_key: dict[str, Told] = {}
        self.index = TranscriptIndex()

    def add(self, usage: TelemetryUsage) -> None:
        old = self.by_key.get(usage.key)
        if old is None and len(self.by_key) >= MAX_VIEW:
            return
        if old is None or usage.tokens.total >= old[0].total:
            self.by_key[usage.key] = (usage.tokens, usage.cost_usd, usage.model, usage.request_id)


class TelemetryHub:
    """Routes telemetry usage into the engine; thread-safe (the receiver's threads call it)."""

    def __init__(
        self,
        engine: Engine,
        *,
        local_names: Iterable[str] | None = None,
        wait_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        exporters: ExporterMap | None = None,
    ) -> None:
        self.engine = engine
        self.local = set(local_names) if local_names is not None else _local_names()
        self.wait_s = wait_s
        self.clock = clock
        self.stats = HubStats()
        self.lock = threading.RLock()
        self.kinds: dict[SessionKey, str] = {}
        self.users: dict[SessionKey, str] = {}
        self.views: dict[SessionKey, View] = {}
        self.pending: list[tuple[float, TelemetryUsage]] = []
        self._batch: list[tuple[str, list[Event]]] = []
        self.cumulative = Cumulative()
        self.traces = TraceBook()
        self.exporters = exporters
        """Where trace sessions' proven processes go (None: nothing is mapped)."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- input -----------------------------------------------------------------------------

    def accept_logs(self, items: Iterable[LogItem], sender: str) -> None:
        """A request's records, read on its own thread: the lock is taken only to route."""
        found: list[TelemetryUsage] = []
        records = bad = 0
        error = ""
        for item in items:
            records += 1
            try:
                usage = from_log(item)
            except BadRecord as exc:
                bad, error = bad + 1, str(exc)
                continue
            if usage is not None:
                found.append(usage)
        with self.lock:
            self.stats.records += records
            if bad:
                self._bad(error, bad)
        self.route(found, sender)

    def accept_points(self, items: Iterable[PointItem], sender: str) -> None:
        points = list(items)
        with self.lock:  # the running totals of cumulative series are shared
            self.stats.records += len(points)
            found, bad = usages(points, self.cumulative)
            if bad:
                self._bad(f"{bad} unusable metric point(s)", bad)
        self.route(found, sender)

    def accept_spans(
        self, items: Iterable[SpanItem], sender: str, conn: Connection | None = None
    ) -> None:
        """A request's spans, read on its own thread; `conn` is the connection it came on,
        while the sender still holds it open (the proof of a local exporter needs it)."""
        read, records, bad, error = [], 0, 0, ""
        for item in items:
            records += 1
            try:
                read.append((item, read_call(item)))
            except BadRecord as exc:
                bad, error = bad + 1, str(exc)
        claims: dict[SessionKey, tuple[int, bool]] = {}
        found: list[TelemetryUsage] = []
        with self.lock:
            self.stats.records += records
            if bad:
                self._bad(error, bad)
            now, before = self.clock(), self.traces.ignored + self.traces.refused
            for item, call in read:
                named = text(item.resource, "host.name")
                agent = agent_label(item.resource)
                usage = self.traces.add(item, call, agent, self.host_of(named, sender), now)
                if usage is not None:
                    found.append(msgspec.structs.replace(usage, host=named))  # route labels it
                    local = bool(named) and named in self.local
                    claim = (process_pid(item.resource), local)
                    claims.setdefault(SessionKey(agent, usage.session_id), claim)
            self.traces.trim()
            self.stats.ignored += self.traces.ignored + self.traces.refused - before
        if self.exporters is not None:
            self.exporters.observe_request(claims, conn)
        self.route(found, sender)

    def count(self, field: str, error: str = "") -> None:
        """Add one to a stats counter (the receiver's threads call this)."""
        with self.lock:
            setattr(self.stats, field, getattr(self.stats, field) + 1)
            if error:
                self.stats.last_error = error[:200]

    def _bad(self, message: str, n: int = 1) -> None:
        self.stats.bad_records += n
        self.stats.last_error = message[:200]

    @property
    def waiting(self) -> int:
        """Usage waiting for a transcript or the first scan (the receiver bounds it)."""
        return len(self.pending)

    def route(self, found: list[TelemetryUsage], sender: str) -> None:
        """Count each usage once, over no local truth (the rules are in the module doc)."""
        with self.lock:
            self._batch = []
            now = self.clock()
            for usage in found:
                host = self.host_of(usage.host, sender)
                usage = msgspec.structs.replace(usage, host=host)
                key = SessionKey(usage.agent, usage.session_id)
                if self.kinds.setdefault(key, usage.via) != usage.via:
                    self.stats.ignored += 1
                    continue
                self.stats.usages += 1
                if usage.user:
                    self.users[key] = usage.user
                self._forget_oldest()
                self._place(usage, now + (self.wait_s if self._may_wait(usage) else 0.0))
            self._flush()

    def host_of(self, named: str, sender: str) -> str:
        """The host label: "" when the sender claims to be this machine (only a label)."""
        if named:
            return "" if named in self.local else named
        return "" if sender in ("127.0.0.1", "::1", "") or sender in self.local else sender

    def _may_wait(self, usage: TelemetryUsage) -> bool:
        """Whether the usage waits for a transcript: it claims this machine, and (for a trace
        session) a source read here could write a file under its agent's name."""
        if usage.host:
            return False
        if usage.via != "traces":
            return True
        names = {source.name for source in self.engine.sources}
        return usage.agent in names or "jsonl" in names  # generic JSONL labels any agent

    def _forget_oldest(self) -> None:
        for table in (self.kinds, self.users, self.views):
            while len(table) > MAX_SESSIONS:
                del table[next(iter(table))]

    def local_files(self, key: SessionKey) -> list[str]:
        """The session's transcripts and proxy logs read here (not its telemetry)."""
        files = self.engine.session_files(str(key))
        return [f for f in files if not f.startswith(TELEMETRY_ORIGIN)]

    def _place(self, usage: TelemetryUsage, deadline: float) -> bool:
        """Keep a usage beside a local session, count it for a telemetry-only one, or let it
        wait; True when it was settled."""
        key = SessionKey(usage.agent, usage.session_id)
        if self.local_files(key):
            self.views.setdefault(key, View()).add(usage)
            if usage.via == "traces" and self.exporters is not None:
                self.exporters.drop(key)  # a transcript's session maps by its own evidence
            return True
        if not self.engine.scanned.is_set() or self.clock() < deadline:
            self.pending.append((deadline, usage))
            return False
        self._ingest(usage, usage.key)
        return True

    def settle(self) -> None:
        """Retry waiting usage (the transcript may have been read since)."""
        with self.lock:
            waiting, self.pending = self.pending, []
            self._batch = []
            for deadline, usage in waiting:
                self._place(usage, deadline)
            self._flush()

    def _ingest(self, usage: TelemetryUsage, dedupe_key: str) -> None:
        """Queue a usage for the engine (sent by _flush, one batch per request)."""
        key = SessionKey(usage.agent, usage.session_id)
        events: list[Event] = [SessionInfo(key, usage.time, model=usage.model, host=usage.host)]
        if usage.tokens.total or not usage.tool:
            events.append(UsageEvent(
                key, dedupe_key, usage.time, usage.model, usage.tokens,
                cost_usd=usage.cost_usd, request_id=usage.request_id,
            ))  # fmt: skip
        if usage.tool:  # a tool call, or an LLM call whose prompt is known: loop detectors
            call_id = f"{dedupe_key}#call"
            events.append(ToolCall(key, call_id, usage.time, usage.tool, usage.input_hash))
            events.append(ToolResult(key, call_id, usage.time, usage.failed, usage.output_hash))
        self._batch.append((usage.host, events))

    def _flush(self) -> None:
        by_host: dict[str, list[Event]] = {}
        for host, events in self._batch:
            by_host.setdefault(host, []).extend(events)
        self._batch = []
        for host, events in by_host.items():
            self.engine.ingest(events, f"{TELEMETRY_ORIGIN}{host or 'local'}")

    # -- views -----------------------------------------------------------------------------

    def user_of(self, key: SessionKey) -> str:
        with self.lock:
            return self.users.get(key, "")

    def pairs(self) -> list[Reconciliation]:
        """Transcript vs telemetry for each local session seen both ways. The transcripts
        are read outside the hub's lock (each view's index has its own)."""
        cost_fn = self.engine.cost_fn
        snap = self.engine.last_snapshot
        ledger = {s.key: s for s in snap.sessions} if snap is not None else {}
        with self.lock:
            views = [(key, view, list(view.by_key.values())) for key, view in self.views.items()]
        out = []
        for key, view, told in views:
            files = self.local_files(key)
            if not files or not told:
                continue
            if key.agent == "claude":
                known = view.index.follow(files)
                transcript = _totals(known.values(), cost_fn)
                unconfirmed = [t for t in told if t[3] not in view.index.by_request]
                how = "request_id"
            else:  # no request ids to match: the session's totals are compared
                found = ledger.get(key)
                transcript = (
                    (found.tokens, found.cost_usd, found.responses)
                    if found is not None
                    else (TokenCounts(), 0.0, 0)
                )
                unconfirmed, how = told, "session_id"
            totals = _totals(told, cost_fn), _totals(unconfirmed, cost_fn)
            out.append(_pair(key, how, transcript, *totals))
        return out

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Settle waiting usage every half second, until stop()."""
        self._thread = threading.Thread(target=self._run, name="tokentop-otlp-hub", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                self.settle()
            except Exception as exc:
                self.stats.last_error = f"settle failed: {exc!r}"[:200]

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


def _totals(
    items: Iterable[tuple[TokenCounts, float | None, str] | Told],
    cost_fn: Callable[[str, TokenCounts], float | None],
) -> tuple[TokenCounts, float, int]:
    tokens, usd, n = TokenCounts(), 0.0, 0
    for t, cost, model, *_ in items:
        tokens = tokens + t
        usd += cost if cost is not None else (cost_fn(model, t) or 0.0)
        n += 1
    return tokens, usd, n


def _pair(
    key: SessionKey,
    how: str,
    transcript: tuple[TokenCounts, float, int],
    told: tuple[TokenCounts, float, int],
    unconfirmed: tuple[TokenCounts, float, int],
) -> Reconciliation:
    return Reconciliation(
        transcript=key, proxy=key, matched_by=how,
        transcript_tokens=transcript[0], proxy_tokens=told[0],
        delta_tokens=told[0] - transcript[0],
        transcript_cost_usd=transcript[1], proxy_cost_usd=told[1],
        delta_cost_usd=told[1] - transcript[1],
        transcript_responses=transcript[2], proxy_responses=told[2],
        unconfirmed_tokens=unconfirmed[0], unconfirmed_cost_usd=unconfirmed[1],
        unconfirmed_responses=unconfirmed[2],
    )  # fmt: skip


def _local_names() -> set[str]:
    names = {socket.gethostname()}
    with contextlib.suppress(OSError):
        names.add(socket.getfqdn())
    return names
