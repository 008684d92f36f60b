"""OTLP/HTTP request bodies -> flat, bounded records; the protocol is opentelemetry-proto's.

Bodies are protobuf (`application/x-protobuf`) or OTLP/JSON (`application/json`), possibly
gzip. Both are parsed by the generated classes; the JSON form differs from protobuf's own
JSON mapping in one place, trace and span ids, which OTLP writes as hex and protobuf reads
as base64, so they are converted before parsing. Every string that comes out is cut to
`MAX_TEXT` characters: it is a stranger's text, used only as a label or a key.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterator
from typing import Any

import msgspec
from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

MAX_TEXT = 256
"""Longest attribute string kept; longer ones are cut (ids, models and emails are shorter)."""
_CONTROLS = {c: "\ufffd" for c in (*range(0x20), 0x7F)}
"""C0 controls and DEL; a NUL would corrupt the ledger's packed keys (it separates them)."""
MAX_ATTRIBUTES = 128
"""Attributes read per record or resource; the agents send a few dozen at most."""
Scalar = str | int | float | bool
Attrs = dict[str, Scalar]

MAX_MESSAGES = 200_000
"""Nested messages (records, attributes, values, …) in one request, counted before any is
made: 16 KiB of gzip can hold 8 M empty records, a gigabyte once parsed."""
MAX_RECORDS = 10_000
"""Log records, data points or spans in one request; the SDKs send batches of 512."""

DELTA = 1
CUMULATIVE = 2
_TEMPORALITY = {DELTA: "delta", CUMULATIVE: "cumulative"}


class BadRequest(Exception):
    """A body that is not OTLP: the receiver answers 400 (or 413 when `too_large`)."""

    def __init__(self, message: str, too_large: bool = False) -> None:
        super().__init__(message)
        self.too_large = too_large


class LogItem(msgspec.Struct, frozen=True):
    """One log record (an agent event) with its resource's attributes."""

    name: str
    """The event name: the record's `event_name`, else attribute `event.name`, else the body."""
    time: float
    attrs: Attrs
    resource: Attrs


class PointItem(msgspec.Struct, frozen=True):
    """One data point of a Sum metric (the agents' counters)."""

    metric: str
    temporality: str
    """"delta" or "cumulative"."""
    start: int
    """start_time_unix_nano: a cumulative series restarts when it changes."""
    time: int
    value: float
    attrs: Attrs
    resource: Attrs


def gunzip(body: bytes, limit: int, deflate: bool = False) -> bytes:
    """Decompress at most `limit` bytes; a bigger result (a gzip bomb) is refused unread."""
    inflater = zlib.decompressobj(zlib.MAX_WBITS if deflate else 16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BadRequest(f"bad compressed body: {exc}") from None
    if len(out) > limit or inflater.unconsumed_tail:
        raise BadRequest(f"decompressed body over {limit} bytes", too_large=True)
    if not inflater.eof:
        raise BadRequest("truncated compressed body")
    return out


def parse_logs(body: bytes, json: bool) -> ExportLogsServiceRequest:
    request = ExportLogsServiceRequest()
    _parse(body, request, "logs", json)
    records = sum(len(sl.log_records) for rl in request.resource_logs for sl in rl.scope_logs)
    _check_records(records)
    return request


def parse_metrics(body: bytes, json: bool) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    _parse(body, request, "metrics", json)
    _check_records(sum(
        len(getattr(m, m.WhichOneof("data") or "sum").data_points)
        for rm in request.resource_metrics for sm in rm.scope_metrics for m in sm.metrics
    ))  # fmt: skip
    return request


def parse_traces(body: bytes, json: bool) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    _parse(body, request, "traces", json)
    _check_records(sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans))
    return request


def _check_records(n: int) -> None:
    if n > MAX_RECORDS:
        raise BadRequest(f"{n} records in one request, over {MAX_RECORDS}", too_large=True)


def count_nodes(body: bytes, message: Message, json: bool, limit: int = MAX_MESSAGES) -> int:
    """How many messages (JSON: objects and arrays) parsing `body` would make, counted
    without making any; a BadRequest (too large) as soon as it passes `limit`."""
    if json:
        n = body.count(b"{") + body.count(b"[")  # braces inside strings only add: safe side
    else:
        n = _count_messages(body, message.DESCRIPTOR, limit)
    if n > limit:
        raise BadRequest(f"over {limit} nested messages in one request", too_large=True)
    return n


def _count_messages(body: bytes, root: Any, limit: int) -> int:
    """Walk the protobuf wire format, descending only into fields that hold messages."""
    count = 0
    stack = [(root, 0, len(body))]
    while stack:
        descriptor, pos, end = stack.pop()
        subs = _submessages(descriptor)
        while pos < end:
            key, pos = _varint(body, pos)
            wire = key & 7
            if wire == 2:
                size, pos = _varint(body, pos)
                sub = subs.get(key >> 3)
                if sub is not None:
                    count += 1
                    if count > limit:
                        return count
                    stack.append((sub, pos, pos + size))
                pos += size
            elif wire == 0:
                _, pos = _varint(body, pos)
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            else:
                raise BadRequest("not an OTLP request: bad protobuf wire type")
        if pos != end:
            raise BadRequest("not an OTLP request: truncated protobuf field")
    return count


