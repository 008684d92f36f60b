"""The OTLP receiver with the real OpenTelemetry SDK exporters on loopback: the session
totals equal what was sent, for each agent's events and counters, protobuf and JSON."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from otel_clients import claude_api_request, codex_sse_event, log_provider, meter_provider
from proc_helpers import wait_until
from telemetry_helpers import LOCAL, rig
from tokentop.model import TokenCounts

CLAUDE = [
    {"input": 1200, "output": 300, "cache_read": 40_000, "cache_creation": 2_000},
    {"input": 15, "output": 900, "cache_read": 42_000, "cache_creation": 0},
    {"input": 7, "output": 44, "cache_read": 0, "cache_creation": 512},
]
CLAUDE_TOTAL = TokenCounts(
    input=1222, output=1244, cache_read=82_000, cache_write_5m=2_512
)  # the sum of CLAUDE
CLAUDE_COSTS = [0.0421, 0.0187, 0.0033]


def test_claude_api_request_events_sum_per_session() -> None:
    """Claude Code's log event, numbers as strings, from another machine (host.name)."""
    with rig() as r:
        provider = log_provider(r.url, "claude-code", host="box1")
        for i, tokens in enumerate(CLAUDE):
            claude_api_request(provider, "sess-a", f"req_{i}", tokens, CLAUDE_COSTS[i])
        provider.shutdown()
        s = r.wait_tokens("claude", "sess-a", CLAUDE_TOTAL.total)
        assert s.tokens == CLAUDE_TOTAL
        assert abs(s.cost_usd - sum(CLAUDE_COSTS)) < 1e-9
        assert s.responses == 3
        assert s.host == "box1" and s.remote
        assert r.hub.user_of(s.key) == "ana@example.com"
        assert r.hub.stats.bad_records == 0


def test_a_retried_export_counts_once() -> None:
    with rig() as r:
        provider = log_provider(r.url, "claude-code", host="box1")
        for _ in range(3):  # the same request id re-sent, as after a failed export
            claude_api_request(provider, "sess-r", "req_same", CLAUDE[0], 0.01)
        provider.shutdown()
        wait_until(lambda: r.hub.stats.usages == 3)
        s = r.wait_tokens("claude", "sess-r", 43_500)
        assert s.responses == 1


def test_codex_response_completed_counts_and_other_kinds_do_not() -> None:
    """OpenAI counting: input includes cached tokens, output includes reasoning."""
    sent = [
        {"input": 9000, "output": 700, "cached": 6000, "reasoning": 400},
        {"input": 12000, "output": 150, "cached": 11000, "reasoning": 0},
    ]
    with rig() as r:
        provider = log_provider(r.url, "codex_cli_rs", host="ci-runner-7")
        codex_sse_event(provider, "conv-1", "response.created", None)
        for counts in sent:
            codex_sse_event(provider, "conv-1", "response.output_item.done", None)
            codex_sse_event(provider, "conv-1", "response.completed", counts)
        provider.shutdown()
        expected = TokenCounts(input=4000, output=450, cache_read=17000, reasoning=400)
        s = r.wait_tokens("codex", "conv-1", expected.total)
        assert s.tokens == expected
        assert s.responses == 2
        assert s.host == "ci-runner-7"
        assert r.hub.user_of(s.key) == "acct-codex"


def _otlp_json(session: str, host: str) -> dict[str, object]:
    """The CLAUDE records as OTLP/JSON: camelCase, int64 as strings, ids in hex."""
    now = time.time_ns()
    records = []
    for i, tokens in enumerate(CLAUDE):
        attrs = {
            "session.id": session, "model": "claude-sonnet-4-5-20250929",
            "cost_usd": str(CLAUDE_COSTS[i]), "request_id": f"req_j{i}",
            "input_tokens": str(tokens["input"]), "output_tokens": str(tokens["output"]),
            "cache_read_tokens": str(tokens["cache_read"]),
            "cache_creation_tokens": str(tokens["cache_creation"]),
            "user.email": "bo@example.com",
        }  # fmt: skip
        records.append({
            "timeUnixNano": str(now + i),
            "observedTimeUnixNano": str(now + i),
            "severityNumber": 9,
            "body": {"stringValue": "claude_code.api_request"},
            "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]
            + [{"key": "event.sequence", "value": {"intValue": str(i)}}],
            "traceId": "5b8efff798038103d269b633813fc60c",
            "spanId": "eee19b7ec3c1b174",
        })  # fmt: skip
    resource = {"attributes": [{"key": "host.name", "value": {"stringValue": host}}]}
    return {
        "resourceLogs": [
            {"resource": resource, "scopeLogs": [{"scope": {"name": "x"}, "logRecords": records}]}
        ]
    }


