"""The OTLP/HTTP receiver: POST /v1/logs and /v1/metrics, protobuf or JSON, maybe gzip.

Safe by default: it listens on loopback unless told otherwise, and anywhere else only with
a bearer token. Bodies are bounded before and after decompression; a body that is not OTLP
gets a 400 (a too-large one 413) and the next request is served as usual. Handler threads
are bounded too: past `MAX_CONCURRENT` requests in flight the answer is 503, which OTLP
exporters retry later.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tokentop.telemetry import otlp
from tokentop.telemetry.hub import TelemetryHub
from tokentop.telemetry.options import (
    Listen,
    ListenError,
    require_token,
    token_ok,
)

MAX_BODY = 4 * 1024 * 1024
"""Largest request body read (compressed); the SDKs' default batches are far smaller."""
MAX_INFLATED = 16 * 1024 * 1024
MAX_CONCURRENT = 32
MAX_BACKLOG = 200_000
"""Events queued for the engine (busy with a cold scan, say) before senders are told 503."""
READ_TIMEOUT_S = 10.0
PATHS = {"/v1/logs": "logs", "/v1/metrics": "metrics"}


class Served:
    """A server bound to `listen` and served by a daemon thread (the OTLP receiver and the
    /metrics endpoint): `bind` makes the server, `start` serves it, `stop` ends it."""

    listen: Listen
    thread_name = "tokentop-server"

    def __init__(self, bind: Callable[[], Any]) -> None:
        self._bind = bind
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1]) if self._server else self.listen.port

    def start(self) -> None:
        try:
            server = self._bind()
        except OSError as exc:
            raise ListenError(f"can't listen on {self.listen}: {exc.strerror or exc}") from None
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, name=self.thread_name, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


class Receiver(Served):
    """An OTLP/HTTP server on its own threads, feeding a TelemetryHub."""

    thread_name = "tokentop-otlp"

    def __init__(
        self,
        hub: TelemetryHub,
        listen: Listen,
        token: str = "",
        *,
        max_body: int = MAX_BODY,
        max_inflated: int = MAX_INFLATED,
    ) -> None:
        require_token(listen, token)
        self.hub = hub
        self.listen = listen
        self.token = token
        self.max_body = max_body
        self.max_inflated = max_inflated
        self.slots = threading.BoundedSemaphore(MAX_CONCURRENT)
        super().__init__(self._bound)

    def _bound(self) -> ThreadingHTTPServer:
        server_cls = _V6Server if ":" in self.listen.host else ThreadingHTTPServer
        server = server_cls((self.listen.host, self.listen.port), _handler(self))
        server.daemon_threads = True
        return server

    def authorised(self, header: str | None) -> bool:
        return token_ok(header, self.token)

    def handle(self, path: str, headers: Any, body: bytes, sender: str) -> tuple[int, bytes, str]:
        """(status, body, content type) for one POST whose body was read already."""
        kind = PATHS[path]
        json = "json" in (headers.get("Content-Type") or "").lower()
        ctype = "application/json" if json else "application/x-protobuf"
        encoding = (headers.get("Content-Encoding") or "identity").lower().strip()
        if encoding in ("gzip", "deflate"):
            body = otlp.gunzip(body, self.max_inflated, deflate=encoding == "deflate")
        elif encoding != "identity":
            return 415, f"unsupported Content-Encoding {encoding[:40]!r}".encode(), "text/plain"
        if kind == "logs":
            self.hub.accept_logs(otlp.log_items(otlp.parse_logs(body, json)), sender)
        else:
            self.hub.accept_points(otlp.point_items(otlp.parse_metrics(body, json)), sender)
        return 200, b"{}" if json else b"", ctype


class _V6Server(ThreadingHTTPServer):
    import socket

    address_family = socket.AF_INET6


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(_OtlpHandler):
        owner = receiver

    return Handler


class _OtlpHandler(BaseHTTPRequestHandler):
    owner: Receiver
    protocol_version = "HTTP/1.1"
    timeout = READ_TIMEOUT_S
    server_version = "tokentop-otlp"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the app owns the terminal; counts are kept in the hub's stats."""

    def do_GET(self) -> None:
        self._reply(404 if self.path != "/" else 200, b"tokentop OTLP receiver\n", "text/plain")

    def do_POST(self) -> None:
        owner = self.owner
        owner.hub.count("requests")
        if owner.hub.engine.backlog > MAX_BACKLOG or not owner.slots.acquire(blocking=False):
            self.close_connection = True  # the body is not read
            self._reply(503, b"busy, retry later", "text/plain", refused=True)
            return
        try:
            self._post(owner)
        except otlp.BadRequest as exc:
            owner.hub.count("refused", str(exc))
            self._reply(413 if exc.too_large else 400, str(exc).encode()[:500], "text/plain")
        except Exception as exc:  # one bad sender never stops the receiver
            owner.hub.count("refused", f"internal error: {exc!r}")
            self._reply(500, b"internal error", "text/plain")
        finally:
            owner.slots.release()

    def _post(self, owner: Receiver) -> None:
        if self.path not in PATHS:
            self._reply(404, b"not found: POST /v1/logs or /v1/metrics", "text/plain", True)
            return
        if not owner.authorised(self.headers.get("Authorization")):
            self._reply(401, b"missing or wrong bearer token", "text/plain", refused=True)
            return
        length = self._length(owner)
        if length is None:
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self._reply(400, b"body shorter than Content-Length", "text/plain", refused=True)
            return
        status, reply, ctype = owner.handle(self.path, self.headers, body, self.client_address[0])
        self._reply(status, reply, ctype, refused=status >= 400)

    def _length(self, owner: Receiver) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None or not raw.strip().isdigit():
            self._reply(411, b"Content-Length required", "text/plain", refused=True)
            return None
        length = int(raw)
        if length > owner.max_body:
            self.close_connection = True  # the body is not read: don't parse it as a request
            self._reply(413, f"body over {owner.max_body} bytes".encode(), "text/plain", True)
            return None
        return length

    def _reply(self, status: int, body: bytes, ctype: str, refused: bool = False) -> None:
        if refused:
            self.owner.hub.count("refused")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)
