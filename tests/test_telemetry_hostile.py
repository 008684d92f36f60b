"""Hostile senders: malformed, oversized and compressed-bomb bodies get a 4xx, bad records
are counted, and the receiver goes on serving; a non-loopback listen needs a token."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import pytest

from otel_clients import claude_api_request, log_provider
from telemetry_helpers import Rig, rig
from tokentop.telemetry.options import Listen, ListenError, parse_listen
from tokentop.telemetry.receiver import Receiver

GOOD = {"input": 10, "output": 5, "cache_read": 0, "cache_creation": 0}


def _still_serving(r: Rig, sid: str) -> None:
    provider = log_provider(r.url, "claude-code", host="box9")
    claude_api_request(provider, sid, f"req-{sid}", GOOD, 0.001)
    provider.shutdown()
    assert r.wait_tokens("claude", sid, 15).responses == 1


def _record(attrs: dict[str, str]) -> dict[str, object]:
    kvs = [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]
    body = {"stringValue": "claude_code.api_request"}
    return {"timeUnixNano": "1", "body": body, "attributes": kvs}


def _logs(*records: dict[str, object]) -> bytes:
    scope = {"scopeLogs": [{"logRecords": list(records)}]}
    return json.dumps({"resourceLogs": [scope]}).encode()


def test_malformed_bodies_get_400_and_the_receiver_goes_on() -> None:
    with rig() as r:
        assert r.post("/v1/logs", os.urandom(4096)) == 400
        assert r.post("/v1/metrics", b"\xff" * 100) == 400
        for junk in (b"not json", b"[1, 2]", b'{"resourceLogs": "x"}', b'{"resourceLogs": [{'):
            assert r.post("/v1/logs", junk, "application/json") == 400
        bad_id = _logs({**_record({"session.id": "s"}), "traceId": "zz-not-hex"})
        assert r.post("/v1/logs", bad_id, "application/json") == 400
        deep = '{"kvlistValue": {"values": [{"key": "k", "value": ' * 3000
        nested = '{"resourceLogs": [{"scopeLogs": [{"logRecords": [{"body": ' + deep
        assert r.post("/v1/logs", nested.encode(), "application/json") == 400
        assert r.post("/v1/profiles", b"", "application/json") == 404
        assert r.hub.stats.refused == 9
        _still_serving(r, "after-junk")


def test_oversized_and_bomb_bodies_get_413() -> None:
    with rig(max_body=64 * 1024) as r:
        assert r.post("/v1/logs", b"\0" * (65 * 1024)) == 413
        bomb = gzip.compress(b"\0" * (64 * 1024 * 1024), compresslevel=9)
        assert len(bomb) < 64 * 1024  # small on the wire, 64 MiB inflated
        status = r.post("/v1/logs", bomb, headers={"Content-Encoding": "gzip"})
        assert status == 413
        deflate_bomb = zlib.compress(b"\0" * (64 * 1024 * 1024), 9)
        assert r.post("/v1/logs", deflate_bomb, headers={"Content-Encoding": "deflate"}) == 413
        assert r.post("/v1/logs", b"\x1f\x8b garbage", headers={"Content-Encoding": "gzip"}) == 400
        truncated = gzip.compress(_logs(_record({"session.id": "t"})))[:-12]
        assert r.post("/v1/logs", truncated, headers={"Content-Encoding": "gzip"}) == 400
        assert r.post("/v1/logs", b"x", headers={"Content-Encoding": "br"}) == 415
        _still_serving(r, "after-bombs")


def test_bad_records_are_counted_and_the_good_ones_in_the_same_request_kept() -> None:
    base = {"model": "m", "output_tokens": "5", "request_id": ""}
    records = [
        _record({**base, "session.id": "h1", "input_tokens": "9" * 5000, "request_id": "a"}),
        _record({**base, "session.id": "h1", "input_tokens": "-3", "request_id": "b"}),
        _record({**base, "session.id": "h1", "input_tokens": "NaN", "request_id": "c"}),
        _record({**base, "session.id": "h1", "input_tokens": "7", "cost_usd": "1e400"}),
        _record({**base, "input_tokens": "7"}),  # no session id
        _record({**base, "session.id": "h1", "input_tokens": "7", "request_id": "ok"}),
        _record({**base, "session.id": "x" * 100_000, "input_tokens": "1", "request_id": "z"}),
        _record({**base, "session.id": "n\0\x1b[2J", "input_tokens": "2", "request_id": "\0"}),
    ]
    with rig() as r:
        assert r.post("/v1/logs", _logs(*records), "application/json") == 200
        assert r.wait_tokens("claude", "h1", 12).responses == 1
        assert r.hub.stats.bad_records == 5
        long = r.session("claude", "x" * 256)  # strangers' strings are cut
        assert long is not None and long.tokens.total == 6
        controls = r.session("claude", "n\ufffd\ufffd[2J")  # no NUL reaches a ledger key
        assert controls is not None and controls.tokens.total == 7


def test_a_token_is_required_when_set() -> None:
    with rig(token="s3cret") as r:
        body = _logs(_record({"session.id": "tok", "input_tokens": "4", "request_id": "q"}))
        assert r.post("/v1/logs", body, "application/json") == 401
        wrong = {"Authorization": "Bearer nope"}
        assert r.post("/v1/logs", body, "application/json", headers=wrong) == 401
        right = {"Authorization": "Bearer s3cret"}
        assert r.post("/v1/logs", body, "application/json", headers=right) == 200
        assert r.wait_tokens("claude", "tok", 4).responses == 1
        provider = log_provider(r.url, "claude-code", host="b", token="s3cret")
        claude_api_request(provider, "tok2", "r2", GOOD, 0.0)
        provider.shutdown()
        r.wait_tokens("claude", "tok2", 15)


def test_non_loopback_listen_without_a_token_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ListenError, match="without a token"):
        Receiver(None, Listen("0.0.0.0", 0))  # type: ignore[arg-type]
    env = {**os.environ, "HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path / "c")}
    env.pop("TOKENTOP_OTLP_TOKEN", None)
    for flags in (["--otlp", "0.0.0.0:0"], ["--prometheus", "0.0.0.0:0"]):
        done = subprocess.run(
            [sys.executable, "-m", "tokentop.cli", "serve", *flags, "--no-cache"],
            env=env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert done.returncode == 2, done.stderr
        assert "without a token" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "tokentop.cli", "serve", "--prometheus", "9464", "--no-cache"],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2 and "9464" in done.stderr


def test_listen_addresses() -> None:
    assert parse_listen("4318") == Listen("127.0.0.1", 4318)
    assert parse_listen("0.0.0.0:4000") == Listen("0.0.0.0", 4000)
    assert parse_listen("[::1]:4318") == Listen("::1", 4318)
    assert parse_listen("localhost") == Listen("localhost", 4318)
    assert Listen("::1", 1).loopback and Listen("127.0.0.2", 1).loopback
    assert not Listen("10.0.0.1", 1).loopback and not Listen("box.example", 1).loopback
    for bad in ("99999", "host:port", ":", "[::1"):
        with pytest.raises(ListenError):
            parse_listen(bad)


def test_a_busy_engine_gets_503_until_it_catches_up() -> None:
    """While the engine is busy (a cold scan, say), queued telemetry is bounded: past the
    limit senders are told 503 (OTLP exporters retry), and served again once it applies."""
    from telemetry_helpers import per_token
    from tokentop.engine.engine import Engine
    from tokentop.model import SessionInfo, SessionKey
    from tokentop.telemetry.hub import TelemetryHub
    from tokentop.telemetry.receiver import MAX_BACKLOG

    engine = Engine([], per_token, workers=1)  # not started: nothing applies the queue
    hub = TelemetryHub(engine, local_names=[])
    receiver = Receiver(hub, Listen("127.0.0.1", 0))
    receiver.start()
    try:
        engine.ingest([SessionInfo(SessionKey("claude", "q"), 0.0)] * (MAX_BACKLOG + 1), "x")
        r = Rig(engine, hub, receiver)
        body = _logs(_record({"session.id": "b", "input_tokens": "3", "request_id": "b"}))
        assert r.post("/v1/logs", body, "application/json") == 503
        engine.apply_inbox()
        assert r.post("/v1/logs", body, "application/json") == 200
    finally:
        receiver.stop()


def test_telemetry_numbers_follow_the_transcript_rules() -> None:
    """A count is an integer or a string of digits: "12.7" is not 12, "1_000" not 1000, and
    true not 1; a cost is a plain decimal. Each such record is bad (counted), not misread."""
    from tokentop.telemetry.agents import BadRecord, cost, count

    assert count({"n": "1200"}, "n") == 1200 and count({"n": 7}, "n") == 7
    assert count({}, "n") == 0 and cost({"cost_usd": "0.0421"}) == 0.0421
    assert cost({"cost_usd": 1}) == 1.0 and cost({"cost_usd": "2e-3"}) == 0.002
    for junk in ("12.7", "1_000", " 5", "+5", "0x10", "١٢", True, False, 12.7, 12.0, "1e3"):
        with pytest.raises(BadRecord):
            count({"n": junk}, "n")
    for junk in ("1_0", " 5", "nan", "inf", "-1", "5$"):
        with pytest.raises(BadRecord):
            cost({"cost_usd": junk})
    records = [
        _record({"session.id": "strict", "input_tokens": bad, "request_id": f"r{i}"})
        for i, bad in enumerate(("12.7", "1_000"))
    ] + [_record({"session.id": "strict", "input_tokens": "5", "request_id": "ok"})]
    flag = {"key": "output_tokens", "value": {"boolValue": True}}
    records[-1]["attributes"].append(flag)  # type: ignore[union-attr]
    records.append(_record({"session.id": "strict", "input_tokens": "4", "request_id": "good"}))
    with rig() as r:
        assert r.post("/v1/logs", _logs(*records), "application/json") == 200
        assert r.wait_tokens("claude", "strict", 4).responses == 1
        assert r.hub.stats.bad_records == 3


def _raw(port: int, data: bytes) -> bytes:
    """Send raw bytes on one connection; everything the server answers until it closes."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        got = b""
        while chunk := s.recv(65536):
            got += chunk
    return got


