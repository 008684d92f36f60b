"""A support bot on the official OpenAI SDK, traced by OpenLLMetry, as docs/custom-agents.md
sets it up: every setting comes from the standard OTEL_* environment variables.

    python openai_app.py BASE_URL CALLS [SESSION]
    CALLS chat completions in one traced run (0: forever, a runaway loop), named SESSION
"""

import sys

from openai import OpenAI
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.openai import OpenAIInstrumentor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor


class SessionId(SpanProcessor):
    """Names the conversation on every span, as docs/custom-agents.md shows."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id

    def on_start(self, span, parent_context=None):  # type: ignore[no-untyped-def]
        span.set_attribute("session.id", self.session_id)


provider = TracerProvider(resource=Resource.create())
if len(sys.argv) > 3:
    provider.add_span_processor(SessionId(sys.argv[3]))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
trace.set_tracer_provider(provider)
OpenAIInstrumentor().instrument()

base_url, calls = sys.argv[1], int(sys.argv[2])
client = OpenAI(base_url=base_url, api_key="sk-test")
tracer = trace.get_tracer("support-bot")
with tracer.start_as_current_span("answer-ticket"):
    n = 0
    while calls == 0 or n < calls:
        n += 1
        client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"draft reply {n}"}]
        )
provider.shutdown()  # flushes the last batch
print("done", flush=True)
