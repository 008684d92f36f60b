"""POST /v1/traces: which spans count, sessions, hostile spans, and the exporter proof.

Spans are built as OTLP protobuf (and OTLP/JSON) and posted to a real receiver on loopback;
what it counted is read from the engine's snapshot.
"""

from __future__ import annotations

import json
import os
import resource
import socket
import subprocess
import sys
import time
from typing import Any

import psutil
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status

from proc_helpers import wait_until
from telemetry_helpers import LOCAL, Rig, rig
from tokentop.model import SessionKey, TokenCounts
from tokentop.processes.exporters import Connection, ExporterMap, sending_process
from tokentop.telemetry import traces

TRACE = bytes.fromhex("0af7651916cd43dd8448eb211c80319c")


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def span(
    sid: int, parent: int = 0, name: str = "chat", trace: bytes = TRACE, error: bool = False,
    **attrs: Any,
) -> Span:  # fmt: skip
    """A span; attribute names use "__" for "." (gen_ai__usage__input_tokens)."""
    now = time.time_ns()
    return Span(
        trace_id=trace, span_id=sid.to_bytes(8, "big"),
        parent_span_id=parent.to_bytes(8, "big") if parent else b"", name=name,
        start_time_unix_nano=now - 1000, end_time_unix_nano=now,
        attributes=[kv(k.replace("__", "."), v) for k, v in attrs.items()],
        status=Status(code=Status.STATUS_CODE_ERROR if error else Status.STATUS_CODE_OK),
    )  # fmt: skip


def chat(sid: int, parent: int = 0, n: int = 1, **more: Any) -> Span:
    """An LLM call: input 1000+n (600 cached), output 50+n (10 reasoning)."""
    usage = {
        "gen_ai__operation__name": "chat", "gen_ai__request__model": "gpt-4o-mini",
        "gen_ai__usage__input_tokens": 1000 + n, "gen_ai__usage__output_tokens": 50 + n,
        "gen_ai__usage__cache_read__input_tokens": 600, "gen_ai__usage__reasoning_tokens": 10,
    }  # fmt: skip
    return span(sid, parent, **{**usage, **more})


def counted(calls: list[int]) -> TokenCounts:
    return sum(
        (TokenCounts(input=400 + n, output=40 + n, cache_read=600, reasoning=10) for n in calls),
        TokenCounts(),
    )


def body(*spans: Span, service: str = "support-bot", **resource_attrs: Any) -> bytes:
    attrs = [
        kv("service.name", service),
        *(kv(k.replace("__", "."), v) for k, v in resource_attrs.items()),
    ]
    rs = ResourceSpans()
    rs.resource.attributes.extend(attrs)
    rs.scope_spans.add().spans.extend(spans)
    return ExportTraceServiceRequest(resource_spans=[rs]).SerializeToString()


def send(r: Rig, payload: bytes) -> None:
    assert r.post("/v1/traces", payload) == 200


def sessions(r: Rig, agent: str = "support-bot") -> dict[str, Any]:
    return {s.key.session_id: s for s in r.engine.snapshot().sessions if s.key.agent == agent}


def test_one_usage_per_llm_call_never_a_parent_that_sums_its_children() -> None:
    """An agent span summing its calls, a framework span around the SDK span of the same
    request (both with usage), a task span with usage: only the calls count."""
    with rig() as r:
        summed = {"gen_ai__usage__input_tokens": 9999, "gen_ai__usage__output_tokens": 999}
        conv = {"gen_ai__conversation__id": "ticket-1"}
        send(r, body(
            chat(3, parent=2, n=1, **conv),  # the SDK's span: ends first, arrives first
            chat(2, parent=1, n=1, **conv),  # the framework's span of the same request
            span(5, parent=1, name="task", gen_ai__operation__name="execute_task", **summed),
            chat(6, parent=5, n=2),
            span(1, name="invoke_agent", gen_ai__operation__name="invoke_agent", **summed),
        ))  # fmt: skip
        send(r, body(chat(7, parent=1, n=3)))  # a later call of the same trace (a child of 1)
        send(r, body(chat(8, n=4, trace=b"\x01" * 16)))  # a call of another trace, unnamed
        assert wait_until(lambda: sum(s.responses for s in sessions(r).values()) == 4)
        time.sleep(0.3)
        found = sessions(r)
        assert found["ticket-1"].tokens == counted([1, 2, 3])
        assert found["01" * 16].tokens == counted([4])  # a trace without a conversation
        assert r.hub.stats.ignored == 1  # the framework span of call 1


