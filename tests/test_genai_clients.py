"""Real GenAI apps traced by OpenLLMetry, exporting OTLP/HTTP to tokentop on loopback.

The apps (tests/genai_apps/) are set up as docs/custom-agents.md says, from the standard
OTEL_* variables: the official `openai` SDK with `opentelemetry-instrumentation-openai`,
and a LangGraph graph whose tool loop calls `langchain-openai`, with the LangChain (and
OpenAI) instrumentations. They call a small OpenAI-compatible upstream on 127.0.0.1 that
reports known usage: call n has prompt 1000+n (600 cached) and completion 50+n (10 of them
reasoning). Session totals must equal what the upstream reported, with no double count
from the spans around the calls.

The SDKs and instrumentations are not in the `test` extra (they pull ~150 MB): the fixture
installs the pinned versions once into a private venv under the user cache dir
(`tests/private_venv.py`, as the LiteLLM test does), or uses `$TOKENTOP_GENAI_PYTHON`.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from openai_upstream import Message, Upstream, reported, serving
from private_venv import private_python
from proc_helpers import wait_until
from telemetry_helpers import Rig, rig
from tokentop.config import parse_config
from tokentop.model import SessionSnapshot
from tokentop.policy.detectors import loop_finding

GENAI_SPECS = [
    "openai==3.63.0",
    "opentelemetry-sdk==1.45.2",
    "opentelemetry-exporter-otlp-proto-http==1.45.2",
    "opentelemetry-instrumentation-openai==0.62.4",
    "opentelemetry-instrumentation-langchain==0.62.4",
    "langchain-openai==1.8.1",
    "langgraph==1.2.24",
]
APPS = Path(__file__).parent / "genai_apps"
TOOL_ROUNDS = 3
"""The upstream asks for the same tool call this many times, then answers."""


def answer(n: int, body: dict[str, Any]) -> Message:
    """A tool call while the request offers tools and has fewer results than TOOL_ROUNDS."""
    tools = body.get("tools") or []
    results = sum(1 for m in body.get("messages", []) if m.get("role") == "tool")
    if not tools or results >= TOOL_ROUNDS:
        return {"role": "assistant", "content": "drafted"}
    name = tools[0]["function"]["name"]
    call = {"name": name, "arguments": json.dumps({"query": "quarterly churn"})}
    return {"role": "assistant", "content": None, "tool_calls": [
        {"id": f"call_{n}", "type": "function", "function": call},
    ]}  # fmt: skip


@pytest.fixture(scope="module")
def genai_python() -> Path:
    return private_python("genai", GENAI_SPECS, "TOKENTOP_GENAI_PYTHON")


@pytest.fixture
def upstream() -> Iterator[str]:
    with serving(answer, model="gpt-4o-mini-2024-07-18") as port:
        yield f"http://127.0.0.1:{port}/v1"


def app_env(otlp: str, service: str, **extra: str) -> dict[str, str]:
    """The app's environment: docs/custom-agents.md's variables, nothing leaving loopback."""
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(
        NO_PROXY="127.0.0.1,localhost",
        OTEL_SERVICE_NAME=service,
        OTEL_EXPORTER_OTLP_ENDPOINT=otlp,
        OTEL_EXPORTER_OTLP_PROTOCOL="http/protobuf",
        OTEL_EXPERIMENTAL_RESOURCE_DETECTORS="host,process",
        OTEL_BSP_SCHEDULE_DELAY="100",  # ms between batches (the SDK's default is 5000)
        **extra,
    )
    return env


def run_app(python: Path, script: str, env: dict[str, str], *args: str) -> None:
    done = subprocess.run(
        [str(python), str(APPS / script), *args],
        env=env, capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert done.returncode == 0 and "done" in done.stdout, done.stderr[-3000:]


def only_session(r: Rig, agent: str) -> SessionSnapshot:
    found = [s for s in r.engine.snapshot().sessions if s.key.agent == agent]
    assert len(found) == 1, [s.key for s in r.engine.snapshot().sessions]
    return found[0]


def settled(r: Rig, agent: str, responses: int) -> SessionSnapshot:
    def ready() -> bool:
        found = [s for s in r.engine.snapshot().sessions if s.key.agent == agent]
        return bool(found) and found[0].responses >= responses

    assert wait_until(ready, timeout=30), f"{r.engine.snapshot().sessions}; {r.hub.stats}"
    time.sleep(0.5)  # anything more (a double count) would have arrived by now
    return only_session(r, agent)


def test_openai_sdk_app_totals_equal_the_upstream(genai_python: Path, upstream: str) -> None:
    with rig(local=socket.gethostname()) as r:
        env = app_env(r.url, "support-bot")
        run_app(genai_python, "openai_app.py", env, upstream, "4")
        session = settled(r, "support-bot", 4)
    assert Upstream.calls == 4
    assert session.tokens == reported(range(1, 5))
    assert session.responses == 4 and not session.host
    assert session.cost_usd == pytest.approx(session.tokens.total * 1e-6)
    assert [m.model for m in session.models] == ["gpt-4o-mini-2024-07-18"]
    assert r.hub.stats.bad_records == 0


def test_langgraph_tool_loop_totals_and_loop_detection(genai_python: Path, upstream: str) -> None:
    """Both instrumentations on, as `opentelemetry-instrument` would: the LangChain span of
    each call and any OpenAI span inside it describe one request."""
    with rig(local=socket.gethostname()) as r:
        env = app_env(r.url, "research-agent", TOKENTOP_ALSO_OPENAI="1")
        run_app(genai_python, "langgraph_app.py", env, upstream, "memo-7")
        session = settled(r, "research-agent", TOOL_ROUNDS + 1)
    calls = range(1, TOOL_ROUNDS + 2)
    assert Upstream.calls == len(calls)
    assert session.key.session_id == "memo-7"  # the LangGraph thread
    want = reported(calls)
    assert session.tokens.total == want.total and session.responses == len(calls)
    assert (session.tokens.input, session.tokens.cache_read) == (want.input, want.cache_read)
    searches = [t for t in session.recent_tools if t.name == "search_sources"]
    assert len(searches) == TOOL_ROUNDS and len({t.input_hash for t in searches}) == 1
    config = parse_config('[policy.loop]\nrepeats = 3\naction = "kill"\n')
    found = loop_finding(session, config, time.time())
    assert found is not None and "search_sources" in found.reason