def test_the_same_data_as_otlp_json_with_gzip() -> None:
    with rig() as r:
        body = json.dumps(_otlp_json("sess-json", "box2")).encode()
        assert r.post("/v1/logs", body, "application/json", zipped=True) == 200
        s = r.wait_tokens("claude", "sess-json", CLAUDE_TOTAL.total)
        assert s.tokens == CLAUDE_TOTAL
        assert abs(s.cost_usd - sum(CLAUDE_COSTS)) < 1e-9
        assert s.host == "box2"


def test_claude_token_counters_in_delta_temporality() -> None:
    """Three exports of deltas: each adds; cost comes from claude_code.cost.usage."""
    with rig() as r:
        provider, reader = meter_provider(r.url, "claude-code", "box3", delta=True)
        meter = provider.get_meter("com.anthropic.claude_code")
        usage = meter.create_counter("claude_code.token.usage", unit="tokens")
        cost = meter.create_counter("claude_code.cost.usage", unit="USD")
        base = {"session.id": "sess-m", "model": "claude-opus-4-1", "user.email": "cy@example.com"}
        expected = TokenCounts()
        usd = 0.0
        for n in (100, 250, 40):
            kinds = (("input", "input"), ("output", "output"), ("cacheRead", "cache_read"))
            for kind, field in (*kinds, ("cacheCreation", "cache_write_5m")):
                usage.add(n, {**base, "type": kind})
                expected = expected + TokenCounts(**{field: n})
            cost.add(n / 1000, base)
            usd += n / 1000
            reader.force_flush()
        provider.shutdown()
        s = r.wait_tokens("claude", "sess-m", expected.total)
        assert s.tokens == expected
        assert abs(s.cost_usd - usd) < 1e-9
        assert r.hub.user_of(s.key) == "cy@example.com"


def test_gemini_token_counter_in_cumulative_temporality() -> None:
    """Cumulative points are running totals: the session gets their differences, not a sum
    of totals, and an export that repeats a total adds nothing."""
    with rig() as r:
        provider, reader = meter_provider(r.url, "gemini-cli", "box4", delta=False)
        usage = provider.get_meter("gemini-cli").create_counter("gemini_cli.token.usage")
        attrs = {"session.id": "gem-1", "model": "gemini-2.5-pro"}
        for prompt, cached, out, thought in ((1000, 200, 50, 30), (3000, 2500, 80, 0)):
            usage.add(prompt, {**attrs, "type": "input"})
            usage.add(cached, {**attrs, "type": "cache"})
            usage.add(out, {**attrs, "type": "output"})
            usage.add(thought, {**attrs, "type": "thought"})
            reader.force_flush()
        reader.force_flush()  # nothing new: the same totals again
        provider.shutdown()
        # prompt counts include cached ones: input = 4000 - 2700
        expected = TokenCounts(input=1300, output=130, cache_read=2700, reasoning=30)
        s = r.wait_tokens("gemini", "gem-1", expected.total)
        time.sleep(0.3)
        s = r.wait_tokens("gemini", "gem-1", expected.total)
        assert s.tokens == expected
        assert s.cost_usd == expected.total * 1e-6


def test_events_and_metrics_of_one_session_count_once() -> None:
    """The first kind to arrive is the one counted; the other kind is ignored (and counted)."""
    with rig() as r:
        logs = log_provider(r.url, "claude-code", host="box5")
        claude_api_request(logs, "sess-both", "req_1", CLAUDE[0], 0.04)
        logs.shutdown()
        r.wait_tokens("claude", "sess-both", 43_500)
        provider, reader = meter_provider(r.url, "claude-code", "box5", delta=True)
        usage = provider.get_meter("c").create_counter("claude_code.token.usage")
        usage.add(43_500, {"session.id": "sess-both", "model": "m", "type": "input"})
        reader.force_flush()
        provider.shutdown()
        assert wait_until(lambda: r.hub.stats.ignored == 1)
        s = r.session("claude", "sess-both")
        assert s is not None and s.tokens.total == 43_500


