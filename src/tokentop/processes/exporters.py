"""The trace-pid mapping: which local process exported a session's spans to this receiver.

A span's resource may name `host.name` and `process.pid`. Those are a sender's words, so a
session known from traces maps *exactly* to a process only when local evidence proves that
process sent it:
- the resource names this machine and a pid (a span from another host never maps);
- that pid is a live process of this user, created before the session's first span reached
  this receiver (by `CREATE_SLACK_S`: the kernel's start time is rounded to its boot second);
- it holds the very TCP connection the request came in on: one of its sockets goes from
  the request's peer address and port to this receiver's address and port (psutil reads
  the process's sockets from /proc; a stranger's sockets are not readable).
Every request that brings spans of the session must prove the same process again. The
mapping keeps the pid with its create_time, so a process that later reuses the pid number is
refused before any signal (`control.same_process`). A session whose spans ever come from
anything else (another pid or connection, another host, no pid) is ambiguous for good: a
guess, never acted on. What a local process can still do, and can't, is in docs/fleet.md.
"""

from __future__ import annotations

import ipaddress
import math
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import psutil

from tokentop.model import SessionKey
from tokentop.processes.finding import ProcessRef

CREATE_SLACK_S = 1.0
"""A process must have started this long before the session's first span arrived."""
MAX_SESSIONS = 10_000
"""Sessions whose mapping (or its absence) is remembered; the oldest are forgotten first."""


class Connection(msgspec.Struct, frozen=True):
    """The TCP connection a request arrived on, as this receiver saw it."""

    peer: str
    peer_port: int
    local: str
    local_port: int


def sending_process(pid: int, conn: Connection, first_seen: float) -> ProcessRef | None:
    """`pid` as an exact ProcessRef if it is this user's live process, started before
    `first_seen` (less the slack), and it owns the connection `conn`; else None."""
    if pid <= 0 or pid == os.getpid():
        return None
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            if proc.uids().real != os.getuid():
                return None
            started = proc.create_time()
            if started > first_seen - CREATE_SLACK_S:
                return None
            sockets = _tcp_sockets(proc)
            cmdline, cwd = tuple(proc.cmdline()), proc.cwd()
    except psutil.Error:
        return None
    if not any(_carries(s, conn) for s in sockets):
        return None
    return ProcessRef(pid, started, cmdline, cwd, "exporter", True, "")


def _tcp_sockets(proc: psutil.Process) -> list[Any]:
    read = getattr(proc, "net_connections", None) or proc.connections  # psutil < 6
    found: list[Any] = read(kind="tcp")
    return found


def _carries(sock: Any, conn: Connection) -> bool:
    """Whether `sock` is the client end of `conn` (from the peer, to this receiver)."""
    local, remote = sock.laddr, sock.raddr
    if not local or not remote:
        return False
    return (
        local.port == conn.peer_port
        and remote.port == conn.local_port
        and _ip(local.ip) == _ip(conn.peer)
        and _ip(remote.ip) == _ip(conn.local)
    )


def _ip(text: str) -> str:
    try:
        address = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return text
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


Prove = Callable[[int, float], ProcessRef | None]
"""(pid, first_seen) -> the proven process, or None."""


class _Claim:
    """What the spans of one session said about their process."""

    __slots__ = ("ambiguous", "first", "pid", "ref")

    def __init__(self, first: float, pid: int) -> None:
        self.first = first
        """When this receiver got the session's first span (its own clock)."""
        self.pid = pid
        self.ref: ProcessRef | None = None
        self.ambiguous = False


class ExporterMap:
    """Sessions counted from traces -> the process proven to export them; thread-safe and
    bounded. The hub feeds it; the mapper (so guard, serve and the app) reads it."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._claims: OrderedDict[SessionKey, _Claim] = OrderedDict()

    def observe(self, key: SessionKey, pid: int, local: bool, prove: Prove) -> None:
        """A request brought spans of `key` naming `pid` (0: none) on a resource that says
        it is this machine (`local`); `prove` checks the connection it came on (called
        outside the lock). Every request must prove the same process, or the session is
        ambiguous for good: one forged span can keep a session from being acted on, never
        get a process signalled for spans it did not send."""
        with self._lock:
            claim = self._claim(key, pid)
            if claim.ambiguous:
                return
            if not local or not pid or pid != claim.pid:
                claim.ambiguous, claim.ref = True, None
                return
            first = claim.first
        ref = prove(pid, first)
        with self._lock:
            known = claim.ref
            if ref is None or (known is not None and known.create_time != ref.create_time):
                claim.ambiguous, claim.ref = True, None
            elif not claim.ambiguous:
                claim.ref = ref

    def observe_request(
        self, claims: Mapping[SessionKey, tuple[int, bool]], conn: Connection | None
    ) -> None:
        """`observe` each session of one request ((pid, local) as its spans claim), proving
        each pid once against the connection the request came on."""
        proofs: dict[int, ProcessRef | None] = {}

        def prove(pid: int, first_seen: float) -> ProcessRef | None:
            if conn is None:
                return None
            if pid not in proofs:
                proofs[pid] = sending_process(pid, conn, math.inf)
            ref = proofs[pid]
            started_before = ref is not None and ref.create_time <= first_seen - CREATE_SLACK_S
            return ref if started_before else None

        for key, (pid, local) in claims.items():
            self.observe(key, pid, local, prove)

    def drop(self, key: SessionKey) -> None:
        """Never map `key` (a file here has its sessions: local truth from local evidence)."""
        with self._lock:
            self._claim(key, 0).ambiguous = True

    def _claim(self, key: SessionKey, pid: int) -> _Claim:
        claim = self._claims.get(key)
        if claim is None:
            claim = self._claims[key] = _Claim(self.clock(), pid)
            while len(self._claims) > MAX_SESSIONS:
                self._claims.popitem(last=False)
        return claim

    def get(self, key: SessionKey) -> ProcessRef | None:
        """The process proven to export every span of `key`, or None."""
        with self._lock:
            claim = self._claims.get(key)
            return None if claim is None or claim.ambiguous else claim.ref
