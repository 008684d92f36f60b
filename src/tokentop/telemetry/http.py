"""A small HTTP/1.1 server for the OTLP receiver and /metrics, built to hold under abuse.

One asyncio loop on its own thread reads every connection; a handler runs in a small pool
of worker threads only once a whole request has arrived. So a connection costs a few
kilobytes and no thread, and these hold whatever a sender does:

- **Connections are capped.** Past `max_connections`, the oldest connection with no request
  in flight is dropped (an idle one first): 3,000 idle sockets can't lock anyone out.
- **A request has one deadline**, from its first byte to its last (`request_s`), and an idle
  connection is closed after `idle_s`: one byte every few seconds gets nowhere.
- **Work is counted before it is done.** The head is bounded in bytes and headers; a body
  is read only after `check` accepted the head, only if it fits the bytes buffered by all
  connections together, and only if a worker will be free soon (else 503).
- **Exactly one Content-Length**, no Transfer-Encoding, no folded headers: nothing is left
  for a second parser to read differently. After any refusal the connection is closed, so
  an unread body is never taken for the next request.
- Errors of a connection end that connection, quietly: no traceback reaches stderr.

The stdlib's ThreadingHTTPServer (one thread per connection, a timeout per read) and a
maintained server (waitress, uvicorn) were measured against the same floods before this was
written; see docs/fleet.md "The receiver under abuse".
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import msgspec

from tokentop.telemetry.options import Listen, ListenError

BACKLOG = 4096
"""Connections the kernel queues before accepting; a full queue delays a SYN by a second."""
SEND_S = 5.0
"""How long a reply may take to leave (a sender that doesn't read is dropped)."""
Reply = tuple[int, bytes, str]
"""(status, body, content type)."""
_REASONS = {
    100: "Continue", 200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required",
    413: "Content Too Large", 415: "Unsupported Media Type", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable",
}  # fmt: skip
_TOKEN = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class Limits(msgspec.Struct, frozen=True):
    """What one server lets senders cost it."""

    max_connections: int = 256
    max_body: int = 4 * 1024 * 1024
    buffered: int = 64 * 1024 * 1024
    """Body bytes held by all connections at once; a request that would pass it gets 503."""
    head_bytes: int = 16 * 1024
    max_headers: int = 64
    request_s: float = 10.0
    """The whole request, from its first byte to its last."""
    idle_s: float = 15.0
    """A connection with no request in progress."""
    workers: int = 2
    queued: int = 8
    """Requests waiting for a worker; past it senders are told 503 before their body is read."""


class Request(msgspec.Struct):
    method: str
    path: str
    headers: dict[str, str]
    """Lower-case names; a repeated header's values joined by ", "."""
    peer: str
    body: bytes = b""
    peer_port: int = 0
    local: str = ""
    """The address and port this server was reached at, on this connection."""
    local_port: int = 0


class HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class ServerStats(msgspec.Struct):
    """What the server refused or dropped (shown on /metrics for the receiver)."""

    connections: int = 0
    evicted: int = 0
    timed_out: int = 0
    refused: int = 0
    last_error: str = ""


Check = Callable[[Request], Reply | None]
Handle = Callable[[Request], Reply]


class HttpServer:
    """Serves `handle` (run in a worker thread) for every request whose head `check` (run on
    the loop, so it must be cheap) lets through; `check` returns a reply to refuse."""

    def __init__(
        self, listen: Listen, handle: Handle, check: Check | None = None,
        limits: Limits | None = None, name: str = "tokentop-http",
        on_refused: Callable[[str], None] | None = None,
    ) -> None:  # fmt: skip
        self.listen = listen
        self.handle = handle
        self.check = check or (lambda request: None)
        self.limits = limits or Limits()
        self.name = name
        self.stats = ServerStats()
        self.on_refused = on_refused or (lambda why: None)
        """Told of every reply of 400 or more (the receiver counts them)."""
        self._conns: dict[_Conn, None] = {}
        self._buffered = 0
        self._in_work = 0
        self._pool = ThreadPoolExecutor(self.limits.workers, thread_name_prefix=name)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._ready = threading.Event()

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1]) if self._sock else self.listen.port

    def start(self) -> None:
        """Bind now (a refused address is a ListenError here), then serve on a thread."""
        family = socket.AF_INET6 if ":" in self.listen.host else socket.AF_INET
        try:
            self._sock = socket.create_server(
                (self.listen.host, self.listen.port), family=family, backlog=BACKLOG
            )
        except OSError as exc:
            raise ListenError(f"can't listen on {self.listen}: {exc.strerror or exc}") from None
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
        self._thread.start()
        self._ready.wait(5)

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)
        if self._sock is not None:
            self._sock.close()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        loop.set_exception_handler(self._loop_error)
        try:
            server = loop.run_until_complete(
                asyncio.start_server(
                    self._serve, sock=self._sock, limit=self.limits.head_bytes, backlog=BACKLOG
                )
            )
            self._ready.set()
            loop.run_forever()
            server.close()
            for conn in list(self._conns):
                conn.writer.transport.abort()
            tasks = asyncio.all_tasks(loop)
            for task in tasks:
                task.cancel()
            if tasks:
                loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        finally:
            self._ready.set()
            loop.close()

    def _loop_error(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """Out of descriptors on accept and the like: asyncio retries; keep it off stderr."""
        self.stats.last_error = str(context.get("exception") or context.get("message"))[:200]

    # -- one connection --------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(writer)
        self._conns[conn] = None
        self.stats.connections += 1
        self._make_room()
        try:
            while await self._one(conn, reader, writer):
                pass
        except (OSError, EOFError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except TimeoutError:
            self.stats.timed_out += 1
        finally:
            self._conns.pop(conn, None)
            writer.transport.abort()

    def _make_room(self) -> None:
        """Over the cap: drop the oldest idle connection, else the oldest still reading."""
        while len(self._conns) > self.limits.max_connections:
            victims = [c for c in self._conns if c.state == "idle"] or [
                c for c in self._conns if c.state == "reading"
            ]
            if not victims:
                return
            victims[0].state = "dropped"
            victims[0].writer.transport.abort()
            self.stats.evicted += 1
            del self._conns[victims[0]]

    async def _one(
        self, conn: _Conn, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Serve one request; False to close the connection."""
        conn.state = "idle"
        async with asyncio.timeout(self.limits.idle_s):
            first = await reader.readexactly(1)
        conn.state = "reading"
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.request_s
        try:
            async with asyncio.timeout_at(deadline):
                request, keep = await self._read(first, reader, writer)
        except HttpError as exc:
            await self._refuse(writer, (exc.status, f"{exc}\n".encode(), "text/plain"))
            return False
        except TimeoutError:
            self.stats.timed_out += 1
            await self._refuse(writer, (408, b"request took too long\n", "text/plain"))
            return False
        conn.state = "busy"
        try:
            reply = await loop.run_in_executor(self._pool, self._handled, request)
        finally:
            self._buffered -= len(request.body)
            self._in_work -= 1
        if reply[0] >= 400:
            await self._refuse(writer, reply)
            return False
        await _send(writer, reply, keep, loop.time() + SEND_S)
        return keep

    async def _refuse(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        """Answer and close: the rest of the connection is never read as a request."""
        self.stats.refused += 1
        self.on_refused(reply[1][:200].decode(errors="replace").strip())
        await _send(writer, reply, False, asyncio.get_running_loop().time() + SEND_S)

    async def _read(
        self, first: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> tuple[Request, bool]:
        try:
            head = first + await reader.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError:
            raise HttpError(431, "request head too large") from None
        request, keep = parse_head(head, self.limits.max_headers, _peer(writer))
        request.peer_port, request.local, request.local_port = _ends(writer)
        refusal = self.check(request)
        if refusal is not None:
            raise HttpError(refusal[0], refusal[1].decode(errors="replace").strip())
        length = content_length(request, self.limits.max_body)
        if self._in_work >= self.limits.workers + self.limits.queued:
            raise HttpError(503, "busy, retry later")
        if self._buffered + length > self.limits.buffered:
            raise HttpError(503, "busy, retry later")
        self._buffered += length
        try:
            if request.headers.get("expect", "").lower() == "100-continue":
                writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            request.body = await reader.readexactly(length)
        except BaseException:
            self._buffered -= length
            raise
        self._in_work += 1  # complete: waits for a worker
        return request, keep

    def _handled(self, request: Request) -> Reply:
        try:
            return self.handle(request)
        except Exception as exc:  # one bad request never stops the server
            self.stats.last_error = f"internal error: {exc!r}"[:200]
            return 500, b"internal error\n", "text/plain"


class _Conn:
    __slots__ = ("state", "writer")

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.state = "idle"
        """idle (no request in progress), reading, busy (a worker has it) or dropped."""


def parse_head(head: bytes, max_headers: int, peer: str) -> tuple[Request, bool]:
    """The request line and headers, strictly; (request, keep-alive)."""
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].split(b" ")
    if len(parts) != 3 or parts[2] not in (b"HTTP/1.1", b"HTTP/1.0") or not parts[1]:
        raise HttpError(400, "bad request line")
    if len(lines) - 1 > max_headers:
        raise HttpError(431, "too many headers")
    headers: dict[str, str] = {}
    lengths = 0
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not name or not set(name) <= _TOKEN:
            raise HttpError(400, "bad header line")  # folded lines and spaces before ':' too
        key = name.decode("ascii").lower()
        lengths += key == "content-length"
        text = value.strip(b" \t").decode("latin-1")
        headers[key] = f"{headers[key]}, {text}" if key in headers else text
    if lengths > 1:
        raise HttpError(400, "more than one Content-Length")
    if "transfer-encoding" in headers:
        raise HttpError(501, "Transfer-Encoding is not accepted: send a Content-Length")
    keep = parts[2] == b"HTTP/1.1" and headers.get("connection", "").lower() != "close"
    method, target = parts[0].decode("latin-1"), parts[1].decode("latin-1")
    return Request(method, target.split("?", 1)[0], headers, peer), keep


def content_length(request: Request, max_body: int) -> int:
    raw = request.headers.get("content-length")
    if raw is None:
        if request.method in ("GET", "HEAD"):
            return 0
        raise HttpError(411, "Content-Length required")
    if not raw.isascii() or not raw.isdigit() or len(raw) > 12:
        raise HttpError(400, "bad Content-Length")
    if int(raw) > max_body:
        raise HttpError(413, f"body over {max_body} bytes")
    return int(raw)


async def _send(writer: asyncio.StreamWriter, reply: Reply, keep: bool, deadline: float) -> None:
    status, body, ctype = reply
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        f"{'' if keep else 'Connection: close' + chr(13) + chr(10)}\r\n"
    )
    writer.write(head.encode("latin-1") + body)
    async with asyncio.timeout_at(deadline):
        await writer.drain()


def _peer(writer: asyncio.StreamWriter) -> str:
    peer = writer.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def _ends(writer: asyncio.StreamWriter) -> tuple[int, str, int]:
    """(peer port, local address, local port) of a connection; zeros when unknown."""
    peer, local = writer.get_extra_info("peername"), writer.get_extra_info("sockname")
    peer_port = int(peer[1]) if isinstance(peer, tuple) and len(peer) > 1 else 0
    if isinstance(local, tuple) and len(local) > 1:
        return peer_port, str(local[0]), int(local[1])
    return peer_port, "", 0