def _transcript(root: Path, sid: str, inputs: list[int]) -> list[str]:
    """A Claude Code transcript whose responses record `inputs` as input tokens (a version
    that writes 0/1 placeholders); returns the request ids."""
    rids, lines = [], []
    for n, input_tokens in enumerate(inputs):
        rid = f"req_011C{uuid.uuid4().hex[:20]}"
        rids.append(rid)
        lines.append(json.dumps({
            "type": "assistant", "sessionId": sid, "cwd": "/work/app", "requestId": rid,
            "uuid": str(uuid.uuid4()), "timestamp": f"2026-12-02T10:00:0{n}Z",
            "message": {
                "id": f"msg_{n}_{sid}", "model": "claude-sonnet-4-5-20250929", "content": [],
                "usage": {"input_tokens": input_tokens, "output_tokens": 200,
                          "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 0},
            },
        }))  # fmt: skip
    folder = root / "projects" / "-work-app"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{sid}.jsonl").write_text("\n".join(lines) + "\n")
    return rids


def _claude_source(root: Path):  # type: ignore[no-untyped-def]
    from tokentop.sources.claude_code import ClaudeCodeSource

    return ClaudeCodeSource(config_dirs=[root])


def test_telemetry_confirms_a_local_transcript_and_never_adds_to_it(tmp_path: Path) -> None:
    """The transcript writes placeholder input (1); the telemetry says more. Local truth
    comes from local evidence: the session keeps the transcript's counts, the responses
    matched by request id are confirmed, one the transcript doesn't have is unconfirmed,
    and the reconciliation shows both apart."""
    rids = _transcript(tmp_path, "sess-local", [1, 1, 0])
    billed = [{"input": 5000, "output": 200, "cache_read": 1000}] * 3
    with rig([_claude_source(tmp_path)]) as r:
        r.wait_tokens("claude", "sess-local", 3 * 1201 - 1)
        provider = log_provider(r.url, "claude-code", host=LOCAL)
        for rid, tokens in zip(rids, billed, strict=True):
            claude_api_request(provider, "sess-local", rid, tokens, 0.02)
        claude_api_request(provider, "sess-local", "req_not_in_it", billed[0], 100.0)
        provider.shutdown()
        wait_until(lambda: r.hub.stats.usages == 4)
        time.sleep(0.8)  # past the hub's wait: nothing is added
        s = r.session("claude", "sess-local")
        assert s is not None and s.responses == 3 and s.tokens.total == 3 * 1201 - 1
        assert not s.from_telemetry and abs(s.cost_usd - (3 * 1201 - 1) * 1e-6) < 1e-12
        from tokentop.history.reconcile import PAIR_SOURCES, reconcile

        PAIR_SOURCES.append(r.hub.pairs)
        try:
            (pair,) = reconcile(r.engine.snapshot())
        finally:
            PAIR_SOURCES.remove(r.hub.pairs)
        assert pair.matched_by == "request_id"
        assert pair.transcript_tokens.input == 2 and pair.proxy_tokens.input == 20_000
        assert pair.unconfirmed_responses == 1 and pair.unconfirmed_tokens.input == 5000
        assert pair.unconfirmed_cost_usd == 100.0
        assert pair.as_dict()["unconfirmed_cost_usd"] == 100.0


def test_telemetry_first_then_transcript_counts_the_transcript(tmp_path: Path) -> None:
    """Telemetry of a local session waits for its transcript (written by the agent first,
    read by the engine a moment later), which then speaks for the session alone."""
    rids = [f"req_011Cfirst{i}" for i in range(2)]
    with rig([_claude_source(tmp_path)], wait_s=10) as r:
        provider = log_provider(r.url, "claude-code")  # no host.name: loopback sender is local
        for rid in rids:
            claude_api_request(provider, "sess-late", rid, {"input": 800, "output": 10}, 0.01)
        provider.shutdown()
        time.sleep(0.3)
        assert r.session("claude", "sess-late") is None  # waiting for the transcript
        folder = tmp_path / "projects" / "-work-app"
        folder.mkdir(parents=True)
        lines = [
            json.dumps(
                {
                    "type": "assistant",
                    "sessionId": "sess-late",
                    "requestId": rid,
                    "timestamp": "2026-12-02T10:00:00Z",
                    "cwd": "/work/app",
                    "message": {
                        "id": f"msg_late_{i}",
                        "model": "m",
                        "content": [],
                        "usage": {"input_tokens": 1, "output_tokens": 10},
                    },
                }
            )
            for i, rid in enumerate(rids)
        ]
        (folder / "sess-late.jsonl").write_text("\n".join(lines) + "\n")
        s = r.wait_tokens("claude", "sess-late", 2 * 11)
        time.sleep(0.6)
        assert r.session("claude", "sess-late").tokens.total == 2 * 11  # type: ignore[union-attr]
        assert s.responses == 2 and not s.from_telemetry


def test_otlp_json_ids_are_hex_not_base64() -> None:
    """protobuf's own JSON reader would take the hex ids for base64 and get other bytes."""
    from tokentop.telemetry.otlp import parse_logs

    body = json.dumps(_otlp_json("ids", "h")).encode()
    record = parse_logs(body, json=True).resource_logs[0].scope_logs[0].log_records[0]
    assert record.trace_id.hex() == "5b8efff798038103d269b633813fc60c"
    assert record.span_id.hex() == "eee19b7ec3c1b174"
