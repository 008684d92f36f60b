"""Fleet telemetry: an OTLP/HTTP receiver for the agents' own OpenTelemetry, the sessions it
reports in the same ledger as transcripts, and Prometheus exposition (docs/fleet.md).

Nothing here imports textual or rich; `opentelemetry-proto` and `prometheus_client` are
imported only by the modules that need them, so the rest of tokentop starts without them.
"""
