"""Gemini CLI's telemetry outfile, tailed: objects indented by two spaces, appended in
pieces, one cut in the middle; events and counters as Gemini CLI writes them."""

from __future__ import annotations

import json
from pathlib import Path

from proc_helpers import wait_until
from telemetry_helpers import per_token
from tokentop.engine.engine import Engine
from tokentop.model import SessionKey, TokenCounts
from tokentop.telemetry.hub import TelemetryHub
from tokentop.telemetry.outfile import OutfileFollower


def _api_response(session: str, prompt: int, cached: int, out: int, thoughts: int) -> dict:  # type: ignore[type-arg]
    return {
        "hrTime": [1764700000, 5000],
        "hrTimeObserved": [1764700000, 6000],
        "resource": {"_rawAttributes": [["service.name", "gemini-cli"], ["host.name", "x"]]},
        "instrumentationScope": {"name": "gemini-cli"},
        "attributes": {
            "session.id": session, "installation.id": "inst-1", "user.email": "dee@example.com",
            "event.name": "gemini_cli.api_response",
            "event.timestamp": "2025-12-02T18:26:40.000Z", "model": "gemini-2.5-pro",
            "status_code": 200, "duration_ms": 1800, "input_token_count": prompt,
            "output_token_count": out, "cached_content_token_count": cached,
            "thoughts_token_count": thoughts, "tool_token_count": 0,
            "total_token_count": prompt + out + thoughts, "prompt_id": "p1",
            "auth_type": "gemini-api-key", "finish_reasons": ["STOP"],
        },
        "_body": "API response from gemini-2.5-pro. Status: 200. Duration: 1800ms.",
    }  # fmt: skip


def _token_usage(session: str, values: dict[str, int], start: int) -> dict:  # type: ignore[type-arg]
    points = [
        {"attributes": {"session.id": session, "model": "gemini-2.5-flash", "type": kind},
         "startTime": [start, 0], "endTime": [start + 60, 0], "value": value}
        for kind, value in values.items()
    ]  # fmt: skip
    metric = {
        "descriptor": {"name": "gemini_cli.token.usage", "type": "COUNTER", "unit": ""},
        "aggregationTemporality": 1, "dataPointType": 3, "isMonotonic": True,
        "dataPoints": points,
    }  # fmt: skip
    return {"resource": {"_rawAttributes": []}, "scopeMetrics": [{"metrics": [metric]}]}


def test_outfile_events_and_cumulative_counters(tmp_path: Path) -> None:
    outfile = tmp_path / "telemetry.log"
    docs = [
        _api_response("g-ev", 1000, 400, 80, 20),
        _api_response("g-ev", 2000, 1500, 50, 0),
        _token_usage("g-met", {"input": 500, "cache": 100, "output": 40}, 1764700000),
        _token_usage("g-met", {"input": 900, "cache": 100, "output": 70}, 1764700000),
    ]
    text = "".join(json.dumps(d, indent=2) + "\n" for d in docs)
    engine = Engine([], per_token, workers=1)
    engine.scanned.set()  # nothing on disk: telemetry need not wait for a first scan
    hub = TelemetryHub(engine, local_names=["x"], wait_s=0.0)
    follower = OutfileFollower(outfile, hub)
    cut = len(text) // 2 + 7
    outfile.write_text(text[:cut])
    follower.poll()
    with outfile.open("a") as f:
        f.write(text[cut:] + '{\n  "broken": \n}\n')
    follower.poll()
    engine.apply_inbox()
    sessions = {s.key: s for s in engine.snapshot().sessions}
    ev = sessions[SessionKey("gemini", "g-ev")]
    assert ev.tokens == TokenCounts(input=1100, output=130, cache_read=1900, reasoning=20)
    assert ev.responses == 2 and not ev.host  # host.name "x" is this machine
    assert ev.from_telemetry  # but only telemetry says so: alerts only
    met = sessions[SessionKey("gemini", "g-met")]
    assert met.tokens == TokenCounts(input=800, output=70, cache_read=100)
    assert follower.objects == 4 and follower.bad == 1
    assert hub.user_of(ev.key) == "dee@example.com"


def test_outfile_is_followed_on_its_thread(tmp_path: Path) -> None:
    outfile = tmp_path / "telemetry.log"
    outfile.write_text("")
    engine = Engine([], per_token, workers=1)
    hub = TelemetryHub(engine, local_names=[], wait_s=0.0)
    follower = OutfileFollower(outfile, hub)
    engine.start()
    hub.start()  # as the fleet starts it: what came before the engine's scan ended is settled
    follower.start()
    try:
        with outfile.open("a") as f:
            f.write(json.dumps(_api_response("g-live", 300, 0, 30, 0), indent=2) + "\n")

        def counted() -> bool:
            return any(s.key.session_id == "g-live" for s in engine.snapshot().sessions)

        assert wait_until(counted, timeout=10)
    finally:
        follower.stop()
        hub.stop()
        engine.stop()
