"""Fleet command-line options; imports nothing heavy, so every command can offer them."""

from __future__ import annotations

import argparse
import ipaddress

import msgspec

DEFAULT_PORT = 4318


class ListenError(Exception):
    """A listen address that can't or mustn't be used; printed as one line."""


class Listen(msgspec.Struct, frozen=True):
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def loopback(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False  # a name: it may resolve to anything


def parse_listen(text: str, default_port: int = DEFAULT_PORT) -> Listen:
    """`[HOST:]PORT`, `HOST`, or `[V6]:PORT`; the host defaults to 127.0.0.1."""
    text = text.strip()
    host, port = "127.0.0.1", str(default_port)
    if text.startswith("["):
        head, closed, tail = text[1:].partition("]")
        if not closed:
            raise ListenError(f"bad listen address {text!r}: no closing ]")
        host, port = head, tail.removeprefix(":") or port
    elif text.count(":") == 1:
        host, port = text.split(":")
        host = host or "127.0.0.1"
    elif text.isdigit():
        port = text
    elif text:
        host = text
    if not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        raise ListenError(f"bad listen address {text!r}: use [HOST:]PORT, e.g. 127.0.0.1:4318")
    return Listen(host, int(port))


def require_token(listen: Listen, token: str, what: str = "OTLP receiver") -> None:
    """Refuse a non-loopback listen without a token, with what to do about it."""
    if not listen.loopback and not token:
        raise ListenError(
            f"refusing to run the {what} on {listen} without a token: anyone who can reach "
            "it could report sessions. Set `token` under [otlp] in the config (agents send "
            "it with OTEL_EXPORTER_OTLP_HEADERS='Authorization=Bearer <token>'), or listen "
            "on 127.0.0.1."
        )


def token_ok(header: str | None, token: str) -> bool:
    """Whether an Authorization header carries the bearer `token` (any header, without one)."""
    if not token:
        return True
    expected = f"Bearer {token}".encode()
    import hmac  # hashlib loads OpenSSL (~4 ms): not on every command's start

    return hmac.compare_digest((header or "").strip().encode(), expected)


def add_fleet_args(p: argparse.ArgumentParser, top: bool = False) -> None:
    """`--otlp` and `--prometheus`, accepted before or after the subcommand (see cli)."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    p.add_argument(
        "--otlp",
        metavar="[HOST:]PORT",
        default=default(None),
        help="receive the agents' OpenTelemetry (OTLP/HTTP) here, e.g. 4318 (loopback); "
        "beyond loopback only with [otlp] token (docs/fleet.md)",
    )
    p.add_argument(
        "--prometheus",
        metavar="[HOST:]PORT",
        default=default(None),
        help="serve Prometheus /metrics here, e.g. 9469 (never 9464, Claude Code's)",
    )
    p.add_argument(
        "--gemini-outfile",
        metavar="FILE",
        default=default(None),
        help="follow Gemini CLI's telemetry outfile (its `telemetry.outfile` setting)",
    )
