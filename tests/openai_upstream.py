"""A small OpenAI-compatible upstream on 127.0.0.1 that reports known usage, for the tests
that put a real client (the openai SDK, LangGraph, the LiteLLM proxy) in front of it.

Call n (from 1) reports prompt 1000+n (600 of them cached) and completion 50+n (10 of them
reasoning): in tokentop's disjoint kinds, input 400+n, output 40+n, cache read 600 and
reasoning 10 (`reported`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tokentop.model import TokenCounts

Message = dict[str, Any]
Answer = Callable[[int, dict[str, Any]], Message]
"""The assistant message of call n, given the request's body."""


def plain_answer(n: int, body: dict[str, Any]) -> Message:
    return {"role": "assistant", "content": "ok"}


class Upstream(BaseHTTPRequestHandler):
    """Chat completions; `calls` counts them (reset by `serving`)."""

    calls = 0
    lock = threading.Lock()
    answer: Answer = staticmethod(plain_answer)
    model: str | None = None
    """The model every reply names; None: the request's."""

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        with Upstream.lock:
            Upstream.calls += 1
            n = Upstream.calls
        model = Upstream.model or body.get("model", "m")
        reply = json.dumps(completion(n, model, Upstream.answer(n, body)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply.encode())))
        self.end_headers()
        self.wfile.write(reply.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


def completion(n: int, model: str, message: Message) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-{n}",
        "object": "chat.completion",
        "created": 1_700_000_000 + n,
        "model": model,
        "choices": [{"index": 0, "finish_reason": "stop", "message": message}],
        "usage": {
            "prompt_tokens": 1000 + n,
            "completion_tokens": 50 + n,
            "total_tokens": 1050 + 2 * n,
            "prompt_tokens_details": {"cached_tokens": 600},
            "completion_tokens_details": {"reasoning_tokens": 10},
        },
    }


def reported(calls: Iterable[int]) -> TokenCounts:
    """What the upstream reported for `calls`, in tokentop's disjoint kinds."""
    return sum(
        (TokenCounts(input=400 + n, output=40 + n, cache_read=600, reasoning=10) for n in calls),
        TokenCounts(),
    )


@contextmanager
def serving(answer: Answer = plain_answer, model: str | None = None) -> Iterator[int]:
    """The upstream on a free loopback port (yielded), its call count reset."""
    Upstream.calls, Upstream.model = 0, model
    Upstream.answer = staticmethod(answer)  # type: ignore[assignment]
    server = ThreadingHTTPServer(("127.0.0.1", 0), Upstream)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()