def test_the_parent_first_and_the_json_encoding() -> None:
    """OTLP/JSON (hex ids): a framework span that arrives before its SDK child is counted,
    and the child is then the duplicate; a retried export counts once."""
    with rig() as r:

        def doc(*items: dict[str, Any]) -> bytes:
            service = {"key": "service.name", "value": {"stringValue": "bot"}}
            rs = {"resource": {"attributes": [service]}, "scopeSpans": [{"spans": list(items)}]}
            return json.dumps({"resourceSpans": [rs]}).encode()

        def item(sid: str, parent: str, n: int) -> dict[str, Any]:
            attrs = {"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 1000 + n,
                     "gen_ai.usage.output_tokens": 50 + n, "session.id": "s-json"}  # fmt: skip
            kvs = [{"key": k, "value": {"stringValue": v} if isinstance(v, str) else
                    {"intValue": v}} for k, v in attrs.items()]  # fmt: skip
            return {"traceId": TRACE.hex(), "spanId": sid, "parentSpanId": parent, "name": "chat",
                    "endTimeUnixNano": str(time.time_ns()), "attributes": kvs}  # fmt: skip

        parent, child = (
            item("00000000000000a1", "", 1),
            item("00000000000000a2", "00000000000000a1", 1),
        )
        for payload in (doc(parent), doc(child), doc(parent)):
            assert r.post("/v1/traces", payload, "application/json") == 200
        s = r.wait_tokens("bot", "s-json", 1052)
        time.sleep(0.3)
        assert s.responses == 1 and sessions(r, "bot")["s-json"].tokens.total == 1052


def test_tool_spans_feed_the_loop_detector_and_cost_is_the_spans_own() -> None:
    with rig() as r:
        tool = {
            "gen_ai__operation__name": "execute_tool", "gen_ai__tool__name": "lookup",
            "gen_ai__tool__call__arguments": '{"q": "same"}', "session__id": "s-tools",
        }  # fmt: skip
        spans = [span(10 + i, name="execute_tool lookup", error=True, **tool) for i in range(4)]
        spans.append(chat(20, n=1, session__id="s-tools", gen_ai__usage__cost=0.25))
        send(r, body(*spans))
        s = r.wait_tokens("support-bot", "s-tools", counted([1]).total)
        assert wait_until(lambda: len(sessions(r)["s-tools"].recent_tools) == 4)
        s = sessions(r)["s-tools"]
        assert {(t.name, t.is_error) for t in s.recent_tools} == {("lookup", True)}
        assert len({t.input_hash for t in s.recent_tools}) == 1
        assert s.cost_usd == 0.25 and s.tool_errors == 4


def test_the_agent_label_is_bounded_and_escaped() -> None:
    with rig() as r:
        service = "evil:\x1b]52;c;aGk=\x07" + "x" * 500
        send(r, body(chat(1, n=1, session__id="s1"), service=service))
        assert wait_until(
            lambda: any(s.key.session_id == "s1" for s in r.engine.snapshot().sessions)
        )
        (s,) = [s for s in r.engine.snapshot().sessions if s.key.session_id == "s1"]
    assert len(s.key.agent) <= 40 and ":" not in s.key.agent and "\x1b" not in s.key.agent


def test_hostile_spans_leave_good_totals_exact_and_memory_bounded() -> None:
    """10k conversation ids, a 3 MB attribute, negative, string and float counts, a
    parent/child cycle: the receiver keeps serving, the good session's totals are exact,
    the trace state stays under its bounds and the RSS grows by little."""
    with rig(max_body=4 << 20) as r:
        send(r, body(chat(1, n=1, session__id="good")))
        r.wait_tokens("support-bot", "good", counted([1]).total)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for batch in range(10):
            flood = [chat(1000 + i, n=1, trace=os.urandom(16), session__id=f"c{batch}-{i}")
                     for i in range(1000)]  # fmt: skip
            send(r, body(*flood))
        huge = "p" * (3 << 20)
        send(r, body(chat(2, n=2, session__id="good", gen_ai__input__messages=huge,
                          gen_ai__response__model="m" * 100_000)))  # fmt: skip
        bad = [
            chat(3, session__id="good", gen_ai__usage__input_tokens=-5),
            chat(4, session__id="good", gen_ai__usage__output_tokens="12"),
            chat(5, session__id="good", gen_ai__usage__input_tokens=1.5),
            chat(6, session__id="good", gen_ai__usage__input_tokens=10**15),
        ]
        send(r, body(*bad))
        cycle = [
            chat(31, parent=32, n=3, session__id="good"),
            chat(32, parent=31, n=9, session__id="good"),
        ]
        send(r, body(*cycle))  # each the other's parent: one is counted, the walk ends
        send(r, body(chat(40, n=4, session__id="good")))
        r.wait_tokens("support-bot", "good", counted([1, 2, 3, 4]).total)
        grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
        time.sleep(0.3)
        good = sessions(r)["good"]
        assert good.tokens == counted([1, 2, 3, 4]) and good.responses == 4
        assert len(sessions(r)) == traces.MAX_LIVE_SESSIONS  # the rest were refused
        assert r.hub.traces.links <= traces.MAX_LINKS
        assert r.hub.stats.bad_records == 4
        assert grown_mb < 200, grown_mb
        send(r, body(chat(41, n=5, session__id="good")))  # still serving
        r.wait_tokens("support-bot", "good", counted([1, 2, 3, 4, 5]).total)


