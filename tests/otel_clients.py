"""Real OpenTelemetry SDK clients shaped like the agents' exporters, for the receiver tests.

Each helper builds the SDK's OTLP/HTTP exporter pointed at a tokentop receiver and emits
records with the names and attributes the agents use (see tokentop.telemetry.agents).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource


def log_provider(
    url: str, service: str, host: str = "", token: str = "", gzip: bool = False
) -> LoggerProvider:
    attrs = {"service.name": service, **({"host.name": host} if host else {})}
    exporter = OTLPLogExporter(
        endpoint=f"{url}/v1/logs",
        headers={"Authorization": f"Bearer {token}"} if token else None,
        compression=Compression.Gzip if gzip else Compression.NoCompression,
        timeout=10,
    )
    provider = LoggerProvider(resource=Resource.create(attrs))
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    return provider


def claude_api_request(
    provider: LoggerProvider, session_id: str, request_id: str, tokens: Mapping[str, int],
    cost: float, model: str = "claude-sonnet-4-5-20250929", user: str = "ana@example.com",
) -> None:  # fmt: skip
    """A `claude_code.api_request` event: the body is the event name, numbers are strings."""
    attrs: dict[str, Any] = {
        "event.name": "api_request",
        "event.timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "session.id": session_id,
        "organization.id": "org-1",
        "user.email": user,
        "user.account_uuid": "acct-1",
        "terminal.type": "xterm-256color",
        "model": model,
        "cost_usd": str(cost),
        "duration_ms": "1234",
        "input_tokens": str(tokens["input"]),
        "output_tokens": str(tokens["output"]),
        "cache_read_tokens": str(tokens.get("cache_read", 0)),
        "cache_creation_tokens": str(tokens.get("cache_creation", 0)),
        "request_id": request_id,
    }
    logger = provider.get_logger("com.anthropic.claude_code.events")
    logger.emit(body="claude_code.api_request", attributes=attrs, timestamp=time.time_ns())


def codex_sse_event(
    provider: LoggerProvider, conversation: str, kind: str, counts: Mapping[str, int] | None
) -> None:
    """A `codex.sse_event`; only `response.completed` carries the token counts."""
    attrs: dict[str, Any] = {
        "event.name": "codex.sse_event",
        "event.timestamp": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime()),
        "event.kind": kind,
        "conversation.id": conversation,
        "app.version": "0.58.0",
        "auth_mode": "ApiKey",
        "user.account_id": "acct-codex",
        "terminal.type": "xterm",
        "model": "gpt-5-codex",
        "slug": "gpt-5-codex",
        "duration_ms": "12",
    }
    if counts is not None:
        attrs.update({
            "input_token_count": str(counts["input"]),
            "output_token_count": str(counts["output"]),
            "cached_token_count": counts["cached"],
            "reasoning_token_count": counts["reasoning"],
            "tool_token_count": "0",
        })  # fmt: skip
    logger = provider.get_logger("codex_otel")
    logger.emit(attributes=attrs, timestamp=time.time_ns())


def meter_provider(
    url: str, service: str, host: str, delta: bool
) -> tuple[MeterProvider, PeriodicExportingMetricReader]:
    temporality = AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
    exporter = OTLPMetricExporter(
        endpoint=f"{url}/v1/metrics", preferred_temporality={Counter: temporality}, timeout=10
    )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    resource = Resource.create({"service.name": service, "host.name": host})
    return MeterProvider(resource=resource, metric_readers=[reader]), reader