def test_a_refused_request_never_smuggles_the_next_one() -> None:
    """The body of a refused POST (wrong token) is a complete POST with the right token:
    it must not be read as the next request. Two Content-Lengths, or a Transfer-Encoding,
    are refused, and each refusal closes the connection."""
    body = _logs(_record({"session.id": "smuggled", "input_tokens": "9", "request_id": "s"}))
    inner = (
        b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
    )
    with rig(token="s3cret") as r:
        port = r.receiver.port
        outer = b"POST /v1/logs HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(inner)
        answer = _raw(port, outer + inner)
        assert answer.startswith(b"HTTP/1.1 401") and answer.count(b"HTTP/1.1") == 1
        wrong_path = b"POST /v1/traces HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(inner)
        assert _raw(port, wrong_path + inner).count(b"HTTP/1.1") == 1
        two = b"POST /v1/logs HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: %d\r\n\r\n"
        assert _raw(port, (two % len(inner)) + inner).startswith(b"HTTP/1.1 400")
        chunked = (
            b"POST /v1/logs HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        )
        assert _raw(port, chunked + b"0\r\n\r\n").startswith(b"HTTP/1.1 501")
        time.sleep(0.8)
        assert r.session("claude", "smuggled") is None
        assert (
            r.post("/v1/logs", body, "application/json", headers={"Authorization": "Bearer s3cret"})
            == 200
        )
        assert r.wait_tokens("claude", "smuggled", 9).responses == 1


def test_an_event_time_no_datetime_prints_falls_back_to_the_records() -> None:
    """`event.timestamp` is the sender's text: late on 9999-12-31 at -23:59 it is a Unix time
    past what a datetime prints (it crashed the JSON output). It is taken as absent."""
    from tokentop.telemetry.agents import from_log
    from tokentop.telemetry.otlp import LogItem

    def when(stamp: str) -> float:
        attrs: dict[str, str | int | float | bool] = {
            "event.timestamp": stamp, "session.id": "s1", "request_id": "r1", "input_tokens": 5,
        }  # fmt: skip
        usage = from_log(LogItem("claude_code.api_request", 1.7e9, attrs, {}))
        assert usage is not None and usage.tokens.input == 5
        return usage.time

    assert when("2025-12-02T18:26:40.000Z") == 1764700000.0
    assert when("9999-12-31T23:59:59-23:59") == 1.7e9
    assert when("not a time") == 1.7e9