# -- the exporter proof ---------------------------------------------------------------------


def test_a_process_is_proven_only_by_the_connection_it_holds() -> None:
    """A child connects to a listening socket here; only its pid, with that connection,
    started before the first span, proves; not this process, not another connection."""
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]
    code = f"import socket,time; s=socket.create_connection(('127.0.0.1',{port})); time.sleep(60)"
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        server.settimeout(20)
        accepted, peer = server.accept()
        conn = Connection(peer[0], peer[1], "127.0.0.1", port)
        later = time.time() + 5
        assert wait_until(lambda: sending_process(child.pid, conn, later) is not None)
        ref = sending_process(child.pid, conn, later)
        assert ref is not None and ref.how == "exporter" and ref.exact
        assert ref.create_time == psutil.Process(child.pid).create_time()
        other_port = Connection(peer[0], peer[1] + 1, "127.0.0.1", port)
        assert sending_process(child.pid, other_port, later) is None
        assert sending_process(os.getppid(), conn, later) is None  # not the holder
        assert sending_process(child.pid, conn, time.time() - 3600) is None  # started after
        accepted.close()
    finally:
        child.kill()
        child.wait()
        server.close()


def test_the_map_turns_ambiguous_on_any_other_claim() -> None:
    ref = sending_process  # a proof that always holds, and one that never does
    good = lambda pid, first: _ref(pid)  # noqa: E731
    key = SessionKey("bot", "s")
    for claims, expected in (
        ([(42, True, good)], 42),
        ([(42, True, good), (42, True, good)], 42),
        ([(42, True, good), (43, True, good)], None),  # another pid
        ([(42, True, good), (42, False, good)], None),  # another host
        ([(42, True, good), (0, True, good)], None),  # no pid
        ([(42, True, good), (42, True, lambda p, f: None)], None),  # another connection
        ([(42, True, lambda p, f: None), (42, True, good)], None),  # a forged span first
    ):
        exporters = ExporterMap()
        for pid, local, prove in claims:
            exporters.observe(key, pid, local, prove)
        found = exporters.get(key)
        assert (found.pid if found else None) == expected, claims
    assert ref is sending_process


def _ref(pid: int) -> Any:
    from tokentop.processes.finding import ProcessRef

    return ProcessRef(pid, 1.0, (), "", "exporter", True)


def test_a_span_from_another_host_never_maps() -> None:
    """Spans naming another host (and this test's own pid) count, but map to nothing."""
    exporters = ExporterMap()
    with rig(exporters=exporters) as r:
        send(r, body(chat(1, n=1, session__id="far"), host__name="box1", process__pid=os.getpid()))
        r.wait_tokens("support-bot", "far@box1", counted([1]).total)
        send(r, body(chat(2, n=1, session__id="near"), host__name=LOCAL, process__pid=os.getpid()))
        r.wait_tokens("support-bot", "near", counted([1]).total)
    assert exporters.get(SessionKey("support-bot", "far@box1")) is None
    assert exporters.get(SessionKey("support-bot", "near")) is None  # tokentop's own pid


def test_a_session_with_a_transcript_here_never_maps_to_an_exporter() -> None:
    """Spans naming a local transcript's session (agent and id) are kept apart from it, and
    the session is never mapped to the process that sent them, even a proven one."""
    exporters = ExporterMap()
    exporters.observe(SessionKey("claude", "s1"), 42, True, lambda pid, first: _ref(pid))
    assert exporters.get(SessionKey("claude", "s1")) is not None
    exporters.drop(SessionKey("claude", "s1"))
    assert exporters.get(SessionKey("claude", "s1")) is None
    exporters.observe(SessionKey("claude", "s1"), 42, True, lambda pid, first: _ref(pid))
    assert exporters.get(SessionKey("claude", "s1")) is None