def _varint(body: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while pos < len(body) and shift < 70:
        byte = body[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
    raise BadRequest("not an OTLP request: bad protobuf varint")


_SUBMESSAGES: dict[str, dict[int, Any]] = {}


def _submessages(descriptor: Any) -> dict[int, Any]:
    found = _SUBMESSAGES.get(descriptor.full_name)
    if found is None:
        found = {
            f.number: f.message_type
            for f in descriptor.fields
            if f.type == FieldDescriptor.TYPE_MESSAGE
        }
        _SUBMESSAGES[descriptor.full_name] = found
    return found


def _parse(body: bytes, message: Message, kind: str, json: bool) -> None:
    """Fill `message` from a protobuf or OTLP/JSON body; anything else is a BadRequest."""
    count_nodes(body, message, json)
    try:
        if json:
            json_format.ParseDict(hex_ids(msgspec.json.decode(body)), message)
        else:
            message.ParseFromString(body)
    except (DecodeError, json_format.ParseError, msgspec.DecodeError) as exc:
        raise BadRequest(f"not an OTLP {kind} request: {_short(exc)}") from None
    except (RecursionError, ValueError, TypeError, AttributeError) as exc:
        raise BadRequest(f"not an OTLP {kind} request: {type(exc).__name__}") from None


def hex_ids(doc: Any) -> Any:
    """OTLP/JSON writes traceId/spanId as hex; protobuf's JSON reader expects base64. They
    sit on log records, metric points' exemplars, and spans (with `parentSpanId`, links)."""
    if not isinstance(doc, dict):
        return doc
    for rl in _dicts(doc.get("resourceLogs")):
        for sl in _dicts(rl.get("scopeLogs")):
            for rec in _dicts(sl.get("logRecords")):
                _convert_ids(rec)
    for rm in _dicts(doc.get("resourceMetrics")):
        for sm in _dicts(rm.get("scopeMetrics")):
            for metric in _dicts(sm.get("metrics")):
                for data in (v for v in metric.values() if isinstance(v, dict)):
                    for point in _dicts(data.get("dataPoints")):
                        for exemplar in _dicts(point.get("exemplars")):
                            _convert_ids(exemplar)
    for rs in _dicts(doc.get("resourceSpans")):
        for ss in _dicts(rs.get("scopeSpans")):
            for span in _dicts(ss.get("spans")):
                _convert_ids(span)
                for link in _dicts(span.get("links")):
                    _convert_ids(link)
    return doc


def _convert_ids(item: dict[str, Any]) -> None:
    for field in ("traceId", "spanId", "parentSpanId"):
        value = item.get(field)
        if isinstance(value, str) and value:
            item[field] = _hex_to_b64(value)


def _hex_to_b64(value: str) -> str:
    try:
        return base64.b64encode(bytes.fromhex(value)).decode()
    except ValueError:
        raise BadRequest("traceId/spanId is not hex") from None


def _dicts(value: object) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__


def log_items(request: ExportLogsServiceRequest) -> Iterator[LogItem]:
    for rl in request.resource_logs:
        resource = attributes(rl.resource.attributes)
        for sl in rl.scope_logs:
            for rec in sl.log_records:
                attrs = attributes(rec.attributes)
                name = event_name(rec.event_name, _text(attrs.get("event.name")), rec.body)
                stamp = rec.time_unix_nano or rec.observed_time_unix_nano
                yield LogItem(clean(name), stamp / 1e9, attrs, resource)


def point_items(request: ExportMetricsServiceRequest) -> Iterator[PointItem]:
    """Points of Sum metrics; gauges and histograms carry no token counts."""
    for rm in request.resource_metrics:
        resource = attributes(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.WhichOneof("data") != "sum":
                    continue
                temporality = _TEMPORALITY.get(metric.sum.aggregation_temporality)
                if temporality is None:
                    continue
                for p in metric.sum.data_points:
                    value = p.as_int if p.WhichOneof("value") == "as_int" else p.as_double
                    yield PointItem(
                        clean(metric.name), temporality, p.start_time_unix_nano,
                        p.time_unix_nano, float(value), attributes(p.attributes), resource,
                    )  # fmt: skip


def attributes(kvs: Any) -> Attrs:
    """Scalar attributes, bounded in number and length; arrays and maps are skipped."""
    out: Attrs = {}
    for kv in kvs[:MAX_ATTRIBUTES]:
        value = scalar(kv.value) if isinstance(kv, KeyValue) else None
        if value is not None:
            out[clean(kv.key)] = value
    return out


def clean(text: str) -> str:
    """A stranger's string, bounded, with control characters replaced."""
    text = text[:MAX_TEXT]
    return text if text.isprintable() else text.translate(_CONTROLS)


def scalar(v: AnyValue) -> Scalar | None:
    which = v.WhichOneof("value")
    if which == "string_value":
        return clean(v.string_value)
    if which in ("int_value", "double_value", "bool_value"):
        value: Scalar = getattr(v, which)
        return value
    return None


def event_name(field: str, attr: str, body: AnyValue) -> str:
    """The full event name: Claude Code puts it in the body (its `event.name` attribute is
    the short form), Codex and Gemini CLI in the `event.name` attribute."""
    if field:
        return field
    if "." in attr:
        return attr
    text = body_text(body)
    return text if "." in text and " " not in text else attr or text


def body_text(body: AnyValue) -> str:
    return clean(body.string_value) if body.WhichOneof("value") == "string_value" else ""


def _text(value: Scalar | None) -> str:
    return value if isinstance(value, str) else ""
