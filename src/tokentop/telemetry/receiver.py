"""The OTLP/HTTP receiver: POST /v1/logs, /v1/metrics and /v1/traces, protobuf or JSON,
maybe gzip.

Safe by default: it listens on loopback unless told otherwise, and anywhere else only with
a bearer token. The HTTP side (connections, deadlines, bounded bodies) is `http.HttpServer`;
here a request's head is checked before its body is read (path, token, a backlog the engine
can't keep up with), and a body is bounded again after decompression and in the messages it
would make (`otlp.count_nodes`), before any is parsed. A body that is not OTLP gets a 400 (a
too-large one 413) and the next request is served as usual.
"""

from __future__ import annotations

from tokentop.processes.exporters import Connection
from tokentop.telemetry import otlp
from tokentop.telemetry.http import HttpServer, Limits, Reply, Request
from tokentop.telemetry.hub import TelemetryHub
from tokentop.telemetry.options import Listen, require_token, token_ok
from tokentop.telemetry.spans import span_items

MAX_BODY = 4 * 1024 * 1024
"""Largest request body read (compressed); the SDKs' default batches are far smaller."""
MAX_INFLATED = 16 * 1024 * 1024
MAX_BACKLOG = 200_000
"""Events queued for the engine (busy with a cold scan, say) before senders are told 503."""
PATHS = {"/v1/logs": "logs", "/v1/metrics": "metrics", "/v1/traces": "traces"}
TEXT = "text/plain"


class Receiver:
    """An OTLP/HTTP server on its own threads, feeding a TelemetryHub."""

    def __init__(
        self,
        hub: TelemetryHub,
        listen: Listen,
        token: str = "",
        *,
        max_body: int = MAX_BODY,
        max_inflated: int = MAX_INFLATED,
        limits: Limits | None = None,
    ) -> None:
        require_token(listen, token)
        self.hub = hub
        self.listen = listen
        self.token = token
        self.max_inflated = max_inflated
        limits = limits or Limits(max_body=max_body)
        self.server = HttpServer(
            listen, self.answer, self.check, limits, "tokentop-otlp", self._refused
        )

    @property
    def port(self) -> int:
        return self.server.port

    def start(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()

    def _refused(self, why: str) -> None:
        self.hub.count("refused", why)

    def check(self, request: Request) -> Reply | None:
        """A request's head, before its body is read (on the server's loop: cheap only)."""
        if request.method == "GET":
            return None if request.path == "/" else (404, b"not found", TEXT)
        self.hub.count("requests")
        if request.method != "POST":
            return 405, b"POST /v1/logs, /v1/metrics or /v1/traces", TEXT
        if request.path not in PATHS:
            return 404, b"not found: POST /v1/logs, /v1/metrics or /v1/traces", TEXT
        if not token_ok(request.headers.get("authorization"), self.token):
            return 401, b"missing or wrong bearer token", TEXT
        if self.hub.engine.backlog > MAX_BACKLOG or self.hub.waiting > MAX_BACKLOG:
            return 503, b"busy, retry later", TEXT
        return None

    def answer(self, request: Request) -> Reply:
        """A whole request (on a worker thread)."""
        if request.method == "GET":
            return 200, b"tokentop OTLP receiver\n", TEXT
        try:
            conn = Connection(request.peer, request.peer_port, request.local, request.local_port)
            return self.handle(request.path, request.headers, request.body, request.peer, conn)
        except otlp.BadRequest as exc:
            return 413 if exc.too_large else 400, str(exc).encode()[:500], TEXT

    def handle(
        self,
        path: str,
        headers: dict[str, str],
        body: bytes,
        sender: str,
        conn: Connection | None = None,
    ) -> tuple[int, bytes, str]:
        """(status, body, content type) for one POST whose body was read already."""
        kind = PATHS[path]
        json = "json" in headers.get("content-type", "").lower()
        ctype = "application/json" if json else "application/x-protobuf"
        encoding = headers.get("content-encoding", "identity").lower().strip()
        if encoding in ("gzip", "deflate"):
            body = otlp.gunzip(body, self.max_inflated, deflate=encoding == "deflate")
        elif encoding != "identity":
            return 415, f"unsupported Content-Encoding {encoding[:40]!r}".encode(), TEXT
        if kind == "logs":
            self.hub.accept_logs(otlp.log_items(otlp.parse_logs(body, json)), sender)
        elif kind == "traces":
            self.hub.accept_spans(span_items(otlp.parse_traces(body, json)), sender, conn)
        else:
            self.hub.accept_points(otlp.point_items(otlp.parse_metrics(body, json)), sender)
        return 200, b"{}" if json else b"", ctype
