"""What an attacker sends a receiver, over real sockets on loopback: record bombs, slow
bodies, idle connections, and one honest OTLP event to time through it all."""

from __future__ import annotations

import contextlib
import gzip
import http.client
import resource
import socket
import threading
import time
from collections.abc import Iterator

import psutil


def raise_fd_limit(wanted: int = 16_384) -> None:
    """Room for thousands of sockets in this process and the servers it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def record_bomb(records: int = 8_000_000) -> bytes:
    """An ExportLogsServiceRequest of `records` empty LogRecords, gzipped: 16 MB inflated,
    about 16 KB on the wire."""
    scope = b"\x12\x00" * records  # ScopeLogs.log_records (field 2), each empty
    resource_logs = b"\x12" + _varint(len(scope)) + scope  # ResourceLogs.scope_logs
    body = b"\x0a" + _varint(len(resource_logs)) + resource_logs  # resource_logs
    return gzip.compress(body, compresslevel=9)


def json_bomb(records: int = 3_000_000) -> bytes:
    """The same in OTLP/JSON: `{}` records."""
    inner = b",".join([b"{}"] * records)
    doc = b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[' + inner + b"]}]}]}"
    return gzip.compress(doc, compresslevel=9)


def claude_event(session: str, host: str, request_id: str, cost: float, tokens: int) -> bytes:
    """One `claude_code.api_request` as OTLP protobuf, as Claude Code sends it."""
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

    request = ExportLogsServiceRequest()
    rl = request.resource_logs.add()
    if host:  # none: the receiver goes by the sender's address
        name = AnyValue(string_value=host)
        rl.resource.attributes.append(KeyValue(key="host.name", value=name))
    record = rl.scope_logs.add().log_records.add()
    record.time_unix_nano = time.time_ns()
    record.body.string_value = "claude_code.api_request"
    attrs = {
        "session.id": session, "request_id": request_id, "model": "claude-sonnet-4-5",
        "input_tokens": str(tokens), "output_tokens": "0", "cost_usd": str(cost),
    }  # fmt: skip
    for key, value in attrs.items():
        record.attributes.append(KeyValue(key=key, value=AnyValue(string_value=value)))
    return request.SerializeToString()


def post(
    port: int, path: str, body: bytes, headers: dict[str, str] | None = None, timeout: float = 30
) -> tuple[int, float]:
    """(status, seconds) of one POST on a fresh connection; status 0 when it failed."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        ctype = {"Content-Type": "application/x-protobuf"}
        conn.request("POST", path, body, {**ctype, **(headers or {})})
        status = conn.getresponse().status
    except OSError:
        status = 0
    finally:
        conn.close()
    return status, time.monotonic() - started


def get(port: int, path: str = "/metrics", timeout: float = 10) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    except OSError:
        return 0, ""
    finally:
        conn.close()


class Flood:
    """Idle connections and slow bodies held open until close()."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self.slow: list[socket.socket] = []
        self._stop = threading.Event()

    def idle(self, port: int, n: int) -> None:
        for _ in range(n):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            self.sockets.append(s)

    def slow_bodies(self, port: int, n: int, every_s: float = 5.0) -> None:
        """`n` POSTs announcing 100 kB, then sending one byte every `every_s`."""
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            s.sendall(b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nx")
            self.slow.append(s)
        threading.Thread(target=self._trickle, args=(every_s,), daemon=True).start()

    def _trickle(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            for s in list(self.slow):
                with contextlib.suppress(OSError):
                    s.send(b"x")

    def close(self) -> None:
        self._stop.set()
        for s in self.sockets + self.slow:
            s.close()


class PeakRss:
    """The largest RSS of a process, sampled on a thread until stopped."""

    def __init__(self, pid: int, every_s: float = 0.02) -> None:
        self.proc = psutil.Process(pid)
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(every_s,), daemon=True)
        self._thread.start()

    def _sample(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            with contextlib.suppress(psutil.Error):
                self.peak = max(self.peak, self.proc.memory_info().rss)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


@contextlib.contextmanager
def flooding() -> Iterator[Flood]:
    flood = Flood()
    try:
        yield flood
    finally:
        flood.close()
