"""A running engine + telemetry hub + receiver on loopback, and ways to read what it counted."""

from __future__ import annotations

import gzip
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

from proc_helpers import wait_until
from tokentop.engine.engine import Engine
from tokentop.model import SessionKey, SessionSnapshot, TokenCounts
from tokentop.processes.exporters import ExporterMap
from tokentop.sources.base import Source
from tokentop.telemetry.hub import TelemetryHub
from tokentop.telemetry.options import Listen
from tokentop.telemetry.receiver import Receiver

LOCAL = "this-box"
"""The name the hub takes as this machine's (so "box1" is another machine)."""


def per_token(model: str, tokens: TokenCounts) -> float:
    """A price of a micro-dollar per token, whatever the model: exact sums in tests."""
    return tokens.total * 1e-6


@dataclass
class Rig:
    engine: Engine
    hub: TelemetryHub
    receiver: Receiver

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.receiver.port}"

    def session(self, agent: str, sid: str) -> SessionSnapshot | None:
        for s in self.engine.snapshot().sessions:
            if s.key == SessionKey(agent, sid):
                return s
        return None

    def wait_tokens(self, agent: str, sid: str, total: int, timeout: float = 20) -> SessionSnapshot:
        def done() -> bool:
            s = self.session(agent, sid)
            return s is not None and s.tokens.total == total

        wait_until(done, timeout)
        found = self.session(agent, sid)
        assert found is not None, f"no session {agent}:{sid}; hub: {self.hub.stats}"
        return found

    def post(
        self, path: str, body: bytes, ctype: str = "application/x-protobuf",
        headers: dict[str, str] | None = None, zipped: bool = False,
    ) -> int:  # fmt: skip
        """POST raw bytes; the HTTP status (errors included)."""
        data = gzip.compress(body) if zipped else body
        req = urllib.request.Request(f"{self.url}{path}", data=data, method="POST")
        req.add_header("Content-Type", ctype)
        if zipped:
            req.add_header("Content-Encoding", "gzip")
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as exc:
            return int(exc.code)


@contextmanager
def rig(
    sources: Sequence[Source] = (), token: str = "", wait_s: float = 0.5, max_body: int = 1 << 20,
    local: str = LOCAL, exporters: ExporterMap | None = None,
) -> Iterator[Rig]:  # fmt: skip
    engine = Engine(list(sources), per_token, workers=1)
    hub = TelemetryHub(engine, local_names=[local], wait_s=wait_s, exporters=exporters)
    receiver = Receiver(hub, Listen("127.0.0.1", 0), token, max_body=max_body)
    receiver.start()
    hub.start()
    engine.start()
    try:
        yield Rig(engine, hub, receiver)
    finally:
        receiver.stop()
        hub.stop()
        engine.stop()
